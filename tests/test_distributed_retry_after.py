"""Two workers, one Redis, sites that push back with 429 + Retry-After: no request from either worker
arrives while a window a site announced is open, and the workers keep to one pace per site (one shared
controller), not one each.

Each worker is ``scrapy crawl urls`` in its own process over the same list; each site is a sandbox
whose token bucket answers 429 with ``Retry-After`` and logs every arrival (with the header it sent),
which is the judge.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.sandbox.catalog import build_catalog
from tests.sandbox.misbehave import requests_inside_windows
from tests.sandbox.testing import SandboxProcess, start_sandbox

from .conftest import stop_process
from .distributed_util import RedisServer, WorkerProcess, start_worker

pytestmark = pytest.mark.e2e

CAP = 8.0  # the crawl's cap per site, far above what the sites take: they must push back
#: (loopback address, images, capacity req/s, bucket burst, Retry-After s, latency s)
SITES = [("127.0.5.1", 36, 2.0, 1.0, 2, 0.05), ("127.0.5.2", 36, 3.5, 2.0, 1, 0.15)]
WORKERS = ("ra1", "ra2")


@contextmanager
def sites(tmp_path: Path) -> Iterator[list[SandboxProcess]]:
    with ExitStack() as stack:
        out = []
        for n, (host, items, capacity, burst, retry_after, latency) in enumerate(SITES):
            sb = start_sandbox(
                items=items,
                seed=300 + n,
                log_path=tmp_path / f"site{n}.jsonl",
                extra_args=[
                    "--host",
                    host,
                    "--capacity",
                    str(capacity),
                    "--capacity-burst",
                    str(burst),
                    "--retry-after",
                    str(retry_after),
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


def test_no_worker_sends_inside_a_retry_after_window(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with sites(tmp_path) as sbs:
        urls: list[list[str]] = []
        for n, sb in enumerate(sbs):
            catalog = build_catalog(SITES[n][1], 300 + n)
            urls.append([sb.url(e.image_path) for e in catalog.entries("civitai")])
        listing = tmp_path / "list.txt"
        # interleaved: both workers are busy on both sites at once
        rows = [u for pair in zip(*urls, strict=True) for u in pair]
        listing.write_text("".join(f"{u}\n" for u in rows))
        settings: dict[str, Any] = {
            "IMAGECRAWL_REDIS_URL": redis_server.url,
            "IMAGECRAWL_REDIS_PREFIX": prefix,
            "IMAGECRAWL_STORE": tmp_path / "store",
            "IMAGECRAWL_MAX_RATE_PER_SITE": CAP,
            "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
            "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 2,
            "CONCURRENT_REQUESTS": 8,
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
    for log, site_urls, spec in zip(logs, urls, SITES, strict=True):
        # every image fetched, once (a 429 is asked again, nothing else)
        fetched = Counter(r["path"] for r in log if "/images/" in str(r["path"]) and int(r["status"]) != 429)
        assert sorted(fetched) == sorted(urlsplit(u).path for u in site_urls), fetched
        assert [p for p, n in fetched.items() if n > 1] == []
        # both workers sent to the site, and the site did push back with Retry-After (else this proves nothing)
        agents = Counter(str(r["ua"]).rsplit("+", 1)[-1].rstrip(")") for r in log)
        assert set(agents) == set(WORKERS), f"{spec[0]}: the work was not shared: {agents}"
        throttled = [r for r in log if int(r["status"]) == 429]
        assert throttled, f"{spec[0]} never answered 429: the test did not test anything"
        assert all(str(r.get("retry_after")) == str(spec[4]) for r in throttled)
        # the point: no request of either worker arrived inside a window a site announced
        assert requests_inside_windows(log, retry_after=spec[4]) == 0, f"{spec[0]}: requests inside Retry-After"
        # one pace per site for both workers together: 429s stay rare, as for one process
        assert len(throttled) <= max(4, 0.15 * len(log)), f"{spec[0]}: {len(throttled)} 429s of {len(log)}"
    # the 429's worker closed the site for both (the shared pause), and the shared controller took the cuts
    assert sum(s.get("imagecrawl/pacing/retry_after_received/429", 0) for s in stats) > 0
    client = redis.Redis.from_url(redis_server.url)
    for host, *_rest in SITES:
        hash_key = next(iter(client.scan_iter(f"{prefix}:site:{host}*:rate")), None)
        assert hash_key is not None, f"no shared pacing state for {host}"
        shared = client.hgetall(hash_key)
        assert int(shared[b"v"]) > 0 and float(shared[b"ctl_rate"]) < CAP, shared
        inflight = next(iter(client.scan_iter(f"{prefix}:site:{host}*:inflight")), None)
        assert inflight is None or client.zcard(inflight) == 0, "a finished crawl left concurrency slots taken"
