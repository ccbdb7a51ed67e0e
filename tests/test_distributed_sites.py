"""Two workers, one Redis, sites of different capacities: the shared frontier keeps a queue per site and
takes a request only from a site whose shared gate is open, so a slow site at the head of the list does
not hold the others back, and each site's cap holds for both workers together.

Each worker is ``scrapy crawl urls`` in its own process over the same list (the shared dupefilter keeps
one of each request); the sandboxes' own request logs are the judge.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.sandbox.catalog import build_catalog
from tests.sandbox.misbehave import max_rate_per_second, requests_inside_windows
from tests.sandbox.testing import SandboxProcess, start_sandbox
from tests.servers import free_port

from .conftest import stop_process
from .distributed_util import RedisServer, WorkerProcess, start_worker

pytestmark = pytest.mark.e2e

CAP = 6.0  # the crawl's cap per site (IMAGECRAWL_MAX_RATE_PER_SITE), for all workers together
#: (loopback address, images, capacity req/s (token bucket, 429 + Retry-After), latency s); the slow site
#: comes first in the list and holds most of it
SITES = [("127.0.4.1", 30, 1.5, 0.1), ("127.0.4.2", 12, 20.0, 0.02), ("127.0.4.3", 12, 20.0, 0.05)]
WORKERS = ("w1", "w2")


@contextmanager
def sites(tmp_path: Path) -> Iterator[list[SandboxProcess]]:
    with ExitStack() as stack:
        out = []
        for n, (host, items, capacity, latency) in enumerate(SITES):
            sb = start_sandbox(
                items=items,
                seed=200 + n,  # different images on every site
                log_path=tmp_path / f"site{n}.jsonl",
                extra_args=[
                    "--host",
                    host,
                    "--capacity",
                    str(capacity),
                    "--capacity-burst",
                    str(max(1.0, capacity)),
                    "--retry-after",
                    "1",
                    "--latency",
                    str(latency),
                ],
            )
            stack.callback(sb.stop)
            out.append(sb)
        yield out


def _wait(workers: list[WorkerProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for w in workers:
        try:
            w.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except Exception:
            for other in workers:
                stop_process(other.process)
            raise AssertionError(f"worker {w.name} did not finish:\n{w.log_text()[-4000:]}") from None


def test_a_slow_site_does_not_hold_the_others_back(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with sites(tmp_path) as sbs:
        urls: list[list[str]] = []
        for n, sb in enumerate(sbs):
            catalog = build_catalog(SITES[n][1], 200 + n)
            urls.append([sb.url(e.image_path) for e in catalog.entries("civitai")])
        listing = tmp_path / "list.txt"
        listing.write_text("".join(f"{u}\n" for site_urls in urls for u in site_urls))
        settings: dict[str, Any] = {
            "IMAGECRAWL_REDIS_URL": redis_server.url,
            "IMAGECRAWL_REDIS_PREFIX": prefix,
            "IMAGECRAWL_STORE": tmp_path / "store",
            "IMAGECRAWL_MAX_RATE_PER_SITE": CAP,
            "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
            "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 2,
            "CONCURRENT_REQUESTS": 4,
            "IMAGECRAWL_TUNING": {
                "redis_lease_seconds": 10,
                "pacing_min_rate_per_second": 0.2,
                "pacing_latency_margin_seconds": 5,
            },
        }
        workers = [
            start_worker(n, "urls", tmp_path / "workers", args={"input": str(listing)}, settings=settings)
            for n in WORKERS
        ]
        _wait(workers, 240)
        logs = [sb.wait_for_requests(len(u), timeout=10) for sb, u in zip(sbs, urls, strict=True)]

    stats = []
    for w in workers:
        text = w.log_text()
        assert w.process.returncode == 0, f"{w.name} exited {w.process.returncode}:\n{text[-4000:]}"
        assert "Traceback" not in text, text[-6000:]
        stats.append(w.stats())
    # every image fetched once (a 429 is fetched again, nothing else), by both workers together
    for log, site_urls in zip(logs, urls, strict=True):
        fetched = Counter(r["path"] for r in log if "/images/" in str(r["path"]) and int(r["status"]) != 429)
        assert sorted(fetched) == sorted(urlsplit(u).path for u in site_urls), fetched
        assert [p for p, n in fetched.items() if n > 1] == []
    images = sum(s.get("imagecrawl/media/images", 0) for s in stats)
    assert images == sum(len(u) for u in urls)
    agents = Counter(str(r["ua"]).rsplit("+", 1)[-1].rstrip(")") for log in logs for r in log)
    assert set(agents) == set(WORKERS), f"the work was not shared: {agents}"

    # the cap of each site holds for both workers together, and no request came inside a Retry-After
    for log in logs:
        assert max_rate_per_second([float(r["t"]) for r in log]) <= CAP
        assert requests_inside_windows(log, retry_after=1) == 0
    # requests waited in Redis, not in the downloader: none waited at the shared gate there
    assert sum(s.get("imagecrawl/distributed/rate/waits", 0) for s in stats) == 0

    # the fast sites finish near their own pace although the slow one holds the head of the list
    def image_times(log: list[dict[str, Any]]) -> list[float]:
        return sorted(float(r["t"]) for r in log if "/images/" in str(r["path"]))

    slow, *fast = (image_times(log) for log in logs)
    start = min(t[0] for t in (slow, *fast))
    slow_alone = SITES[0][1] / SITES[0][2]  # 20 s at the slow site's capacity
    for times, (host, n, _capacity, _latency) in zip(fast, SITES[1:], strict=True):
        own_pace = n / CAP  # 2 s at the cap
        assert times[0] - start < 6, f"{host} started {times[0] - start:.1f}s after the first image"
        took = times[-1] - times[0]
        assert took < own_pace + 6, f"{host}: {n} images took {took:.1f}s (its own pace: {own_pace:.1f}s)"
        assert times[-1] < slow[-1] - slow_alone / 2, "a fast site finished only near the slow site's end"
    print(
        f"\nslow site {slow[-1] - slow[0]:.1f}s for {SITES[0][1]} images; fast sites "
        + ", ".join(f"{t[-1] - t[0]:.1f}s" for t in fast)
        + f"; per worker {dict(agents)}"
    )
    client = redis.Redis.from_url(redis_server.url)
    assert client.zcard(f"{prefix}:crawl:urls:sites") == 0
    assert int(client.get(f"{prefix}:crawl:urls:queued") or 0) == 0
    assert client.zcard(f"{prefix}:crawl:urls:leases") == 0


def test_dead_sites_are_given_up_once_for_both_workers(tmp_path: Path, redis_server: RedisServer) -> None:
    """A site that refuses connections and one that accepts them and never answers, at the head of the list,
    among live ones, with two workers: each dead site's circuit is one over both workers, so it is given up
    within 30 s, counted once, and its requests (those still queued in Redis too) are dropped once each."""
    from .test_frontier_sandbox import SilentServer

    prefix = f"t{uuid.uuid4().hex[:8]}"
    silent = SilentServer("127.0.4.9")
    try:
        with sites(tmp_path) as sbs:
            refused = f"http://127.0.4.8:{free_port()}"  # nothing listens there
            hung = f"http://127.0.4.9:{silent.port}"
            live: list[list[str]] = []
            for n, sb in enumerate(sbs[1:], start=1):
                catalog = build_catalog(SITES[n][1], 200 + n)
                live.append([sb.url(e.image_path) for e in catalog.entries("civitai")])
            dead_rows = [f"{refused}/img/{i}.png" for i in range(25)] + [f"{hung}/img/{i}.png" for i in range(25)]
            listing = tmp_path / "list.txt"
            listing.write_text("".join(f"{u}\n" for u in [*dead_rows, *live[0], *live[1]]))
            settings: dict[str, Any] = {
                "IMAGECRAWL_REDIS_URL": redis_server.url,
                "IMAGECRAWL_REDIS_PREFIX": prefix,
                "IMAGECRAWL_STORE": tmp_path / "store",
                "IMAGECRAWL_MAX_RATE_PER_SITE": CAP,
                "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
                "CONCURRENT_REQUESTS": 8,
                "IMAGECRAWL_TUNING": {"redis_lease_seconds": 10, "pacing_latency_margin_seconds": 5},
            }
            started = time.time()
            workers = [
                start_worker(n, "urls", tmp_path / "workers", args={"input": str(listing)}, settings=settings)
                for n in WORKERS
            ]
            _wait(workers, 180)
            elapsed = time.time() - started
            logs = [sb.wait_for_requests(len(u), timeout=10) for sb, u in zip(sbs[1:], live, strict=True)]
    finally:
        silent.close()

    stats = []
    for w in workers:
        text = w.log_text()
        assert w.process.returncode == 0, f"{w.name} exited {w.process.returncode}:\n{text[-4000:]}"
        assert "Traceback" not in text, text[-6000:]
        stats.append(w.stats())

    def total(key: str) -> int:
        return sum(int(s.get(key, 0)) for s in stats)

    # every live image fetched, by the two workers together
    assert total("imagecrawl/media/images") == sum(len(u) for u in live)
    agents = Counter(str(r["ua"]).rsplit("+", 1)[-1].rstrip(")") for log in logs for r in log)
    assert set(agents) == set(WORKERS), f"the work was not shared: {agents}"
    # each dead site given up once over both workers (one circuit each), counted once
    assert total("imagecrawl/circuit/dead") == 2, [s.get("imagecrawl/circuit/dead") for s in stats]
    assert total("imagecrawl/frontier/dead_sites") == 2
    # their requests dropped once each: never more than the list holds, and all but the few that were
    # sent (the failures that opened the circuit, the probes)
    dropped = total("imagecrawl/frontier/dropped/dead_site")
    assert len(dead_rows) - 16 <= dropped <= len(dead_rows), dropped
    # the refused site is given up within 30 s of the start, by one of the workers (its log says so once)
    dead_at = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        for w in workers
        for line in w.log_text().splitlines()
        if "Site 127.0.4.8:" in line
        and ": dead: " in line
        and (m := re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line))
    ]
    assert len(dead_at) == 1, dead_at
    assert dead_at[0] - started <= 31, dead_at[0] - started  # (the log's times are whole seconds)
    # the silent site is given up within 30 s of its first connection, whoever sent the requests
    assert silent.accepted, "the silent site was tried"
    assert silent.accepted[-1] - silent.accepted[0] <= 30, silent.accepted
    assert elapsed < 90, elapsed
    client = redis.Redis.from_url(redis_server.url)
    assert int(client.get(f"{prefix}:crawl:urls:queued") or 0) == 0
    print(f"\ndead sites given up; {dropped} requests dropped; crawl {elapsed:.1f}s; per worker {dict(agents)}")
