"""Shared fixtures: real servers on loopback (the sandbox site, moto's S3 server) and a crawl runner
that runs ``scrapy crawl`` exactly as a user does, in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Pacing for test crawls of the sandbox: the site is ours, so start at a loopback-sized cap
#: (the pacing tests set their own caps).
PACING_LOOPBACK = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": "500",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "16",
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "500",
    "IMAGECRAWL_RETRY_BACKOFF_SECONDS": "0.2",
    "IMAGECRAWL_BAN_COOLDOWN_SECONDS": "1",
    # a shared 2-core box makes loopback latency noise, not a signal of the site's load
    "IMAGECRAWL_PACING_LATENCY_MARGIN_SECONDS": "5",
    # hostile-server tests time out on purpose: do not slow the sandbox down below loopback speed
    "IMAGECRAWL_PACING_MIN_RATE_PER_SECOND": "50",
}

#: The settings every test crawl of a loopback server uses (politeness caps are for other sites).
LOOPBACK = {
    "DOWNLOAD_DELAY": "0",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
    "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LOG_LEVEL": "INFO",
    **PACING_LOOPBACK,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        cmd += ["-a", f"{key}={value}"]
    merged = {
        **LOOPBACK,
        "IMAGECRAWL_STORE": str(store),
        "IMAGECRAWL_STATS_FILE": str(stats_file),
        **(settings or {}),
    }
    for key, value in merged.items():
        cmd += ["-s", f"{key}={value}"]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
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


@dataclass
class MotoS3:
    endpoint: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION_NAME": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def settings(self) -> dict[str, str]:
        env = self.env
        return {
            k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION_NAME")
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def start_moto(port: int | None = None) -> MotoS3:
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).read()
            return MotoS3(endpoint, process, port)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("moto_server exited at start") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start within 30 s")


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    server = start_moto()
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def sandbox_site() -> Iterator[Any]:
    from imagecrawl.sandbox.testing import start_sandbox

    site = start_sandbox(items=40, seed=7)
    yield site
    site.stop()


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
