"""The shared frontier's per-site queues against a real redis-server: order within a site, turns across
sites, a dead worker's lease back into its own site's queue at its priority, retries held until due, and
the shared gate deciding which site a worker may take from (two schedulers = two workers)."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy import Request, Spider

from imagecrawl import meta
from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.distributed.scheduler import RedisScheduler

from .crawlers import make_crawler
from .distributed_util import RedisServer


class _Spider(Spider):
    name = "frontier-test"


def _scheduler(redis_server: RedisServer, prefix: str, tmp_path: Path, **extra: Any) -> RedisScheduler:
    crawler = make_crawler(
        _Spider,
        IMAGECRAWL_REDIS_URL=redis_server.url,
        IMAGECRAWL_REDIS_PREFIX=prefix,
        IMAGECRAWL_STORE=str(tmp_path / "store"),
        **extra,
    )
    crawler.spider = _Spider()
    scheduler = RedisScheduler.from_crawler(crawler)
    scheduler.open(crawler.spider)
    scheduler.timers = []  # type: ignore[attr-defined]
    scheduler.call_later = lambda delay, fn: scheduler.timers.append(delay) or _Timer()  # type: ignore[attr-defined]
    return scheduler


class _Timer:
    def cancel(self) -> None:
        pass


def _drain(s: RedisScheduler, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = s.next_request()
        out.append(r.url if r is not None else "-")
    return out


def test_order_within_a_site_and_turns_across_sites(redis_server: RedisServer, tmp_path: Path) -> None:
    s = _scheduler(redis_server, f"t{uuid.uuid4().hex[:8]}", tmp_path)
    for url, priority in [("http://a.test/low", 0), ("http://a.test/high", 5), ("http://a.test/mid", 2)]:
        assert s.enqueue_request(Request(url, priority=priority))
    assert s.enqueue_request(Request("http://b.test/1"))
    assert s.enqueue_request(Request("http://c.test/1"))
    assert not s.enqueue_request(Request("http://c.test/1"))  # the shared dupefilter
    assert len(s) == 5
    time.sleep(0.01)  # a served site's next turn comes after the others' (Redis's clock counts milliseconds)
    got = _drain(s, 6)
    # a's best first, then the other ready sites in turn before a's next
    assert got == [
        "http://a.test/high",
        "http://b.test/1",
        "http://c.test/1",
        "http://a.test/mid",
        "http://a.test/low",
        "-",
    ]
    assert len(s) == 0 and s.timers  # type: ignore[attr-defined]
    s.worker._spider_closed("finished")


def test_a_dead_workers_lease_returns_to_its_site_at_its_priority(redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    dead = _scheduler(redis_server, prefix, tmp_path, IMAGECRAWL_TUNING={"redis_lease_seconds": 0.5})
    for url, priority in [("http://a.test/1", 9), ("http://a.test/2", 1), ("http://b.test/1", 0)]:
        dead.enqueue_request(Request(url, priority=priority))
    time.sleep(0.01)  # a's turn comes after b's (Redis's clock counts milliseconds)
    taken = dead.next_request()
    assert taken is not None and taken.url == "http://a.test/1"
    assert meta.LEASE in taken.meta
    # the worker dies holding it: no heartbeat, no ack
    survivor = _scheduler(redis_server, prefix, tmp_path, IMAGECRAWL_TUNING={"redis_lease_seconds": 0.5})
    time.sleep(0.7)
    got = _drain(survivor, 4)
    assert survivor.stats is not None
    assert survivor.stats.get_value("imagecrawl/distributed/leases/reclaimed") == 1
    # a's turn came before the kill: b goes first, then a's best again is the reclaimed one (priority 9)
    assert got == ["http://b.test/1", "http://a.test/1", "http://a.test/2", "-"]
    client = redis.Redis.from_url(redis_server.url)
    base = f"{prefix}:crawl:frontier-test"
    assert client.hget(f"{base}:lease:site", taken.meta[meta.LEASE]) is None  # gone with the lease
    survivor.worker.requeue_held()  # a clean stop hands them back, each to its site
    assert client.zcard(f"{base}:q:a.test") == 2 and client.zcard(f"{base}:q:b.test") == 1
    assert int(client.get(f"{base}:queued") or 0) == 3


def test_a_retry_waits_in_redis_until_due(redis_server: RedisServer, tmp_path: Path) -> None:
    s = _scheduler(redis_server, f"t{uuid.uuid4().hex[:8]}", tmp_path)
    retry = Request("http://a.test/again", meta={meta.NOT_BEFORE: time.time() + 0.6})
    assert s.enqueue_request(retry)
    assert len(s) == 1
    assert s.next_request() is None
    assert 0 < s.timers[-1] <= 0.65  # type: ignore[attr-defined]
    time.sleep(0.7)
    got = s.next_request()
    assert got is not None and got.url == "http://a.test/again"
    assert len(s) == 0


def test_the_shared_gate_decides_which_site_a_worker_takes(redis_server: RedisServer, tmp_path: Path) -> None:
    """Two workers (pacing middleware off: the frontier asks the shared limiter itself): a paused site
    is not served while others are, and a site's rate slot is shared: never more than the cap."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    extra = {
        "IMAGECRAWL_PACING_ENABLED": False,
        "IMAGECRAWL_SHARED_LIMITER_FACTORY": "imagecrawl.distributed.ratelimit.limiter_for",
        "IMAGECRAWL_MAX_RATE_PER_SITE": 4.0,
    }
    workers = [_scheduler(redis_server, prefix, tmp_path, **extra) for _ in range(2)]
    assert all(w.limiter is not None for w in workers)
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_server.url), prefix, RateConfig(cap=4.0))
    limiter.pause("paused.test", 30)
    for i in range(40):
        workers[0].enqueue_request(Request(f"http://busy.test/{i}"))
        workers[1].enqueue_request(Request(f"http://paused.test/{i}"))
    taken: list[tuple[float, str]] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for w in workers:
            r = w.next_request()
            if r is not None:
                assert r.meta[meta.PACING_GRANTED] == "shared"
                taken.append((time.monotonic(), r.url))
        time.sleep(0.01)
    assert taken and all("busy.test" in url for _, url in taken)
    # GCRA at 4/s with the spacing factor: about 7 in 2 s, both workers together
    assert 5 <= len(taken) <= 9, taken
    stats = [w.stats for w in workers]
    assert all(s is not None for s in stats)
    assert sum(s.get_value("imagecrawl/distributed/frontier/deferred", 0) for s in stats if s) > 0
    limiter.resume("paused.test")
    served: list[str] = []
    deadline = time.monotonic() + 8.0  # a site set aside is asked again within DEFER_MAX_SECONDS (5 s)
    while time.monotonic() < deadline and not any("paused.test" in u for u in served):
        for w in workers:
            r = w.next_request()
            if r is not None:
                served.append(r.url)
        time.sleep(0.05)
    assert any("paused.test" in u for u in served), served


