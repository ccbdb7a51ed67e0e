"""The pacing middleware driven directly (no network, no engine loop): grants and their meta keys,
Retry-After closing the site's gate, a retry's ``imagecrawl_not_before`` holding it back, requests the
frontier let out passing at once, policy fetches (robots.txt) never blocked by the requests waiting for
them, Crawl-delay from the crawl's registry (filled by the robots.txt middleware),
feedback from errors, and the switches."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.internet.error import TimeoutError as TxTimeoutError

from imagecrawl import Addon, meta
from imagecrawl.optout.downloadermiddlewares.robots import crawl_delays
from imagecrawl.pacing.config import PacingConfig
from imagecrawl.pacing.downloadermiddlewares.pacing import CLOSE_LOG_SITES, PacingMiddleware, PacingRuntime, runtime_for
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import DEFAULTS
from tests.crawlers import Clock, make_crawler

#: fast enough that spacing never slows a test down; each test that needs a wait makes its own
FAST = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": 1000,
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 1000,
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
}


#: about the most FAST's rate (1000 requests/s, jitter up to 10 %) spaces two requests of one site
SPACING = 0.0012


class Wakeups:
    def __init__(self) -> None:
        self.count = 0

    def schedule(self) -> None:
        self.count += 1


class StubEngine:
    """What the pacing middleware reads of a running engine: ``running``, the slot's ``closing`` and
    ``nextcall``, the downloader's ``active`` set and ``slots``."""

    def __init__(self) -> None:
        self.running = True
        self._slot = SimpleNamespace(closing=None, nextcall=Wakeups())
        self.downloader = SimpleNamespace(active=set(), slots={})
        self.spider = None
        self.closed: list[str] = []

    async def close_spider_async(self, reason: str) -> None:
        self.closed.append(reason)


def pacing(engine: bool = False, **overrides: Any) -> tuple[Crawler, PacingMiddleware]:
    """The middleware on a clock the test owns: its pauses move the clock instead of sleeping."""
    crawler = make_crawler(**{**FAST, **overrides})
    crawler.stats.open_spider()
    if engine:
        crawler.engine = StubEngine()  # type: ignore[assignment]
    mw = PacingMiddleware.from_crawler(crawler)
    clock = Clock()
    mw.runtime.clock, mw.runtime.wall, mw.runtime.pause = clock, clock.time, clock.sleep
    return crawler, mw


def subtree(crawler: Crawler, prefix: str) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefix)}


def grant(mw: PacingMiddleware, request: Request) -> float:
    """Run ``process_request`` to completion; returns the seconds it waited (on the middleware's clock)."""
    started = mw.runtime.clock()
    asyncio.run(mw.process_request(request))
    return mw.runtime.clock() - started


def test_grant_sets_site_sent_at_and_holds_a_slot_until_the_response() -> None:
    crawler, mw = pacing()
    request = Request("https://img.example/a.png")
    assert grant(mw, request) == 0
    assert request.meta[meta.SITE] == "img.example"
    assert request.meta[meta.SENT_AT] == mw.runtime.clock()
    assert request.meta[meta.PACING_GRANTED] is True
    state = mw.gate.sites["img.example"]
    assert (state.in_flight, state.granted) == (1, 1)
    response = Response(request.url, status=200, request=request)
    assert mw.process_response(request, response) is response
    assert meta.PACING_GRANTED not in request.meta
    assert state.in_flight == 0
    assert subtree(crawler, "imagecrawl/") == {"imagecrawl/pacing/requests": 1}
    # A second answer for the same request (a copy) releases nothing twice.
    mw.process_response(request, response)
    assert state.in_flight == 0


def test_one_runtime_per_crawler_shared_with_the_monitor() -> None:
    crawler, mw = pacing()
    assert runtime_for(crawler) is mw.runtime
    assert crawl_context(crawler).find(PacingRuntime) is mw.runtime
    assert mw.runtime in crawl_context(crawler).snapshot_providers
    assert runtime_for(make_crawler()) is not mw.runtime


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_recorded_counted_and_closes_the_gate(status: int) -> None:
    crawler, mw = pacing()
    request = Request("https://api.example/page?1")
    grant(mw, request)
    response = Response(request.url, status=status, headers={"Retry-After": "5"}, request=request)
    mw.process_response(request, response)
    assert 5.0 <= request.meta[meta.RETRY_AFTER] <= 5.5
    assert subtree(crawler, "imagecrawl/") == {
        "imagecrawl/pacing/requests": 1,
        f"imagecrawl/pacing/retry_after_received/{status}": 1,
        "imagecrawl/pacing/retry_after": 1,
        f"imagecrawl/pacing/decrease/{status}": 1,
    }
    now = mw.runtime.clock()
    assert 4.9 <= mw.gate.peek_wait("api.example", now) <= 5.5
    assert mw.gate.acquire("api.example", now) > 4.9  # refused for that long
    assert mw.gate.peek_wait("other.example", now) == 0.0
    snapshot = mw.runtime.snapshot()["api.example"]
    assert snapshot["state"] == "paused"
    assert snapshot["paused_until"] == pytest.approx(mw.runtime.wall() + mw.gate.peek_wait("api.example", now))


