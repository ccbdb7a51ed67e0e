"""The frontier as Scrapy's SCHEDULER, built with ``get_crawler`` and driven with an injected clock:
per-site gates, the marks it leaves on what it lets out, retries' backoff, the duplicate filter, dead
and banned sites, the spill file and JOBDIR. The engine side (waking it before its heartbeat) is
checked in a real crawl (tests/test_frontier_sandbox.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import scrapy
from scrapy import Request, signals
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.pacing import Feedback, Signal
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from imagecrawl.pacing.scheduler import JOBDIR_FILE, FrontierScheduler, wake_engine
from tests.crawlers import make_crawler


class Spider(scrapy.Spider):
    name = "frontier_test"

    def parse(self, response: Response) -> None:
        pass

    def failed(self, failure: Any) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Timers:
    """The scheduler's timer, recorded: (delay, cancelled?) of each one armed."""

    def __init__(self) -> None:
        self.armed: list[list[Any]] = []

    def __call__(self, delay: float, func: Any) -> Any:
        entry: list[Any] = [delay, False]
        self.armed.append(entry)

        class Handle:
            def cancel(self) -> None:
                entry[1] = True

        return Handle()

    def live(self) -> list[float]:
        return [d for d, cancelled in self.armed if not cancelled]


def scheduler(tmp_path: Path, **settings: Any) -> tuple[FrontierScheduler, Clock]:
    base = {
        "IMAGECRAWL_STORE": str(tmp_path / "store"),
        "IMAGECRAWL_MAX_RATE_PER_SITE": 1,
        "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 1,
        "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 2,
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "IMAGECRAWL_TUNING": {"pacing_jitter": 0},
    }
    crawler = make_crawler(Spider, **{**base, **settings})
    crawler.spider = Spider.from_crawler(crawler)
    crawler.stats.open_spider()
    PacingMiddleware.from_crawler(crawler)  # as the engine builds the downloader before the scheduler
    sched = FrontierScheduler.from_crawler(crawler)
    clock = Clock()
    sched.clock = clock
    sched.call_later = Timers()
    sched.open(crawler.spider)
    return sched, clock


def drain(sched: FrontierScheduler, answer: bool = True) -> list[str]:
    """What the frontier lets out now; each request is answered at once (a 200) unless ``answer`` is off."""
    out = []
    while (request := sched.next_request()) is not None:
        out.append(request.url)
        if answer:
            ok(sched, request)
    return out


def ok(sched: FrontierScheduler, request: Request) -> None:
    site, now = request.meta[meta.SITE], sched.clock()
    sched.runtime.gate.release(site, now, now)
    sched.runtime.gate.feedback(site, Feedback(Signal.OK, now, 0.01), now)
    sched.released(site)


def stats(sched: FrontierScheduler, prefix: str) -> dict[str, Any]:
    return {k: v for k, v in sched.stats.get_stats().items() if k.startswith(prefix)}


def test_each_site_at_its_own_pace_none_holding_another(tmp_path: Path) -> None:
    sched, clock = scheduler(tmp_path)
    for i in range(3):
        for site in ("a.example", "b.example"):
            assert sched.enqueue_request(Request(f"https://{site}/{i}", callback=sched.spider.parse))
    assert drain(sched) == ["https://a.example/0", "https://b.example/0"]  # 1 req/s each: one now
    assert sched.has_pending_requests() and len(sched) == 4  # the engine must not close the spider
    assert sched.call_later.live() == [pytest.approx(1.15, abs=0.02)]  # the engine is woken when a site is ready
    clock.t += 1.2  # the cap: 1 request in any 1.15 s
    assert sorted(drain(sched)) == ["https://a.example/1", "https://b.example/1"]
    assert stats(sched, "scheduler/") == {
        "scheduler/enqueued": 6,
        "scheduler/enqueued/memory": 6,
        "scheduler/dequeued": 4,
        "scheduler/dequeued/memory": 4,
    }


def test_within_a_site_priority_then_scrapys_lifo_start_requests_fifo(tmp_path: Path) -> None:
    sched, clock = scheduler(
        tmp_path,
        SCHEDULER_MEMORY_QUEUE="scrapy.squeues.LifoMemoryQueue",
        IMAGECRAWL_MAX_RATE_PER_SITE=1000,
        IMAGECRAWL_PACING_START_RATE_PER_SECOND=1000,
    )
    for name, prio, start in [("s1", 0, True), ("p1", 0, False), ("s2", 0, True), ("p2", 0, False), ("hi", 5, False)]:
        sched.enqueue_request(Request(f"https://a.example/{name}", priority=prio, meta={"is_start_request": start}))
    got = []
    for _ in range(20):
        clock.t += 0.1
        got += [u.rsplit("/", 1)[1] for u in drain(sched)]
    assert got == ["hi", "p2", "p1", "s1", "s2"]


