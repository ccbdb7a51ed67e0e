"""The backoff retry middleware driven directly: a retry is a copy that the pacing gate holds back
(``imagecrawl_not_before``: exponential backoff with jitter, at least the site's Retry-After; a 429 only
its Retry-After, as the gate has slowed the site down), built by
Scrapy's ``get_retry_request`` with its counting and priority, given up after the configured times."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import DownloadTimeoutError, NotConfigured
from scrapy.http import Response
from twisted.internet.error import ConnectionLost

from imagecrawl import meta
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from imagecrawl.pacing.downloadermiddlewares.retry import BackoffRetryMiddleware
from tests.crawlers import make_crawler


def retry_mw(**overrides: Any) -> tuple[Crawler, BackoffRetryMiddleware]:
    crawler = make_crawler(**overrides)
    crawler.stats.open_spider()
    crawler.spider = crawler._create_spider("unit")  # get_retry_request logs and counts through the spider
    return crawler, BackoffRetryMiddleware.from_crawler(crawler)


def subtree(crawler: Crawler, prefix: str = "imagecrawl/retry") -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefix)}


def attempt(url: str = "https://api.example/page?2", **extra: Any) -> Request:
    """A request as it comes back from the pacing middleware: with the keys of its attempt."""
    return Request(
        url,
        priority=5,
        meta={
            meta.KIND: "page",
            meta.SITE: "api.example",
            meta.SENT_AT: time.monotonic(),
            meta.PACING_GRANTED: True,
            **extra,
        },
    )


def test_503_gives_a_later_copy_for_the_gate() -> None:
    crawler, mw = retry_mw(IMAGECRAWL_TUNING={"retry_backoff_seconds": 2.0})
    request = attempt(**{meta.RETRY_AFTER: None})
    before = time.time()
    retry = mw.process_response(request, Response(request.url, status=503, request=request))
    after = time.time()
    assert isinstance(retry, Request) and retry is not request
    assert retry.url == request.url
    assert retry.meta["retry_times"] == 1
    # backoff 2 s for the first retry, "equal jitter": between half and all of it
    assert before + 1.0 <= retry.meta[meta.NOT_BEFORE] <= after + 2.0
    assert retry.dont_filter is True
    assert retry.priority == 4  # RETRY_PRIORITY_ADJUST = -1
    assert not {meta.SENT_AT, meta.PACING_GRANTED, meta.RETRY_AFTER} & set(retry.meta)
    assert retry.meta[meta.KIND] == "page" and retry.meta[meta.SITE] == "api.example"
    assert meta.NOT_BEFORE not in request.meta  # the original is left alone
    assert subtree(crawler) == {"imagecrawl/retry/count": 1, "imagecrawl/retry/reason_count/503": 1}
    assert crawler.stats.get_value("retry/count") is None  # never Scrapy's own keys


@pytest.mark.parametrize(("retry_times", "low", "high"), [(1, 2.0, 4.0), (2, 4.0, 8.0), (6, 5.0, 10.0)])
def test_backoff_doubles_per_attempt_up_to_the_maximum(retry_times: int, low: float, high: float) -> None:
    _, mw = retry_mw(
        IMAGECRAWL_TUNING={"retry_backoff_seconds": 2.0, "retry_max_backoff_seconds": 10.0}, RETRY_TIMES=10
    )
    request = attempt(retry_times=retry_times)
    before = time.time()
    retry = mw.process_response(request, Response(request.url, status=502))
    assert isinstance(retry, Request)
    assert retry.meta["retry_times"] == retry_times + 1
    assert before + low <= retry.meta[meta.NOT_BEFORE] <= time.time() + high


def test_given_up_after_imagecrawl_retry_times() -> None:
    crawler, mw = retry_mw(RETRY_TIMES=2)
    request: Request = attempt()
    for _ in range(2):
        result = mw.process_response(request, Response(request.url, status=503))
        assert isinstance(result, Request)
        request = result
    final = Response(request.url, status=503)
    assert mw.process_response(request, final) is final
    assert subtree(crawler) == {
        "imagecrawl/retry/count": 2,
        "imagecrawl/retry/reason_count/503": 2,
        "imagecrawl/retry/max_reached": 1,
        "imagecrawl/retry/max_reached/503": 1,
    }


def test_retry_times_defaults_to_scrapys_and_meta_max_retry_times_wins() -> None:
    crawler, mw = retry_mw(RETRY_TIMES=1)
    assert mw.config.times == 1
    assert isinstance(mw.process_response(attempt(), Response("https://api.example/", status=500)), Request)
    assert mw.process_response(attempt(retry_times=1), Response("https://api.example/", status=500)).status == 500
    once_more = attempt(retry_times=1, max_retry_times=3)
    assert isinstance(mw.process_response(once_more, Response("https://api.example/", status=500)), Request)
    assert crawler.stats.get_value("imagecrawl/retry/max_reached/500") == 1


def test_429_waits_at_least_the_retry_after_the_pacing_middleware_recorded() -> None:
    _, mw = retry_mw(IMAGECRAWL_TUNING={"retry_backoff_seconds": 0.2})
    request = attempt(**{meta.RETRY_AFTER: 5.0})
    before = time.time()
    retry = mw.process_response(request, Response(request.url, status=429, headers={"Retry-After": "5"}))
    assert isinstance(retry, Request)
    assert before + 5.0 <= retry.meta[meta.NOT_BEFORE] <= time.time() + 5.5
    assert meta.RETRY_AFTER not in retry.meta  # the next answer brings its own


@pytest.mark.parametrize("retry_times", [0, 3])
def test_429_without_retry_after_has_no_backoff_of_its_own(retry_times: int) -> None:
    """The gate has slowed the whole site down: the retry waits its turn there, not a growing backoff
    (a retry that waited 2-4 s kept a site idle at the end of its list)."""
    _, mw = retry_mw(IMAGECRAWL_TUNING={"retry_backoff_seconds": 2.0}, RETRY_TIMES=10)
    request = attempt(retry_times=retry_times)
    before = time.time()
    retry = mw.process_response(request, Response(request.url, status=429))
    assert isinstance(retry, Request)
    assert before <= retry.meta[meta.NOT_BEFORE] <= time.time() + 0.5
    # ... while the same attempt answered 503 backs off as before
    later = mw.process_response(attempt(retry_times=retry_times), Response(request.url, status=503))
    assert isinstance(later, Request) and later.meta[meta.NOT_BEFORE] >= before + 1.0


@pytest.mark.parametrize("status", [200, 301, 403, 404])
def test_other_statuses_pass(status: int) -> None:
    crawler, mw = retry_mw()
    response = Response("https://api.example/", status=status)
    assert mw.process_response(attempt(), response) is response
    assert subtree(crawler) == {}


@pytest.mark.parametrize(
    "exception",
    [DownloadTimeoutError("slow"), ConnectionLost(), OSError("empty body")],
    ids=lambda e: type(e).__name__,
)
def test_retry_exceptions_are_retried_later(exception: Exception) -> None:
    crawler, mw = retry_mw()
    before = time.time()
    retry = mw.process_exception(attempt(), exception)
    assert isinstance(retry, Request)
    assert retry.meta["retry_times"] == 1 and retry.meta[meta.NOT_BEFORE] > before
    reason = type(exception).__name__
    assert subtree(crawler) == {"imagecrawl/retry/count": 1, f"imagecrawl/retry/reason_count/{reason}": 1}


def test_other_exceptions_are_not_retried() -> None:
    crawler, mw = retry_mw()
    assert mw.process_exception(attempt(), ValueError("a bug")) is None
    assert subtree(crawler) == {}


def test_dont_retry_is_honoured() -> None:
    crawler, mw = retry_mw()
    response = Response("https://api.example/", status=503)
    assert mw.process_response(attempt(dont_retry=True), response) is response
    assert mw.process_exception(attempt(dont_retry=True), DownloadTimeoutError()) is None
    assert subtree(crawler) == {}


def test_retry_http_codes_come_from_scrapys_setting() -> None:
    _, mw = retry_mw(RETRY_HTTP_CODES=[418])
    assert isinstance(mw.process_response(attempt(), Response("https://api.example/", status=418)), Request)
    assert mw.process_response(attempt(), Response("https://api.example/", status=503)).status == 503


def test_disabled_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match="RETRY_ENABLED is off"):
        BackoffRetryMiddleware.from_crawler(make_crawler(RETRY_ENABLED=False))


def test_the_pacing_middlewares_retry_after_reaches_the_retry() -> None:
    """The chain as Scrapy runs it on the way back: pacing (950) records Retry-After, retry (550) uses it."""
    crawler, mw = retry_mw()
    pacing = PacingMiddleware.from_crawler(crawler)
    request = Request("https://api.example/page?3")
    asyncio.run(pacing.process_request(request))
    response = Response(request.url, status=429, headers={"Retry-After": "7"}, request=request)
    before = time.time()
    retry = mw.process_response(request, pacing.process_response(request, response))
    assert isinstance(retry, Request)
    assert before + 7.0 <= retry.meta[meta.NOT_BEFORE] <= time.time() + 7.7
    assert not {meta.SENT_AT, meta.PACING_GRANTED, meta.RETRY_AFTER} & set(retry.meta)
    assert subtree(crawler, "imagecrawl/") == {
        "imagecrawl/pacing/requests": 1,
        "imagecrawl/pacing/retry_after_received/429": 1,
        "imagecrawl/pacing/retry_after": 1,
        "imagecrawl/pacing/decrease/429": 1,
        "imagecrawl/retry/count": 1,
        "imagecrawl/retry/reason_count/429": 1,
    }
