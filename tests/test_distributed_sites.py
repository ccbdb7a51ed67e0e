"""Two workers, one Redis, sites of different capacities: the shared frontier keeps a queue per site and
takes a request only from a site whose shared gate is open, so a slow site at the head of the list does
not hold the others back, and each site's cap holds for both workers together.

Each worker is ``scrapy crawl urls`` in its own process over the same list (the shared dupefilter keeps
one of each request); the sandboxes' own request logs are the judge.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.sandbox.misbehave import max_rate_per_second, requests_inside_windows

from .distributed_util import (
    PUSHBACK_PACING,
    RedisServer,
    SiteSpec,
    capacity_sites,
    check_fetched_once,
    dead_sites,
    image_rows,
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

CAP = 6.0  # the crawl's cap per site (IMAGECRAWL_MAX_RATE_PER_SITE), for all workers together
#: sites of different hidden capacities (a token bucket, 429 + Retry-After) and latencies, different images
#: on every site; the slow site comes first in the list and holds most of it
SITES = [
    SiteSpec("127.0.4.1", items=30, seed=200, capacity=1.5, burst=1.5, retry_after=1, latency=0.1),
    SiteSpec("127.0.4.2", items=12, seed=201, capacity=20.0, burst=20.0, retry_after=1, latency=0.02),
    SiteSpec("127.0.4.3", items=12, seed=202, capacity=20.0, burst=20.0, retry_after=1, latency=0.05),
]
WORKERS = ("w1", "w2")


def test_a_slow_site_does_not_hold_the_others_back(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = new_prefix()
    with capacity_sites(tmp_path, SITES) as sbs:
        urls = [image_urls(sb, spec) for sb, spec in zip(sbs, SITES, strict=True)]
        listing = write_listing(tmp_path / "list.txt", [u for site_urls in urls for u in site_urls])
        settings = redis_settings(
            redis_server, prefix, tmp_path / "store", CAP, PUSHBACK_PACING, {"CONCURRENT_REQUESTS": 4}
        )
        workers = start_workers(WORKERS, "urls", tmp_path / "workers", args={"input": str(listing)}, settings=settings)
        wait_workers(workers, 240)
        logs = site_logs(sbs, urls)

    stats = [worker_stats(w) for w in workers]
    # every image fetched once (a 429 is fetched again, nothing else), by both workers together
    for log, site_urls in zip(logs, urls, strict=True):
        check_fetched_once(log, site_urls)
    images = sum(s.get("imagecrawl/media/images", 0) for s in stats)
    assert images == sum(len(u) for u in urls)
    agents = requests_by_worker(r for log in logs for r in log)
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
    slow_alone = SITES[0].items / SITES[0].capacity  # 20 s at the slow site's capacity
    for times, spec in zip(fast, SITES[1:], strict=True):
        own_pace = spec.items / CAP  # 2 s at the cap
        assert times[0] - start < 6, f"{spec.host} started {times[0] - start:.1f}s after the first image"
        took = times[-1] - times[0]
        assert took < own_pace + 6, f"{spec.host}: {spec.items} images took {took:.1f}s (its own pace: {own_pace:.1f}s)"
        assert times[-1] < slow[-1] - slow_alone / 2, "a fast site finished only near the slow site's end"
    print(
        f"\nslow site {slow[-1] - slow[0]:.1f}s for {SITES[0].items} images; fast sites "
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
    prefix = new_prefix()
    with dead_sites("127.0.4.8", "127.0.4.9") as dead, capacity_sites(tmp_path, SITES) as sbs:
        dead_rows = image_rows(dead.refused, 25) + image_rows(dead.hung, 25)
        live = [image_urls(sb, spec) for sb, spec in zip(sbs[1:], SITES[1:], strict=True)]
        listing = write_listing(tmp_path / "list.txt", [*dead_rows, *live[0], *live[1]])
        settings = redis_settings(
            redis_server,
            prefix,
            tmp_path / "store",
            CAP,
            {
                "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
                "CONCURRENT_REQUESTS": 8,
                "IMAGECRAWL_TUNING": {"redis_lease_seconds": 10, "pacing_latency_margin_seconds": 5},
            },
        )
        started = time.time()
        workers = start_workers(WORKERS, "urls", tmp_path / "workers", args={"input": str(listing)}, settings=settings)
        wait_workers(workers, 180)
        elapsed = time.time() - started
        logs = site_logs(sbs[1:], live)

    stats = [worker_stats(w) for w in workers]

    def total(key: str) -> int:
        return sum(int(s.get(key, 0)) for s in stats)

    # every live image fetched, by the two workers together
    assert total("imagecrawl/media/images") == sum(len(u) for u in live)
    agents = requests_by_worker(r for log in logs for r in log)
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
    assert dead.silent.accepted, "the silent site was tried"
    assert dead.silent.accepted[-1] - dead.silent.accepted[0] <= 30, dead.silent.accepted
    assert elapsed < 90, elapsed
    client = redis.Redis.from_url(redis_server.url)
    assert int(client.get(f"{prefix}:crawl:urls:queued") or 0) == 0
    print(f"\ndead sites given up; {dropped} requests dropped; crawl {elapsed:.1f}s; per worker {dict(agents)}")
