"""Test helpers for distributed crawls and crawls of many sites: crawl workers as background processes
(started, waited for and checked together), their settings over one Redis, sandbox sites of their own
capacity and latency on loopback addresses, dead sites, and the sites' request logs read back (requests
per second, which worker sent what). The ``redis_server`` fixture is in tests/conftest.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess, start_sandbox

from .conftest import LOOPBACK, REPO
from .servers import RedisServer as RedisServer  # the redis_server fixture's type, for the test modules
from .servers import free_port, stop_process
from .servers import start_redis as start_redis


def new_prefix() -> str:
    """A Redis key prefix of the test's own (the tests of a session share one redis-server)."""
    return f"t{uuid.uuid4().hex[:8]}"


def redis_settings(
    redis_server: RedisServer, prefix: str, store: Path, cap: float, *layers: dict[str, Any]
) -> dict[str, Any]:
    """The settings of a worker of a crawl shared through ``redis_server`` under ``prefix``, writing to
    ``store``, at most ``cap`` requests a second to a site; then ``layers``, merged as
    :func:`tests.crawlers.merge_settings` merges them."""
    return merge_settings(
        {
            "IMAGECRAWL_REDIS_URL": redis_server.url,
            "IMAGECRAWL_REDIS_PREFIX": prefix,
            "IMAGECRAWL_STORE": store,
            "IMAGECRAWL_MAX_RATE_PER_SITE": cap,
        },
        *layers,
    )


