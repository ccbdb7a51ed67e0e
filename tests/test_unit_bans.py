"""The ban middleware driven directly, on the pacing runtime it shares with the pacing middleware:
bursts of 401/403/429, challenge pages and soft bans (no healthy marker) move a site to ``banned``;
ban answers are fetched again only once the site is banned; the cool-down ends in a probe that
resumes the site or, failed too often, abandons it and closes the crawl."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse, Response
from twisted.internet.error import ConnectionLost

from imagecrawl import meta
from imagecrawl.pacing import BanState
from imagecrawl.pacing.downloadermiddlewares.bans import BanMiddleware
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from tests.crawlers import make_crawler

SITE = "gallery.example"
FAST = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": 1000,
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 1000,
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 4,
}


class StubEngine:
    """What the pacing runtime reads of a running engine (see tests/test_unit_pacing.py)."""

    def __init__(self) -> None:
        self.running = True
        self.spider = object()
        self._slot = SimpleNamespace(closing=None, nextcall=None)
        self.downloader = SimpleNamespace(active=set(), slots={})
        self.closed: list[str] = []

    async def close_spider_async(self, reason: str) -> None:
        self.closed.append(reason)


def bans(**overrides: Any) -> tuple[Crawler, BanMiddleware]:
    crawler = make_crawler(**{**FAST, **overrides})
    crawler.stats.open_spider()
    crawler.spider = crawler._create_spider("unit")
    crawler.engine = StubEngine()  # type: ignore[assignment]
    return crawler, BanMiddleware.from_crawler(crawler)


def subtree(crawler: Crawler, prefix: str = "imagecrawl/bans") -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefix)}


def answer(
    mw: BanMiddleware,
    status: int,
    body: bytes = b"<html><body>ok</body></html>",
    headers: dict[str, str] | None = None,
    html: bool = True,
    **request_meta: Any,
) -> tuple[Request, Request | Response]:
    """A paced request (``SENT_AT`` set, as the pacing gate does) and what the middleware made of its answer."""
    request = Request(
        f"https://{SITE}/page/{time.monotonic_ns()}", meta={meta.SENT_AT: time.monotonic(), **request_meta}
    )
    cls = HtmlResponse if html else Response
    response = cls(request.url, status=status, body=body, headers=headers or {}, request=request)
    return request, mw.process_response(request, response)


def test_a_burst_of_403s_bans_the_site_and_only_then_requeues() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_burst": 5, "ban_cooldown_seconds": 60})
    for n in range(1, 5):
        request, result = answer(mw, 403)
        assert isinstance(result, Response), "a 403 before any ban is the page's own answer"
        assert mw.runtime.gate.state_of(SITE) is BanState.SUSPECT, n
    request, result = answer(mw, 403)
    assert mw.runtime.gate.state_of(SITE) is BanState.BANNED
    assert isinstance(result, Request), "once banned, the answer says nothing about the page: fetch it later"
    assert result.url == request.url and result.meta["retry_times"] == 1
    assert result.meta[meta.NOT_BEFORE] > time.time()
    assert 59 <= mw.runtime.gate.peek_wait(SITE, time.monotonic()) <= 60
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/403": 5,
        "imagecrawl/bans/suspect": 1,
        "imagecrawl/bans/banned": 1,
    }
    assert subtree(crawler, "imagecrawl/retry") == {
        "imagecrawl/retry/count": 1,
        "imagecrawl/retry/reason_count/ban-403": 1,
    }
    assert mw.runtime.snapshot()[SITE]["state"] == "cooldown"


def test_401_and_403_count_towards_one_burst() -> None:
    _, mw = bans(IMAGECRAWL_TUNING={"ban_burst": 3})
    answer(mw, 401)
    answer(mw, 403)
    assert mw.runtime.gate.state_of(SITE) is BanState.SUSPECT
    answer(mw, 401)
    assert mw.runtime.gate.state_of(SITE) is BanState.BANNED


def test_a_healthy_answer_clears_suspicion() -> None:
    crawler, mw = bans()
    answer(mw, 403)
    assert mw.runtime.gate.state_of(SITE) is BanState.SUSPECT
    _, result = answer(mw, 200)
    assert isinstance(result, Response)
    assert mw.runtime.gate.state_of(SITE) is BanState.HEALTHY
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/403": 1,
        "imagecrawl/bans/suspect": 1,
        "imagecrawl/bans/cleared": 1,
    }


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (403, b"<html><title>Just a moment...</title></html>", {}),
        (200, b'<html><script src="/cdn-cgi/challenge-platform/x.js"></script></html>', {}),
        (403, b"blocked", {"cf-mitigated": "challenge"}),
    ],
    ids=["title", "script", "header"],
)
def test_a_challenge_page_bans_at_once(status: int, body: bytes, headers: dict[str, str]) -> None:
    crawler, mw = bans()
    _, result = answer(mw, status, body, headers)
    assert mw.runtime.gate.state_of(SITE) is BanState.BANNED
    assert isinstance(result, Request) and result.meta["retry_times"] == 1
    assert subtree(crawler) == {"imagecrawl/bans/evidence/challenge": 1, "imagecrawl/bans/banned": 1}
    assert crawler.stats.get_value("imagecrawl/retry/reason_count/ban-challenge") == 1


def test_429s_ban_after_their_own_burst_and_are_left_to_the_retry_middleware() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_burst_429": 3})
    results = [answer(mw, 429)[1] for _ in range(3)]
    assert mw.runtime.gate.state_of(SITE) is BanState.BANNED
    assert all(isinstance(r, Response) for r in results)  # never re-queued here: retry handles 429s
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/429": 3,
        "imagecrawl/bans/suspect": 1,
        "imagecrawl/bans/banned": 1,
    }


def test_a_healthy_marker_in_meta_turns_pages_without_it_into_soft_bans() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_soft_threshold": 3})
    good = b'<div class="gallery-item">1</div>'
    answer(mw, 200, good, **{meta.HEALTHY_MARKER: r"gallery-item"})
    assert mw.runtime.gate.state_of(SITE) is BanState.HEALTHY
    for _ in range(3):
        answer(mw, 200, b"<html>please log in</html>", **{meta.HEALTHY_MARKER: re.compile("gallery-item")})
    assert mw.runtime.gate.state_of(SITE) is BanState.BANNED
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/soft": 3,
        "imagecrawl/bans/suspect": 1,
        "imagecrawl/bans/banned": 1,
    }


def test_healthy_markers_per_site_from_settings_and_binary_bodies_are_not_judged() -> None:
    crawler, mw = bans(IMAGECRAWL_BAN_HEALTHY_MARKERS={SITE: "gallery-item"})
    answer(mw, 200, b"\x89PNG\r\n\x1a\n...", html=False)  # an image: no text to search
    assert subtree(crawler) == {}
    answer(mw, 200, b"<html>nothing here</html>")
    assert subtree(crawler) == {"imagecrawl/bans/evidence/soft": 1, "imagecrawl/bans/suspect": 1}


def test_unpaced_answers_are_not_judged() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_burst": 1})
    request = Request(f"https://{SITE}/cached")  # no SENT_AT: a cache hit, a data: URL, dont_pace
    response = Response(request.url, status=403, request=request)
    assert mw.process_response(request, response) is response
    assert mw.runtime.gate.sites == {} and subtree(crawler) == {}


def test_answers_sent_before_the_ban_are_stale_and_dont_retry_is_honoured() -> None:
    crawler, mw = bans()
    in_flight = time.monotonic()
    answer(mw, 403, b"<title>Just a moment...</title>")
    banned_until = mw.runtime.gate.sites[SITE].ban.banned_until
    request = Request(f"https://{SITE}/late", meta={meta.SENT_AT: in_flight})
    mw.process_response(request, HtmlResponse(request.url, status=403, body=b"<title>Just a moment...</title>"))
    assert mw.runtime.gate.sites[SITE].ban.banned_until == banned_until  # no second, longer ban
    assert crawler.stats.get_value("imagecrawl/bans/banned") == 1
    _, result = answer(mw, 403, dont_retry=True)
    assert isinstance(result, Response)


def test_cool_down_probe_then_recovery() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_cooldown_seconds": 0.2})
    pacing = PacingMiddleware.from_crawler(crawler)
    assert pacing.runtime is mw.runtime
    answer(mw, 403, b"<title>Just a moment...</title>")
    probe = Request(f"https://{SITE}/probe")
    started = time.monotonic()
    asyncio.run(pacing.process_request(probe))  # held through the cool-down, then sent as the probe
    assert time.monotonic() - started >= 0.15
    assert mw.runtime.gate.state_of(SITE) is BanState.PROBING
    response = HtmlResponse(probe.url, status=200, body=b"<html>fine</html>", request=probe)
    result = mw.process_response(probe, pacing.process_response(probe, response))
    assert result is response
    assert mw.runtime.gate.state_of(SITE) is BanState.HEALTHY
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/challenge": 1,
        "imagecrawl/bans/banned": 1,
        "imagecrawl/bans/probing": 1,
        "imagecrawl/bans/probes": 1,
        "imagecrawl/bans/recovered": 1,
    }


def test_failed_probes_abandon_the_site_drop_its_requests_and_close_the_crawl() -> None:
    crawler, mw = bans(IMAGECRAWL_TUNING={"ban_cooldown_seconds": 0.1, "ban_max_probes": 1})
    pacing = PacingMiddleware.from_crawler(crawler)
    engine: StubEngine = crawler.engine  # type: ignore[assignment]

    async def run() -> None:
        answer(mw, 403, b"<title>Just a moment...</title>")
        probe = Request(f"https://{SITE}/probe")
        await pacing.process_request(probe)
        pacing.process_exception(probe, ConnectionLost())
        mw.process_exception(probe, ConnectionLost())  # no answer: a failed probe
        assert mw.runtime.gate.state_of(SITE) is BanState.ABANDONED
        await asyncio.sleep(0)  # the close is scheduled, not awaited
        with pytest.raises(IgnoreRequest, match="abandoned"):
            await pacing.process_request(Request(f"https://{SITE}/next"))

    asyncio.run(run())
    assert engine.closed == ["banned"]
    assert subtree(crawler) == {
        "imagecrawl/bans/evidence/challenge": 1,
        "imagecrawl/bans/banned": 1,
        "imagecrawl/bans/probing": 1,
        "imagecrawl/bans/probes": 1,
        "imagecrawl/bans/abandoned": 1,
        "imagecrawl/bans/dropped": 1,
    }


def test_switches() -> None:
    with pytest.raises(NotConfigured, match="IMAGECRAWL_BANS_ENABLED"):
        BanMiddleware.from_crawler(make_crawler(IMAGECRAWL_BANS_ENABLED=False))
    with pytest.raises(NotConfigured, match="pacing"):
        BanMiddleware.from_crawler(make_crawler(IMAGECRAWL_PACING_ENABLED=False))