def test_429_without_retry_after_slows_down_but_pauses_nothing() -> None:
    crawler, mw = pacing()
    request = Request("https://api.example/page?1")
    grant(mw, request)
    rate_before = mw.gate.sites["api.example"].controller.rate
    mw.process_response(request, Response(request.url, status=429, request=request))
    assert meta.RETRY_AFTER not in request.meta
    assert subtree(crawler, "imagecrawl/") == {"imagecrawl/pacing/requests": 1, "imagecrawl/pacing/decrease/429": 1}
    assert mw.gate.sites["api.example"].controller.rate < rate_before
    assert mw.gate.sites["api.example"].paused_until == 0.0


def test_absurd_retry_after_is_capped_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    crawler, mw = pacing(IMAGECRAWL_TUNING={"retry_after_max_seconds": 30})
    request = Request("https://api.example/page?1")
    grant(mw, request)
    with caplog.at_level("WARNING"):
        mw.process_response(request, Response(request.url, status=429, headers={"Retry-After": "99999"}))
    assert 30 <= request.meta[meta.RETRY_AFTER] <= 31
    assert crawler.stats.get_value("imagecrawl/pacing/retry_after_capped") == 1
    assert "capped at 30s" in caplog.text


def test_retry_after_holds_the_next_request_of_that_site_only() -> None:
    _, mw = pacing(engine=True)
    first = Request("https://api.example/1")
    grant(mw, first)
    mw.process_response(first, Response(first.url, status=503, headers={"Retry-After": "0.3"}, request=first))
    pause = first.meta[meta.RETRY_AFTER]
    assert grant(mw, Request("https://elsewhere.example/1")) == 0
    waited = grant(mw, nxt := Request("https://api.example/2"))
    assert waited == pytest.approx(pause, abs=0.002)
    assert nxt.meta[meta.PACING_GRANTED] is True


def test_not_before_in_the_future_waits_then_goes() -> None:
    crawler, mw = pacing(engine=True)
    request = Request("https://img.example/a.png", meta={meta.NOT_BEFORE: mw.runtime.wall() + 0.3})
    waited = grant(mw, request)
    assert waited == pytest.approx(0.3)
    assert request.meta[meta.PACING_GRANTED] is True
    assert crawler.stats.get_value("imagecrawl/pacing/wait_ms") == 300
    mw.process_response(request, Response(request.url, status=200, request=request))
    # a not-before in the past does not wait at all
    past = Request("https://img.example/b.png", meta={meta.NOT_BEFORE: mw.runtime.wall() - 10})
    assert grant(mw, past) <= SPACING  # only the site's spacing after a.png


def test_a_request_the_frontier_let_out_passes_at_once_and_is_stamped_when_it_leaves() -> None:
    crawler, mw = pacing(IMAGECRAWL_MAX_RATE_PER_SITE=1, IMAGECRAWL_PACING_START_RATE_PER_SECOND=0.5)
    gate = mw.gate
    granted_at = mw.runtime.clock()
    assert gate.acquire("img.example", granted_at) == 0  # what the frontier does
    request = Request("https://img.example/a.png", meta={meta.PACING_GRANTED: True, meta.SENT_AT: granted_at})
    mw.runtime.clock.advance(0.5)  # it waited for robots.txt
    assert grant(mw, request) == 0  # the gate would say 2 s for a new request: this one has its slot
    assert request.meta[meta.SENT_AT] == granted_at + 0.5  # stamped when it leaves
    assert gate.sites["img.example"].in_flight == 1
    mw.process_response(request, Response(request.url, status=200, request=request))
    assert gate.sites["img.example"].in_flight == 0
    assert crawler.stats.get_value("imagecrawl/pacing/requests") is None  # counted by the frontier's grant