def test_what_leaves_holds_a_slot_and_a_new_site_gets_the_short_timeout(tmp_path: Path) -> None:
    sched, clock = scheduler(tmp_path, IMAGECRAWL_TUNING={"policy_timeout_seconds": 4}, DOWNLOAD_TIMEOUT=60)
    sched.enqueue_request(Request("https://a.example/1"))
    request = sched.next_request()
    assert request is not None
    sched.released("a.example")
    assert request.meta[meta.PACING_GRANTED] is True and request.meta[meta.SENT_AT] == clock.t
    assert request.meta["download_timeout"] == 4 and request.meta[meta.FIRST_CONTACT]
    gate = sched.runtime.gate
    assert gate.sites["a.example"].in_flight == 1
    ok(sched, request)
    clock.t += 2
    sched.enqueue_request(Request("https://a.example/2"))
    second = sched.next_request()
    assert second is not None and "download_timeout" not in second.meta  # the site answered: normal timeout
    ok(sched, second)
    # a retry of a first-contact request gets the normal timeout back
    retry = request.replace(dont_filter=True)
    retry.meta.pop(meta.PACING_GRANTED)
    sched.enqueue_request(retry)
    clock.t += 2
    again = sched.next_request()
    assert again is not None and "download_timeout" not in again.meta


def test_settled_sites_keep_only_their_learned_rate_and_come_back_with_it(tmp_path: Path) -> None:
    sched, clock = scheduler(
        tmp_path,
        IMAGECRAWL_MAX_RATE_PER_SITE=8,
        IMAGECRAWL_TUNING={"pacing_jitter": 0, "policy_timeout_seconds": 4, "pacing_forget_idle_seconds": 120},
        DOWNLOAD_TIMEOUT=60,
    )
    rt, gate = sched.runtime, sched.runtime.gate
    for i in range(8):
        sched.enqueue_request(Request(f"https://done.example/{i}"))
        sched.enqueue_request(Request(f"https://busy.example/{i}"))
    while sched.has_pending_requests():  # both served, each at its pace
        clock.t += 0.25
        drain(sched)
    rate = gate.sites["done.example"].controller.rate
    assert rate > 1  # it learned a rate above the start's 1 req/s
    # busy.example's last answer was a 429 with Retry-After: a pause that must outlive the compaction
    gate.feedback("busy.example", Feedback(Signal.THROTTLED, clock.t, retry_after=60.0), clock.t)
    clock.t += 15
    sched.next_request()  # the frontier's periodic pass
    assert "done.example" in gate.learned and "done.example" not in gate.sites
    assert "done.example" not in rt.netlocs and "busy.example" in gate.sites and "busy.example" in rt.netlocs
    assert gate.sites["busy.example"].paused_until > clock.t  # a pending pause keeps the whole state
    # done.example's next request: its learned rate comes back, and it is no first contact
    sched.enqueue_request(Request("https://done.example/again"))
    again = sched.next_request()
    assert again is not None and again.url == "https://done.example/again"
    assert gate.sites["done.example"].controller.rate == rate and "download_timeout" not in again.meta
    ok(sched, again)
    clock.t += 200  # idle past pacing_forget_idle_seconds: forgotten, then a new site again
    sched.next_request()
    assert "done.example" not in gate.sites and "done.example" not in gate.learned
    assert stats(sched, "imagecrawl/pacing/forgotten")


def test_a_request_that_comes_back_still_holding_its_slot_gives_it_back(tmp_path: Path) -> None:
    sched, _ = scheduler(tmp_path)
    sched.enqueue_request(Request("https://a.example/1"))
    request = sched.next_request()
    assert request is not None and sched.runtime.gate.sites["a.example"].in_flight == 1
    sched.enqueue_request(request.replace(url="https://a.example/other"))  # a middleware replaced it
    assert sched.runtime.gate.sites["a.example"].in_flight == 0