#: the pacing of crawls of sites that push back (429 + Retry-After) far below the cap: four requests at a
#: time a site, a start at 2/s, a floor of 0.2/s, a latency margin of 5 s, leases of 10 s
PUSHBACK_PACING: dict[str, Any] = {
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 2,
    "IMAGECRAWL_TUNING": {
        "redis_lease_seconds": 10,
        "pacing_min_rate_per_second": 0.2,
        "pacing_latency_margin_seconds": 5,
    },
}


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stats_file: Path

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.stats_file.read_text())) if self.stats_file.exists() else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_worker(
    name: str,
    spider: str,
    directory: Path,
    *,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> WorkerProcess:
    """``scrapy crawl SPIDER`` in the background as worker ``name`` (its UA says so: ``+name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stats_file = directory / f"{name}.stats.json"
    log = directory / f"{name}.log"
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in (args or {}).items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    merged = merge_settings(
        LOOPBACK,
        {"IMAGECRAWL_WORKER_ID": name, "IMAGECRAWL_CONTACT": name, "IMAGECRAWL_STATS_FILE": str(stats_file)},
        settings or {},
    )
    for key, value in merged.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    with log.open("wb") as fh:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    return WorkerProcess(name, process, log, stats_file)


def start_workers(
    names: Iterable[str],
    spider: str,
    directory: Path,
    *,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[WorkerProcess]:
    """:func:`start_worker` for each of ``names``, one after the other, with the same arguments."""
    return [start_worker(n, spider, directory, args=args, settings=settings) for n in names]


def wait_workers(workers: list[WorkerProcess], timeout: float) -> None:
    """Wait for every worker to end, ``timeout`` seconds for them all; when one does not, stop them all
    and fail with its log."""
    deadline = time.monotonic() + timeout
    for w in workers:
        try:
            w.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except Exception:
            for other in workers:
                stop_process(other.process)
            raise AssertionError(f"worker {w.name} did not finish:\n{w.log_text()[-4000:]}") from None


def worker_stats(w: WorkerProcess) -> dict[str, Any]:
    """A finished worker's final stats, after checking it exited 0 and logged no traceback."""
    text = w.log_text()
    assert w.process.returncode == 0, f"{w.name} exited {w.process.returncode}:\n{text[-4000:]}"
    assert "Traceback" not in text, text[-6000:]
    return w.stats()


def worker_of(request: dict[str, Any]) -> str:
    """The worker that sent a request of a site's log (its user agent ends ``+name)``)."""
    return str(request["ua"]).rsplit("+", 1)[-1].rstrip(")")


def requests_by_worker(requests: Iterable[dict[str, Any]]) -> Counter[str]:
    """How many of ``requests`` (a site's log) each worker sent."""
    return Counter(worker_of(r) for r in requests)


# --- sites -----------------------------------------------------------------------------------------


class SiteSpec(NamedTuple):
    """A sandbox site of its own: its loopback address, its images (``items`` of the catalog of ``seed``),
    its hidden capacity (a token bucket of ``capacity`` req/s and ``burst``, answering 429 with a
    Retry-After of ``retry_after`` s) and its latency in seconds."""

    host: str
    items: int
    seed: int
    capacity: float
    burst: float
    retry_after: int
    latency: float


@contextmanager
def capacity_sites(tmp_path: Path, specs: Sequence[SiteSpec]) -> Iterator[list[SandboxProcess]]:
    """The sites of ``specs`` running, the n-th logging its requests to ``tmp_path/site{n}.jsonl``; all
    stopped on the way out."""
    with ExitStack() as stack:
        out = []
        for n, spec in enumerate(specs):
            sb = start_sandbox(
                items=spec.items,
                seed=spec.seed,
                log_path=tmp_path / f"site{n}.jsonl",
                extra_args=[
                    "--host",
                    spec.host,
                    "--capacity",
                    str(spec.capacity),
                    "--capacity-burst",
                    str(spec.burst),
                    "--retry-after",
                    str(spec.retry_after),
                    "--latency",
                    str(spec.latency),
                ],
            )
            stack.callback(sb.stop)
            out.append(sb)
        yield out


def image_urls(site: SandboxProcess, spec: SiteSpec) -> list[str]:
    """The URLs of the site's civitai images, in catalog order."""
    catalog = build_catalog(spec.items, spec.seed)
    return [site.url(e.image_path) for e in catalog.entries("civitai")]


def write_listing(path: Path, rows: Iterable[str]) -> Path:
    """A URL list for the ``urls`` spider, one row a line."""
    path.write_text("".join(f"{u}\n" for u in rows))
    return path


def site_logs(sites: Sequence[SandboxProcess], urls: Sequence[Sequence[str]]) -> list[list[dict[str, Any]]]:
    """Each site's request log, once it holds at least as many requests as the site has URLs."""
    return [sb.wait_for_requests(len(u), timeout=10) for sb, u in zip(sites, urls, strict=True)]


def check_fetched_once(log: list[dict[str, Any]], site_urls: Sequence[str]) -> None:
    """The site's log shows each of its image URLs fetched, and once (a 429 is asked again, nothing else)."""
    fetched = Counter(r["path"] for r in log if "/images/" in str(r["path"]) and int(r["status"]) != 429)
    assert sorted(fetched) == sorted(urlsplit(u).path for u in site_urls), fetched
    assert [p for p, n in fetched.items() if n > 1] == []


class SilentServer:
    """Accepts TCP connections and never answers (a hung site); records when each came."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.time())
            self._held.append(conn)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self.sock.close()


@dataclass
class DeadSites:
    """A site that refuses connections (nothing listens at ``refused``) and one that accepts them and
    never answers (``hung``, served by ``silent``): base URLs."""

    refused: str
    hung: str
    silent: SilentServer


@contextmanager
def dead_sites(refused_host: str, hung_host: str) -> Iterator[DeadSites]:
    """The two dead sites on their loopback addresses; the silent server closed on the way out."""
    silent = SilentServer(hung_host)
    try:
        yield DeadSites(f"http://{refused_host}:{free_port()}", f"http://{hung_host}:{silent.port}", silent)
    finally:
        silent.close()


def image_rows(base: str, count: int) -> list[str]:
    """``count`` image URLs of the site at ``base`` (``/img/<i>.png``)."""
    return [f"{base}/img/{i}.png" for i in range(count)]


# --- reading the logs ------------------------------------------------------------------------------


def per_second(times: list[float]) -> tuple[dict[int, int], int]:
    """Requests per calendar second, and the most requests in any sliding one-second window."""
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t)] = buckets.get(int(t), 0) + 1
    ordered = sorted(times)
    most, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= 1.0:
            lo += 1
        most = max(most, hi - lo + 1)
    return buckets, most


def check_gallery_store(store: Path, items: int, seed: int) -> list[str]:
    """The store holds each gallery image group (an original, its exact and near copies, see
    tests/expect.py) exactly once, and no image twice. Returns the shard file names."""
    from tests.sandbox.catalog import build_catalog

    from .conftest import read_store
    from .expect import expected_rows

    catalog = build_catalog(items, seed)
    expected = expected_rows(catalog, catalog.entries("gallery"), lambda e: f"gallery:{e.id}")
    shas = read_store(store, columns=["image_sha256"]).column("image_sha256").to_pylist()
    twice = sorted(sha[:12] for sha, n in Counter(shas).items() if n > 1)
    assert not twice, f"an image was written twice: {twice}"
    groups = [expected.sha_to_group.get(sha) for sha in shas]
    assert None not in groups, "the store holds bytes the gallery never served"
    kept = Counter(g for g in groups if g)
    missing = sorted(g for g in expected.groups if g not in kept)
    extra = {g: [e.id for e in expected.groups[g]] for g, n in kept.items() if n > 1}
    assert not missing and not extra, (
        f"gallery image groups missing: {missing}; kept twice (group: its entries): {extra}"
    )
    return [p.name for p in store.rglob("*.parquet")]