def test_a_request_that_would_wait_long_to_leave_goes_back_to_the_frontier() -> None:
    """Let out before its robots.txt was read, it learns a Crawl-delay: the wait is the frontier's,
    where it holds no CONCURRENT_REQUESTS slot. A short wait is slept here."""
    crawler, mw = pacing(engine=True, IMAGECRAWL_TUNING={"pacing_jitter": 0})
    mw.runtime.frontier = object()  # a frontier scheduler is in use
    gate, site = mw.gate, "img.example"
    granted_at = mw.runtime.clock()
    assert gate.acquire(site, granted_at) == 0  # what the frontier does
    gate.set_floor_interval(site, 5.0)  # robots.txt said Crawl-delay: 5 ...
    assert gate.acquire(site, granted_at + 0.1, policy=True) == 0  # ... and tdmrep.json went
    request = Request("https://img.example/a.png", meta={meta.PACING_GRANTED: True, meta.SENT_AT: granted_at, "x": 1})
    mw.runtime.clock.advance(0.2)
    back = asyncio.run(mw.process_request(request))
    assert isinstance(back, Request) and back is not request
    assert back.url == request.url and back.dont_filter  # its fingerprint was seen once already
    assert back.meta[meta.PACING_GRANTED] is True and back.meta["x"] == 1  # the scheduler frees the slot
    assert crawler.stats.get_value("imagecrawl/frontier/given_back") == 1
    # 0.3 s before its turn: it waits here
    mw.runtime.clock.advance(gate.peek_wait(site, mw.runtime.clock()) - 0.3)
    assert asyncio.run(mw.process_request(request)) is None
    assert crawler.stats.get_value("imagecrawl/frontier/given_back") == 1
    # without a frontier (the downloader is the only place to wait) it waits here too
    mw.runtime.frontier = None
    late = Request("https://img.example/b.png", meta={meta.PACING_GRANTED: True, meta.SENT_AT: granted_at})
    gate.set_floor_interval(site, 2.0)
    assert asyncio.run(mw.process_request(late)) is None


def test_a_policy_fetch_goes_while_the_request_waiting_for_it_holds_the_only_slot() -> None:
    """A site's first request holds its one slot while its robots.txt is fetched: the fetch must not
    wait for that slot (it would wait forever), but it still takes its turn in the site's spacing."""
    _, mw = pacing(engine=True, IMAGECRAWL_MAX_CONCURRENCY_PER_SITE=1, IMAGECRAWL_TUNING={"pacing_jitter": 0})
    gate = mw.gate
    assert gate.acquire("img.example", mw.runtime.clock()) == 0
    robots = Request("https://img.example/robots.txt", meta={meta.KIND: "robots"})
    took = grant(mw, robots)
    assert took <= SPACING  # its turn in the site's spacing, no slot
    assert robots.meta[meta.PACING_GRANTED] == "policy"
    state = gate.sites["img.example"]
    assert state.in_flight == 1  # the policy fetch took no slot
    assert gate.peek_wait("img.example", mw.runtime.clock()) > 0  # but it used the site's next turn
    mw.process_response(robots, Response(robots.url, status=200, request=robots))
    assert state.in_flight == 1  # and releases none
    page = Request("https://img.example/page")
    with pytest.raises(TimeoutError):  # an ordinary request waits for the slot

        async def bounded() -> None:
            await asyncio.wait_for(mw.process_request(page), 0.3)

        asyncio.run(bounded())


def test_a_policy_fetchs_answer_tells_latency_but_grows_no_rate() -> None:
    """robots.txt goes when the site's requests need it, not at the site's pace: its healthy answer
    must not grow the start-up rate (the first images then left faster than anything had tried),
    while the same answer to an ordinary request does."""

    def answered(url: str, **request_meta: Any) -> tuple[float, float, float | None]:
        _, mw = pacing(engine=True, IMAGECRAWL_MAX_RATE_PER_SITE=100, IMAGECRAWL_PACING_START_RATE_PER_SECOND=2)
        clock = mw.runtime.clock
        assert isinstance(clock, Clock)
        request = Request(url, meta=request_meta)
        grant(mw, request)
        controller = mw.gate.sites["img.example"].controller
        before = controller.rate
        controller.rate_limited = True  # the rate held a request back meanwhile
        clock.advance(DEFAULTS.pacing_step_seconds / 2)
        request.meta["download_latency"] = 0.05
        mw.process_response(request, Response(url, status=200, request=request))
        return before, controller.rate, controller.srtt

    before, after, srtt = answered("https://img.example/robots.txt", **{meta.KIND: "robots"})
    assert after == before
    assert srtt == pytest.approx(0.05)  # its latency counts
    before, after, _ = answered("https://img.example/a.png")
    assert after > before


