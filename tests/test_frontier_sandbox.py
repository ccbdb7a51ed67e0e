"""The site-aware frontier in a real crawl: the ``urls`` spider over a list grouped by site, as real lists
are, with a dead site at its head (refusing connections) and one in the middle (accepting them and never
answering), and live sandbox sites of different hidden capacities (a token bucket, 429 + Retry-After)
and latencies, each on its own loopback address.

What must hold: every live image stored; the live sites served at the same time (not in waves, in list
order); no request inside a Retry-After window; the dead sites cut off by their circuit within seconds
(their requests dropped with a counted reason); a site with a low rate cap does not hold the crawl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.misbehave import max_rate_per_second, requests_inside_windows

from .conftest import run_crawl
from .distributed_util import SiteSpec, capacity_sites, dead_sites, image_rows, image_urls, write_listing

pytestmark = pytest.mark.e2e

ITEMS = 12  # per source: 12 civitai images a site
#: different images on every site (exact dedupe would merge equal ones), each its own capacity and latency
LIVE = [
    SiteSpec("127.0.3.1", items=ITEMS, seed=100, capacity=2.0, burst=2.0, retry_after=1, latency=0.15),
    SiteSpec("127.0.3.2", items=ITEMS, seed=101, capacity=4.0, burst=4.0, retry_after=1, latency=0.05),
    SiteSpec("127.0.3.3", items=ITEMS, seed=102, capacity=8.0, burst=8.0, retry_after=1, latency=0.02),
    SiteSpec("127.0.3.4", items=ITEMS, seed=103, capacity=3.0, burst=3.0, retry_after=1, latency=0.1),
]


def test_sites_served_together_retry_after_kept_dead_sites_cut_off(tmp_path: Path) -> None:
    with dead_sites("127.0.3.8", "127.0.3.9") as dead, capacity_sites(tmp_path, LIVE) as sites:
        live_urls = [image_urls(sb, spec) for sb, spec in zip(sites, LIVE, strict=True)]
        rows = image_rows(dead.refused, 30)  # a dead site at the head of the list
        rows += live_urls[0] + live_urls[1]
        rows += image_rows(dead.hung, 30)  # and one in the middle
        rows += live_urls[2] + live_urls[3]
        listing = write_listing(tmp_path / "list.txt", rows)
        started = time.time()
        result = run_crawl(
            "urls",
            store=tmp_path / "store",
            args={"input": str(listing)},
            settings={
                "IMAGECRAWL_MAX_RATE_PER_SITE": "10",
                "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "4",
                "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "2.5",
                "CONCURRENT_REQUESTS": "8",
                "IMAGECRAWL_TUNING": {"pacing_latency_margin_seconds": "5"},
            },
            timeout=240,
        )
        elapsed = time.time() - started
        logs = [sb.wait_for_requests(ITEMS, timeout=10) for sb in sites]
    stats: dict[str, Any] = result.stats
    n_live = sum(len(u) for u in live_urls)
    assert stats.get("imagecrawl/media/images") == n_live, result.stderr[-3000:]  # every live image fetched
    stored = stats.get("item_scraped_count", 0) + stats.get("item_dropped_reasons_count/DuplicateItem", 0)
    assert stored == n_live  # and stored (or a near-duplicate of one stored)

    # the dead sites are cut off: counted, reported, and quickly
    assert stats["imagecrawl/frontier/dead_sites"] == 2
    assert stats["imagecrawl/frontier/dropped/dead_site"] >= 40
    assert "does not answer: dropping" in result.stderr
    assert dead.silent.accepted, "the silent site was tried"
    assert dead.silent.accepted[-1] - dead.silent.accepted[0] <= 30
    # the slowest live site has 12 images at 2/s (6 s when served from the start); the dead ones add
    # seconds, not minutes: a 60 s timeout and 4 robots.txt attempts per dead site would be > 240 s
    assert elapsed < 90, elapsed

    # served together: every live site got its first image request within seconds of the first request
    # to any of them, although the list holds them one after another behind the dead sites
    firsts = [min(r["t"] for r in log if "/images/" in str(r["path"])) for log in logs]
    assert max(firsts) - min(firsts) < 8, firsts

    statuses: list[int] = []
    for log in logs:
        assert requests_inside_windows(log, retry_after=1) == 0
        times = [float(r["t"]) for r in log]
        assert max_rate_per_second(times) <= 10  # the cap
        statuses += [int(r["status"]) for r in log]
    # a dozen images a site: the start-up probing of each capacity is a large part of these short crawls
    assert statuses.count(429) <= 0.2 * len(statuses), statuses.count(429)