def test_a_request_given_back_unsent_takes_its_old_place_in_its_sites_queue(tmp_path: Path) -> None:
    """The pacing middleware gives back a request that would wait long for its turn (its robots.txt
    brought a Crawl-delay): its slot is freed and it is the site's next request again, not its last."""
    sched, clock = scheduler(tmp_path)
    for i in range(3):
        assert sched.enqueue_request(Request(f"https://a.example/{i}", meta={"is_start_request": True}))
    first = sched.next_request()
    assert first is not None and first.url == "https://a.example/0"
    assert first.meta[meta.FRONTIER_KEY] == [0, 1, 1]  # -priority, a start request, its sequence
    assert sched.runtime.gate.sites["a.example"].in_flight == 1
    assert sched.enqueue_request(first.replace(dont_filter=True))  # what the middleware returns
    assert sched.runtime.gate.sites["a.example"].in_flight == 0
    got = []
    for _ in range(5):
        clock.t += 1.2
        got += drain(sched)
    assert got == [f"https://a.example/{i}" for i in range(3)]
    # a request a callback made with a copy of that meta has no slot to give back: its own place
    copied = Request("https://a.example/late", meta={meta.FRONTIER_KEY: [0, 1, 1], "is_start_request": True})
    assert sched.enqueue_request(copied)
    assert meta.FRONTIER_KEY not in copied.meta
    assert sched.runtime.gate.sites["a.example"].in_flight == 0


def test_duplicates_are_filtered_and_a_retry_waits_for_its_backoff(tmp_path: Path) -> None:
    sched, clock = scheduler(tmp_path)
    assert sched.enqueue_request(Request("https://a.example/1"))
    assert not sched.enqueue_request(Request("https://a.example/1"))
    assert drain(sched) == ["https://a.example/1"]
    retry = Request("https://a.example/1", dont_filter=True, meta={meta.NOT_BEFORE: time.time() + 5})
    assert sched.enqueue_request(retry)
    clock.t += 4.5
    assert sched.next_request() is None and sched.has_pending_requests()
    clock.t += 0.6
    assert drain(sched) == ["https://a.example/1"]


def test_a_dead_site_is_dropped_with_a_counted_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sched, clock = scheduler(
        tmp_path,
        IMAGECRAWL_TUNING={"circuit_failures": 1, "circuit_max_probes": 1, "circuit_cooloff_seconds": 1},
        IMAGECRAWL_MAX_CONCURRENCY_PER_SITE=1,
    )
    for i in range(5):
        sched.enqueue_request(Request(f"https://dead.example/{i}"))
    sched.enqueue_request(Request("https://live.example/0"))
    gate = sched.runtime.gate
    assert sorted(drain(sched, answer=False)) == ["https://dead.example/0", "https://live.example/0"]
    for _ in range(2):  # the first request, then the probe after the cool-off
        gate.release("dead.example", clock.t, clock.t + 0.1)
        gate.feedback("dead.example", Feedback(Signal.CONNECTION, clock.t, answer=False), clock.t + 0.1)
        sched.released("dead.example")
        clock.t += 1.2
        got = drain(sched, answer=False)
        assert got in (["https://dead.example/1"], [])
    with caplog.at_level(logging.WARNING):
        clock.t += 5
        assert drain(sched) == []
    assert not sched.has_pending_requests()
    assert stats(sched, "imagecrawl/frontier/") == {
        "imagecrawl/frontier/dropped/dead_site": 3,
        "imagecrawl/frontier/dead_sites": 1,
    }
    assert not sched.enqueue_request(Request("https://dead.example/late"))
    assert sched.stats.get_value("imagecrawl/frontier/dropped/dead_site") == 4
    assert "Site dead.example does not answer" in caplog.text


def test_past_the_memory_limit_requests_wait_in_the_state_folder(tmp_path: Path) -> None:
    sched, clock = scheduler(
        tmp_path, IMAGECRAWL_TUNING={"frontier_memory_requests": 5}, IMAGECRAWL_MAX_RATE_PER_SITE=1000
    )
    sites = [f"s{n}.example" for n in range(4)]
    for i in range(10):
        for site in sites:
            spider = sched.spider
            sched.enqueue_request(Request(f"https://{site}/{i}", callback=spider.parse, errback=spider.failed))
    folder = tmp_path / "store" / ".imagecrawl" / "state" / "frontier"
    assert sched.frontier.on_disk > 0 and len(list(folder.glob("spill-*.sqlite3"))) == 1
    got: list[str] = []
    for _ in range(100):
        clock.t += 0.5
        got += drain(sched)
    assert len(got) == 40
    for site in sites:
        mine = [int(u.rsplit("/", 1)[1]) for u in got if f"//{site}/" in u]
        assert mine == sorted(mine, reverse=True) or mine == sorted(mine)  # the spider's order, kept
    sched.close("finished")
    assert list(folder.glob("spill-*.sqlite3")) == []
    assert sched.stats.get_value("imagecrawl/frontier/spilled") > 0