def test_a_closing_crawl_drops_waiting_requests() -> None:
    crawler, mw = pacing(engine=True)
    crawler.engine._slot.closing = object()  # type: ignore[attr-defined]
    with pytest.raises(IgnoreRequest, match="closing"):
        grant(mw, Request("https://img.example/a.png", meta={meta.NOT_BEFORE: mw.runtime.wall() + 5}))
    assert mw.runtime.waiting == 0


def test_rate_spacing_holds_the_second_request() -> None:
    _, mw = pacing(
        engine=True,
        IMAGECRAWL_MAX_RATE_PER_SITE=4,
        IMAGECRAWL_PACING_START_RATE_PER_SECOND=4,
        IMAGECRAWL_TUNING={"pacing_jitter": 0},
    )
    first, second = Request("https://img.example/1"), Request("https://img.example/2")
    grant(mw, first)
    mw.process_response(first, Response(first.url, status=200, request=first))
    assert 0.25 <= mw.gate.peek_wait("img.example", mw.runtime.clock()) <= 0.26  # 4 requests/s
    assert 0.25 <= grant(mw, second) <= 0.26


def test_dont_pace_and_non_http_requests_skip_the_gate() -> None:
    crawler, mw = pacing()
    for request in (
        Request("https://img.example/a.png", meta={meta.DONT_PACE: True}),
        Request("data:,hello"),
    ):
        grant(mw, request)
        assert not {meta.SITE, meta.SENT_AT, meta.PACING_GRANTED} & set(request.meta)
        assert mw.process_response(request, Response(request.url, status=429, headers={"Retry-After": "9"}))
        assert meta.RETRY_AFTER not in request.meta
    assert mw.gate.sites == {}
    assert subtree(crawler, "imagecrawl/") == {}


def test_disabled_is_not_configured() -> None:
    crawler = make_crawler(IMAGECRAWL_PACING_ENABLED=False)
    with pytest.raises(NotConfigured, match="IMAGECRAWL_PACING_ENABLED"):
        PacingMiddleware.from_crawler(crawler)


def test_site_key_domain_paces_subdomains_together() -> None:
    _, mw = pacing(engine=True, IMAGECRAWL_PACING_SITE_KEY="domain")
    a, b = Request("https://cdn1.pics.example.co.uk/a.png"), Request("https://www.pics.example.co.uk/")
    grant(mw, a)
    # one site: the second request waits for the first one's slot (a new site starts at concurrency 1)
    assert mw.gate.acquire("example.co.uk", mw.runtime.clock()) > 0
    mw.process_response(a, Response(a.url, status=200, request=a))
    grant(mw, b)
    assert a.meta[meta.SITE] == b.meta[meta.SITE] == "example.co.uk"
    assert mw.gate.sites["example.co.uk"].granted == 2
    assert mw.runtime.netlocs["example.co.uk"] == {"cdn1.pics.example.co.uk", "www.pics.example.co.uk"}


def test_download_errors_release_the_slot_and_count_as_congestion() -> None:
    crawler, mw = pacing()
    request = Request("https://img.example/a.png")
    grant(mw, request)
    mw.process_exception(request, TxTimeoutError())
    assert mw.gate.sites["img.example"].in_flight == 0
    assert meta.PACING_GRANTED not in request.meta
    assert crawler.stats.get_value("imagecrawl/pacing/decrease/timeout") == 1
    mw.process_exception(request, TxTimeoutError())  # not granted any more: no second feedback
    assert crawler.stats.get_value("imagecrawl/pacing/decrease/timeout") == 1


def test_crawl_delay_from_the_crawls_registry_becomes_the_sites_floor() -> None:
    crawler, mw = pacing()
    request = Request("https://slow.example/a.png")
    crawl_delays(crawler).set("slow.example", 2.5)  # as the robots.txt middleware stores it for our token
    assert mw.gate.sites["slow.example"].controller.floor_interval == 2.5
    assert crawler.stats.get_value("imagecrawl/pacing/crawl_delay") == 1
    grant(mw, request)
    mw.process_response(request, Response(request.url, status=200, request=request))
    # counted from the response: the Crawl-delay, stretched by the gate's margin and jitter (never shortened)
    stretch = 1.01 + DEFAULTS.pacing_jitter
    assert 2.5 <= mw.gate.peek_wait("slow.example", mw.runtime.clock()) <= 2.5 * stretch + SPACING


def test_crawl_delay_ignored_when_switched_off() -> None:
    crawler, mw = pacing(IMAGECRAWL_TUNING={"pacing_obey_crawl_delay": False})
    crawl_delays(crawler).set("slow.example", 2.5)
    assert mw.gate.sites == {}
    assert crawler.stats.get_value("imagecrawl/pacing/crawl_delay") is None


