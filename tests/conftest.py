"""Shared test infrastructure: the two lanes (fast unit tests, ``e2e`` tests against real servers), the
server fixtures (the sandbox site, moto's S3 server, redis-server, all on loopback; see tests/servers.py)
and a crawl runner that runs ``scrapy crawl`` exactly as a user does, in a subprocess.

A test is ``e2e`` when it requests one of :data:`E2E_FIXTURES` (directly or through another fixture) or
when its module says ``pytestmark = pytest.mark.e2e``. Any other test runs in the fast lane, where
starting a process or listening on a socket fails the test (see :func:`_fast_lane_guard`).
docs/testing.md has the whole story."""

from __future__ import annotations

import json
import multiprocessing.process
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.testing import SandboxProcess

from .servers import MotoS3, RedisServer, SandboxFactory, start_moto, start_redis, stop_process
from .servers import free_port as free_port  # imported from here by older test modules

REPO = Path(__file__).resolve().parents[1]

#: Pacing for test crawls of the sandbox: the site is ours, so start at a loopback-sized cap
#: (the pacing tests set their own caps).
PACING_LOOPBACK = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": "500",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "16",
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "500",
    "IMAGECRAWL_TUNING": {
        "retry_backoff_seconds": 0.2,
        "ban_cooldown_seconds": 1,
        # a shared 2-core box makes loopback latency noise, not a signal of the site's load
        "pacing_latency_margin_seconds": 5,
        # hostile-server tests time out on purpose: do not slow the sandbox down below loopback speed
        "pacing_min_rate_per_second": 50,
    },
}

#: The settings every test crawl of a loopback server uses (politeness caps are for other sites).
LOOPBACK = {
    "DOWNLOAD_DELAY": "0",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
    "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LOG_LEVEL": "INFO",
    **PACING_LOOPBACK,
}


@dataclass
class CrawlResult:
    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, Any]


def run_crawl(
    spider: str,
    *,
    store: str | Path,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    check: bool = True,
) -> CrawlResult:
    """``scrapy crawl SPIDER -a k=v -s k=v`` from the repo root; returns the final stats as a dict."""
    stats_file = Path(tempfile.gettempdir()) / f"imagecrawl-stats-{spider}-{os.getpid()}-{time.time_ns()}.json"
    cmd: list[str] = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in (args or {}).items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    merged = merge_settings(
        LOOPBACK, {"IMAGECRAWL_STORE": str(store), "IMAGECRAWL_STATS_FILE": str(stats_file)}, settings or {}
    )
    for key, value in merged.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired as exc:  # what the crawl was doing when it ran out of time
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(f"crawl {spider} still running after {timeout:g} s:\n{err[-6000:]}") from None
    stats: dict[str, Any] = {}
    if stats_file.exists():
        stats = json.loads(stats_file.read_text())
        stats_file.unlink()
    result = CrawlResult(proc.returncode, proc.stdout, proc.stderr, stats)
    if check and proc.returncode != 0:
        raise AssertionError(f"crawl {spider} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    if check and "Traceback" in proc.stderr:
        raise AssertionError(f"crawl {spider} logged a traceback:\n{proc.stderr[-6000:]}")
    return result


def read_store(store: str | Path, columns: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Any:
    """All committed rows of a store as a pyarrow Table (read as ``imagecrawl inspect`` reads it)."""
    from imagecrawl.inspect import dataset_for

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return dataset_for(str(store)).to_table(columns=list(columns) if columns else None)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- lanes -----------------------------------------------------------------------------------------

#: Fixtures that start a server process: a test that requests any of them (or a fixture built on them)
#: is marked ``e2e``.
E2E_FIXTURES = frozenset({"sandbox_site", "sandbox_factory", "moto_s3", "redis_server"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside ``e2e``, starting a process (subprocess, multiprocessing, fork) or listening on a socket
    fails the test: the fast lane stays fast, and a test that needs a server says so."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    nodeid = request.node.nodeid

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> NoReturn:
            pytest.fail(
                f"{nodeid} {what} but is not marked e2e: request a server fixture, or mark the test "
                "(@pytest.mark.e2e) or its module (pytestmark = pytest.mark.e2e); see docs/testing.md"
            )

        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a subprocess"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a process"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse("starts a process"))
    monkeypatch.setattr(socket.socket, "listen", refuse("listens on a socket"))


# --- servers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """The sandbox site the e2e modules share: 40 items, seed 7, no request log (tests that judge by
    the server's log start their own with ``sandbox_factory``)."""
    factory = SandboxFactory(tmp_path_factory)
    yield factory.start(items=40, seed=7, log=False)
    factory.stop_all()


@pytest.fixture(scope="module")
def sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxFactory]:
    """Sandbox sites of a module's own (other items/seed, a request log, flags such as ``--hostile``):
    ``sandbox_factory.start(items=..., seed=..., extra_args=[...])``. All stop after the module."""
    factory = SandboxFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server; each test creates the buckets it uses (names unique to the test)."""
    server = start_moto()
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test keeps to a key prefix of its own."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