def test_jobdir_keeps_the_queues_over_a_clean_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobdir = tmp_path / "job"
    sched, _ = scheduler(tmp_path, JOBDIR=str(jobdir))
    for i in range(3):
        for site in ("a.example", "b.example"):
            spider = sched.spider
            sched.enqueue_request(Request(f"https://{site}/{i}", callback=spider.parse, errback=spider.failed))

    class Other:
        def cb(self, response: Response) -> None:
            pass

    sched.enqueue_request(Request("https://a.example/x", callback=Other().cb, priority=-1))  # cannot be saved
    assert len(drain(sched)) == 2
    assert len(sched) == 5
    with caplog.at_level(logging.ERROR):
        sched.close("shutdown")
    # a clean stop (the resume guard drops the marker that would make the next run discard the queue)
    signals_of = sched.crawler.signals
    asyncio.run(signals_of.send_catch_log_async(signals.spider_opened, spider=sched.spider))  # as the engine did
    asyncio.run(signals_of.send_catch_log_async(signals.spider_closed, spider=sched.spider, reason="shutdown"))
    assert "1 queued requests could not be saved in JOBDIR" in caplog.text
    # with JOBDIR every request that can be written waits on disk, as in Scrapy's own scheduler
    assert sched.stats.get_value("scheduler/enqueued/disk") == 6
    assert sched.stats.get_value("scheduler/enqueued/memory") == 1
    assert sched.stats.get_value("imagecrawl/frontier/unserializable") == 1
    assert (jobdir / JOBDIR_FILE).exists()

    resumed, clock = scheduler(tmp_path, JOBDIR=str(jobdir))
    assert len(resumed) == 4
    got: list[Request] = []
    for _ in range(10):
        clock.t += 1.1
        while (r := resumed.next_request()) is not None:
            got.append(r)
            ok(resumed, r)
    assert sorted(r.url for r in got) == [f"https://{s}/{i}" for s in ("a.example", "b.example") for i in (1, 2)]
    assert all(r.callback == resumed.spider.parse and r.errback == resumed.spider.failed for r in got)
    assert resumed.stats.get_value("scheduler/dequeued/disk") == 4
    # the seen-set came back too: nothing already queued is queued again
    assert not resumed.enqueue_request(Request("https://a.example/0"))


def test_wake_engine_reaches_the_pinned_scrapys_engine() -> None:
    """The one private access (``engine._slot.nextcall``), checked on the pinned Scrapy's own classes:
    a real engine has the attribute, and its slot's ``nextcall`` is what gets scheduled."""
    import inspect

    from scrapy.core.engine import ExecutionEngine, _Slot
    from scrapy.utils.reactor import CallLaterOnce

    assert "self._slot" in inspect.getsource(ExecutionEngine.__init__)
    assert "self._slot.nextcall.schedule()" in inspect.getsource(ExecutionEngine.crawl)
    scheduled: list[float] = []
    nextcall: CallLaterOnce[None] = CallLaterOnce(lambda: None)
    nextcall.schedule = lambda delay=0: scheduled.append(delay)  # type: ignore[method-assign]

    async def run() -> None:  # the slot's heartbeat wants an event loop
        class Engine:
            _slot = _Slot(True, nextcall, scheduler=None)  # type: ignore[arg-type]

        assert wake_engine(Engine())

    asyncio.run(run())
    assert scheduled == [0]
    assert not wake_engine(None)  # not crawling: nothing to wake


def test_without_the_pacing_middleware_the_frontier_does_not_pace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing would release what it lets out: it keeps the per-site order but asks no gate."""
    crawler = make_crawler(Spider, IMAGECRAWL_STORE=str(tmp_path / "store"), IMAGECRAWL_MAX_RATE_PER_SITE=1)
    crawler.spider = Spider.from_crawler(crawler)
    crawler.stats.open_spider()
    sched = FrontierScheduler.from_crawler(crawler)
    sched.call_later = Timers()
    with caplog.at_level(logging.WARNING):
        sched.open(crawler.spider)
    assert "pacing middleware is not in DOWNLOADER_MIDDLEWARES" in caplog.text
    for i in range(3):
        sched.enqueue_request(Request(f"https://a.example/{i}"))
    got = [sched.next_request() for _ in range(3)]
    assert all(r is not None and meta.PACING_GRANTED not in r.meta for r in got)