@pytest.mark.parametrize(("mine", "scrapys", "expected"), [(6, 2, 2), (2, 9, 2), (3, 3, 3), (16, 1, 1)])
def test_the_per_site_concurrency_is_the_smaller_of_the_two_caps(mine: int, scrapys: int, expected: int) -> None:
    """Scrapy's CONCURRENT_REQUESTS_PER_DOMAIN keeps its meaning (at most that many requests to one site at
    once): the gate's cap is the smaller of it and IMAGECRAWL_MAX_CONCURRENCY_PER_SITE, and the add-on
    leaves the setting as given (Scrapy's download slot never holds back what the gate let out)."""
    crawler, mw = pacing(IMAGECRAWL_MAX_CONCURRENCY_PER_SITE=mine, CONCURRENT_REQUESTS_PER_DOMAIN=scrapys)
    assert crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == scrapys
    assert mw.config.aimd.max_concurrency == expected


@pytest.mark.parametrize("mine", [1, 4, 9])
def test_unset_scrapy_per_domain_concurrency_follows_the_site_cap(mine: int) -> None:
    """Raising IMAGECRAWL_MAX_CONCURRENCY_PER_SITE alone is not held at the default of Scrapy's setting."""
    crawler = get_crawler(settings_dict={"ADDONS": {Addon: 100}, "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": mine})
    assert crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == mine
    assert PacingConfig.from_settings(crawler.settings).aimd.max_concurrency == mine


def test_spider_closed_records_the_number_of_sites() -> None:
    crawler, mw = pacing()
    grant(mw, Request("https://a.example/"))
    grant(mw, Request("https://b.example/"))
    mw._spider_closed("finished")
    assert crawler.stats.get_value("imagecrawl/pacing/sites") == 2


def test_a_broad_crawl_logs_a_few_sites_pacing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of sites do not make thousands of INFO lines at close: the first few, then one count."""
    _crawler, mw = pacing()
    for n in range(CLOSE_LOG_SITES + 5):
        grant(mw, Request(f"https://s{n}.example/"))
    with caplog.at_level(logging.INFO, logger="imagecrawl"):
        mw._spider_closed("finished")
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum(m.startswith("Pacing of s") for m in info) == CLOSE_LOG_SITES
    assert "Pacing of 5 more sites at close: logged at DEBUG" in info


def test_a_redirect_is_paced_as_the_site_it_is_sent_to() -> None:
    """Scrapy's redirect copies the meta of the origin; the target's site comes from its own URL."""
    crawler, mw = pacing()
    origin = Request("http://origin.example/a")
    grant(mw, origin)
    assert origin.meta[meta.SITE] == "origin.example"
    redirected = origin.replace(url="http://target.example:8080/b")  # meta copied, as RedirectMiddleware does
    assert redirected.meta[meta.SITE] == "origin.example"
    # RedirectMiddleware copies the meta after the pacing middleware took the grant off the answer
    redirected.meta.pop(meta.PACING_GRANTED)
    grant(mw, redirected)
    assert redirected.meta[meta.SITE] == "target.example"
    runtime = runtime_for(crawler)
    assert runtime.gate.sites["target.example"].in_flight == 1
    assert runtime.gate.sites["origin.example"].in_flight == 1  # the origin's slot is the origin's
    assert runtime.netlocs["target.example"] == {"target.example:8080"}


def test_a_request_held_by_the_concurrency_window_goes_as_soon_as_a_slot_is_released() -> None:
    """No polling for a free slot: the release of a request of the site wakes the head of its line."""
    _, mw = pacing(engine=True, IMAGECRAWL_MAX_CONCURRENCY_PER_SITE=1)
    first, second = Request("https://img.example/1"), Request("https://img.example/2")

    async def turns(n: int = 5) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def run() -> list[float]:
        await mw.process_request(first)
        task = asyncio.create_task(mw.process_request(second))
        await turns()
        assert not task.done()  # the one slot is taken
        assert mw.gate.sites["img.example"].held_by_window
        paused = list(mw.runtime.clock.slept)
        mw.process_response(first, Response(first.url, status=200, request=first))
        await turns()
        assert task.done()  # a few turns of the event loop after the release, not a re-check later
        await task
        return mw.runtime.clock.slept[len(paused) :]

    assert sum(asyncio.run(run())) <= SPACING  # the release woke it: no pause but the site's spacing
    assert second.meta[meta.PACING_GRANTED] is True
