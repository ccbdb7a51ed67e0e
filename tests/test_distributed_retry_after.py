"""Two workers, one Redis, sites that push back with 429 + Retry-After: no request from either worker
arrives while a window a site announced is open, and the workers keep to one pace per site (one shared
controller), not one each.

Each worker is ``scrapy crawl urls`` in its own process over the same list; each site is a sandbox
whose token bucket answers 429 with ``Retry-After`` and logs every arrival (with the header it sent),
which is the judge.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.sandbox.misbehave import requests_inside_windows

from .distributed_util import (
    PUSHBACK_PACING,
    RedisServer,
    SiteSpec,
    capacity_sites,
    check_fetched_once,
    image_urls,
    new_prefix,
    redis_settings,
    requests_by_worker,
    site_logs,
    start_workers,
    wait_workers,
    worker_stats,
    write_listing,
)

pytestmark = pytest.mark.e2e

CAP = 8.0  # the crawl's cap per site, far above what the sites take: they must push back
SITES = [
    SiteSpec("127.0.5.1", items=36, seed=300, capacity=2.0, burst=1.0, retry_after=2, latency=0.05),
    SiteSpec("127.0.5.2", items=36, seed=301, capacity=3.5, burst=2.0, retry_after=1, latency=0.15),
]
WORKERS = ("ra1", "ra2")


def test_no_worker_sends_inside_a_retry_after_window(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = new_prefix()
    with capacity_sites(tmp_path, SITES) as sbs:
        urls = [image_urls(sb, spec) for sb, spec in zip(sbs, SITES, strict=True)]
        # interleaved: both workers are busy on both sites at once
        rows = [u for pair in zip(*urls, strict=True) for u in pair]
        listing = write_listing(tmp_path / "list.txt", rows)
        settings = redis_settings(
            redis_server, prefix, tmp_path / "store", CAP, PUSHBACK_PACING, {"CONCURRENT_REQUESTS": 8}
        )
        workers = start_workers(WORKERS, "urls", tmp_path / "workers", args={"input": str(listing)}, settings=settings)
        wait_workers(workers, 240)
        logs = site_logs(sbs, urls)

    stats = [worker_stats(w) for w in workers]
    for log, site_urls, spec in zip(logs, urls, SITES, strict=True):
        # every image fetched, once (a 429 is asked again, nothing else)
        check_fetched_once(log, site_urls)
        # both workers sent to the site, and the site did push back with Retry-After (else this proves nothing)
        agents = requests_by_worker(log)
        assert set(agents) == set(WORKERS), f"{spec.host}: the work was not shared: {agents}"
        throttled = [r for r in log if int(r["status"]) == 429]
        assert throttled, f"{spec.host} never answered 429: the test did not test anything"
        assert all(str(r.get("retry_after")) == str(spec.retry_after) for r in throttled)
        # the point: no request of either worker arrived inside a window a site announced
        assert requests_inside_windows(log, retry_after=spec.retry_after) == 0, (
            f"{spec.host}: requests inside Retry-After"
        )
        # one pace per site for both workers together: 429s stay rare, as for one process
        assert len(throttled) <= max(4, 0.15 * len(log)), f"{spec.host}: {len(throttled)} 429s of {len(log)}"
    # the 429's worker closed the site for both (the shared pause), and the shared controller took the cuts
    assert sum(s.get("imagecrawl/pacing/retry_after_received/429", 0) for s in stats) > 0
    client = redis.Redis.from_url(redis_server.url)
    for spec in SITES:
        hash_key = next(iter(client.scan_iter(f"{prefix}:site:{spec.host}*:rate")), None)
        assert hash_key is not None, f"no shared pacing state for {spec.host}"
        shared = client.hgetall(hash_key)
        assert int(shared[b"v"]) > 0 and float(shared[b"ctl_rate"]) < CAP, shared
        inflight = next(iter(client.scan_iter(f"{prefix}:site:{spec.host}*:inflight")), None)
        assert inflight is None or client.zcard(inflight) == 0, "a finished crawl left concurrency slots taken"