def test_read_ahead_counts_the_next_few_of_each_site(redis_server: RedisServer, tmp_path: Path) -> None:
    """A site with a long run of the list counts as 8 towards the read-ahead (the local frontier's
    measure), so the urls spider reads on to the other sites; the counters end at zero."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    s = _scheduler(redis_server, prefix, tmp_path, IMAGECRAWL_TUNING={"frontier_read_ahead": 12})
    client = redis.Redis.from_url(redis_server.url)
    base = f"{prefix}:crawl:frontier-test"
    for i in range(30):
        s.enqueue_request(Request(f"http://long.test/{i}"))
    assert int(client.get(f"{base}:lookahead") or 0) == 8
    assert s.wants_more()
    for i in range(3):
        s.enqueue_request(Request(f"http://short.test/{i}"))
    assert int(client.get(f"{base}:lookahead") or 0) == 11
    s._room = 0
    assert s.wants_more()  # room for one more: the spider reads a row
    s.enqueue_request(Request("http://short.test/3"))
    assert not s.wants_more()  # 8 + 4 = 12
    got = _drain(s, 40)
    assert got.count("-") == 6 and len(s) == 0
    assert int(client.get(f"{base}:lookahead") or 0) == 0
    assert s.wants_more()


def test_reset_clears_the_site_queues_and_an_earlier_versions_queue(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from imagecrawl.distributed.config import CrawlKeys
    from imagecrawl.distributed.seeds import reset_crawl

    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_server.url)
    keys = CrawlKeys(prefix, "frontier-test")
    client.zadd(keys.legacy_queue, {b"an old request": 0})
    with caplog.at_level(logging.WARNING, logger="imagecrawl.distributed.scheduler"):
        s = _scheduler(redis_server, prefix, tmp_path)
    assert "queued by an earlier version" in caplog.text and "--reset" in caplog.text
    for url in ("http://a.test/1", "http://b.test/1", "http://b.test/2"):
        s.enqueue_request(Request(url))
    assert client.exists(keys.site_queue("a.test"), keys.site_queue("b.test")) == 2
    assert reset_crawl(client, keys) >= 5
    assert not client.exists(keys.legacy_queue, keys.sites, keys.queued, keys.lookahead, keys.seen)
    assert list(client.scan_iter(match=keys.queue_prefix + "*")) == []
    assert len(s) == 0 and s.next_request() is None


def test_within_a_priority_the_spiders_order_holds(redis_server: RedisServer, tmp_path: Path) -> None:
    """As Scrapy's own queues (and the local frontier): LIFO by default, start requests FIFO after the
    other requests of their priority; with a FIFO memory queue, FIFO."""
    s = _scheduler(redis_server, f"t{uuid.uuid4().hex[:8]}", tmp_path)
    for i in (1, 2):
        s.enqueue_request(Request(f"http://a.test/start{i}", meta={"is_start_request": True}))
    for i in (1, 2, 3):
        s.enqueue_request(Request(f"http://a.test/page{i}"))
    s.enqueue_request(Request("http://a.test/urgent", priority=1))
    assert _drain(s, 7) == [
        "http://a.test/urgent",
        "http://a.test/page3",
        "http://a.test/page2",
        "http://a.test/page1",
        "http://a.test/start1",
        "http://a.test/start2",
        "-",
    ]
    fifo = _scheduler(
        redis_server, f"t{uuid.uuid4().hex[:8]}", tmp_path, SCHEDULER_MEMORY_QUEUE="scrapy.squeues.FifoMemoryQueue"
    )
    for i in (1, 2, 3):
        fifo.enqueue_request(Request(f"http://b.test/page{i}"))
    assert _drain(fifo, 3) == ["http://b.test/page1", "http://b.test/page2", "http://b.test/page3"]
