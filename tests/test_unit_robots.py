"""The robots.txt middleware driven through ``process_request``, robots.txt answered by a stub engine:
a Disallow for our token drops the request (counted, in the skip log), a 5xx robots.txt disallows
everything, a 4xx one allows everything, every request that waited for the file gets the parser
(Scrapy 2.19 hands it to the first waiter only), and the Crawl-delay reaches the registry and pacing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from imagecrawl.optout.crawldelay import MAX_CRAWL_DELAY_SECONDS
from imagecrawl.optout.downloadermiddlewares.optout import skip_log
from imagecrawl.optout.downloadermiddlewares.robots import RobotsMiddleware, crawl_delays
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware
from imagecrawl.tuning import tuning
from tests.crawlers import Clock, make_crawler

ROBOTS = (
    b"User-agent: *\nDisallow: /private/\nCrawl-delay: 9\n\n"
    b"User-agent: imagecrawl\nDisallow: /no-ai/\nCrawl-delay: 1.5\n"
)


class RobotsEngine:
    """Answers robots.txt fetches with ``status``/``body`` once ``release`` is set; counts the fetches."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.asked: list[Request] = []
        self.release = asyncio.Event()
        self.release.set()

    async def download_async(self, request: Request) -> Response:
        self.asked.append(request)
        await self.release.wait()
        return Response(request.url, status=self.status, body=self.body, request=request)


def robots(
    tmp_path: Path, status: int = 200, body: bytes = ROBOTS, **overrides: Any
) -> tuple[Crawler, RobotsMiddleware]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), **overrides)
    crawler.stats.open_spider()
    crawler.engine = RobotsEngine(status, body)  # type: ignore[assignment]
    return crawler, RobotsMiddleware.from_crawler(crawler)


def fetch(mw: RobotsMiddleware, *urls: str) -> list[BaseException | None]:
    """``process_request`` for each URL, all at once; IgnoreRequest (or None) for each."""

    async def run() -> list[Any]:
        return await asyncio.gather(*(mw.process_request(Request(u)) for u in urls), return_exceptions=True)

    return asyncio.run(run())


def stats(crawler: Crawler, *prefixes: str) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefixes)}


def test_disallow_for_our_token_is_dropped_counted_and_logged(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path)
    results = fetch(mw, "https://s.example/no-ai/1.png")
    assert isinstance(results[0], IgnoreRequest)
    assert fetch(mw, "https://s.example/a.png", "https://s.example/private/x") == [None, None]  # "*" is not ours
    assert stats(crawler, "imagecrawl/optout", "robotstxt/") == {
        "imagecrawl/optout/robots_txt": 1,
        "imagecrawl/optout/skipped": 1,
        "robotstxt/request_count": 1,
        "robotstxt/response_count": 1,
        "robotstxt/response_status_count/200": 1,
        "robotstxt/forbidden": 1,
    }
    skip_log(crawler).close()
    [line] = [json.loads(x) for x in (tmp_path / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    assert (line["reason"], line["url"], line["detail"]) == ("robots_txt", "https://s.example/no-ai/1.png", "Disallow")
    [asked] = crawler.engine.asked  # type: ignore[attr-defined]
    assert asked.url == "https://s.example/robots.txt" and asked.meta["dont_obey_robotstxt"] is True


def test_every_request_waiting_for_robots_txt_gets_the_parser(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path)
    engine: RobotsEngine = crawler.engine  # type: ignore[assignment]
    engine.release.clear()

    async def run() -> list[Any]:
        waiting = [
            asyncio.ensure_future(mw.process_request(Request(f"https://s.example/no-ai/{n}.png"))) for n in range(4)
        ]
        for _ in range(20):  # let every request reach the wait (no clock involved)
            await asyncio.sleep(0)
        assert not any(task.done() for task in waiting)  # all wait for the one fetch
        engine.release.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(run())
    assert len(engine.asked) == 1
    assert all(isinstance(r, IgnoreRequest) for r in results), results
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt") == 4


@pytest.mark.parametrize("status", [500, 503])
def test_an_unreachable_robots_txt_disallows_everything(tmp_path: Path, status: int) -> None:
    crawler, mw = robots(tmp_path, status=status, body=b"<html>oops</html>")
    results = fetch(mw, "https://s.example/a.png", "https://s.example/b/c.jpg")
    assert all(isinstance(r, IgnoreRequest) for r in results)
    assert stats(crawler, "imagecrawl/optout") == {
        "imagecrawl/optout/robots_txt_unreachable": 1,
        "imagecrawl/optout/robots_txt": 2,
        "imagecrawl/optout/skipped": 2,
    }


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_a_missing_robots_txt_allows_everything(tmp_path: Path, status: int) -> None:
    crawler, mw = robots(tmp_path, status=status, body=b"User-agent: *\nDisallow: /\n")  # the error page's text
    assert fetch(mw, "https://s.example/a.png", "https://s.example/no-ai/1.png") == [None, None]
    assert stats(crawler, "imagecrawl/optout") == {}


def test_crawl_delay_for_our_token_is_stored_and_reaches_pacing(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path)
    pacing = PacingMiddleware.from_crawler(crawler)
    fetch(mw, "https://s.example/a.png")
    assert crawl_delays(crawler).get("s.example") == 1.5
    assert pacing.gate.sites["s.example"].controller.floor_interval == 1.5
    assert crawler.stats.get_value("imagecrawl/pacing/crawl_delay") == 1


def test_a_huge_crawl_delay_is_capped_on_its_one_path(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path, body=b"User-agent: *\nCrawl-delay: 86400\n")
    pacing = PacingMiddleware.from_crawler(crawler)
    fetch(mw, "https://s.example/a.png")
    assert crawl_delays(crawler).get("s.example") == MAX_CRAWL_DELAY_SECONDS
    assert pacing.gate.sites["s.example"].controller.floor_interval == MAX_CRAWL_DELAY_SECONDS


def test_no_crawl_delay_is_stored_as_none(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path, body=b"User-agent: *\nDisallow: /x\n")
    fetch(mw, "https://s.example/a.png")
    assert crawl_delays(crawler).get("s.example") is None


def test_owned_hosts_internal_and_non_http_requests_never_fetch_robots_txt(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path, body=b"User-agent: *\nDisallow: /\n", IMAGECRAWL_OPTOUT_OWNED_HOSTS=["mine.example"])

    async def run() -> None:
        await mw.process_request(Request("https://cdn.mine.example/a.png"))
        await mw.process_request(Request("https://s.example/x", meta={"dont_obey_robotstxt": True}))
        await mw.process_request(Request("data:,x"))

    asyncio.run(run())
    assert crawler.engine.asked == []  # type: ignore[attr-defined]
    assert isinstance(fetch(mw, "https://s.example/a.png")[0], IgnoreRequest)


def test_robotstxt_obey_off_is_not_configured_and_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"), pytest.raises(NotConfigured):
        RobotsMiddleware.from_crawler(make_crawler(IMAGECRAWL_STORE=str(tmp_path), ROBOTSTXT_OBEY=False))
    assert "robots.txt is NOT honoured" in caplog.text


PREFS = (
    b"User-agent: *\nDisallow: /private/\nContent-Signal: search=yes, ai-train=no\n"
    b"Content-Signal: /open/ ai-train=yes\nContent-Usage: /open/genai/ train-genai=n\n"
)


def test_content_signal_and_usage_lines_refuse_before_the_request(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path, body=PREFS)
    results = fetch(mw, "https://s.example/a.png", "https://s.example/open/a.png", "https://s.example/open/genai/b.png")
    assert isinstance(results[0], IgnoreRequest) and results[1] is None and isinstance(results[2], IgnoreRequest)
    assert stats(crawler, "imagecrawl/optout") == {
        "imagecrawl/optout/content_signal": 1,
        "imagecrawl/optout/content_usage": 1,
        "imagecrawl/optout/skipped": 2,
    }
    skip_log(crawler).close()
    lines = [json.loads(x) for x in (tmp_path / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    assert [(x["reason"], x["detail"]) for x in lines] == [
        ("content_signal", "search=yes, ai-train=no"),
        ("content_usage", "/open/genai/ train-genai=n"),
    ]


def test_a_robots_txt_with_a_byte_order_mark_still_states_its_signals(tmp_path: Path) -> None:
    body = (
        b"\xef\xbb\xbfUser-agent: imagecrawl\nContent-Signal: ai-train=yes\n\n"
        b"User-agent: *\nContent-Signal: ai-train=no\n"
    )
    _, mw = robots(tmp_path, body=body)
    assert fetch(mw, "https://s.example/a.png") == [None]  # our own group, its first line behind the BOM


def test_content_signal_and_usage_can_be_switched_off(tmp_path: Path) -> None:
    _, mw = robots(tmp_path, body=PREFS, IMAGECRAWL_TUNING={"optout_content_signal": False})
    results = fetch(mw, "https://s.example/a.png", "https://s.example/open/genai/b.png")
    assert results[0] is None and isinstance(results[1], IgnoreRequest)
    _, mw = robots(
        tmp_path, body=PREFS, IMAGECRAWL_TUNING={"optout_content_signal": False, "optout_content_usage": False}
    )
    assert fetch(mw, "https://s.example/a.png", "https://s.example/open/genai/b.png") == [None, None]
    assert isinstance(fetch(mw, "https://s.example/private/x")[0], IgnoreRequest)  # Disallow still holds


class FailingEngine(RobotsEngine):
    """robots.txt downloads fail (``error``) until ``error`` is None; then answer like RobotsEngine."""

    def __init__(self, error: Exception | None, status: int = 200, body: bytes = ROBOTS) -> None:
        super().__init__(status, body)
        self.error = error

    async def download_async(self, request: Request) -> Response:
        if self.error is not None:
            self.asked.append(request)
            raise self.error
        return await super().download_async(request)


@pytest.mark.parametrize("error", [OSError("disk on fire"), ValueError("odd")])
def test_a_robots_txt_that_cannot_be_downloaded_disallows_and_is_fetched_again_later(
    tmp_path: Path, error: Exception
) -> None:
    crawler, mw = robots(tmp_path, IMAGECRAWL_TUNING={"robots_retry_seconds": 0.2})
    clock = mw.policy.clock = Clock()
    engine = FailingEngine(error)
    crawler.engine = engine  # type: ignore[assignment]
    assert all(isinstance(r, IgnoreRequest) for r in fetch(mw, "https://s.example/a.png", "https://s.example/b.png"))
    assert len(engine.asked) == 1  # not again right away
    assert isinstance(fetch(mw, "https://s.example/c.png")[0], IgnoreRequest)
    assert len(engine.asked) == 1
    engine.error = None  # the site comes back
    clock.advance(0.19)
    assert isinstance(fetch(mw, "https://s.example/c.png")[0], IgnoreRequest)  # not yet
    assert len(engine.asked) == 1
    clock.advance(0.01)
    assert fetch(mw, "https://s.example/a.png", "https://s.example/no-ai/1.png")[0] is None
    assert len(engine.asked) == 2
    assert stats(crawler, "imagecrawl/optout") == {
        "imagecrawl/optout/robots_txt_unreachable": 1,
        "imagecrawl/optout/robots_txt": 5,
        "imagecrawl/optout/skipped": 5,
    }
    skip_log(crawler).close()
    lines = [json.loads(x) for x in (tmp_path / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    assert [line["detail"] for line in lines] == ["robots.txt unreachable"] * 4 + ["Disallow"]


@pytest.mark.parametrize("error", [ConnectionRefusedError("refused"), TimeoutError("timed out")])
def test_a_robots_txt_without_an_answer_disallows_and_is_fetched_again_with_the_next_request(
    tmp_path: Path, error: Exception
) -> None:
    """Refused or timed out: the site may be dead. Its next request (which the pacing gate's dead-site
    circuit holds back while the site does not answer) fetches robots.txt again: the probe."""
    crawler, mw = robots(tmp_path, IMAGECRAWL_TUNING={"robots_retry_seconds": 300})
    engine = FailingEngine(error)
    crawler.engine = engine  # type: ignore[assignment]
    assert isinstance(fetch(mw, "https://s.example/a.png")[0], IgnoreRequest)
    assert len(engine.asked) == 1
    assert isinstance(fetch(mw, "https://s.example/c.png")[0], IgnoreRequest)
    assert len(engine.asked) == 2  # fetched again at once, not 300 s later
    engine.error = None  # the site comes back
    assert fetch(mw, "https://s.example/a.png")[0] is None
    assert len(engine.asked) == 3
    assert engine.asked[0].meta["download_timeout"] == tuning(crawler.settings).policy_timeout_seconds
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 2


def test_a_429_robots_txt_disallows_and_the_wait_doubles(tmp_path: Path) -> None:
    crawler, mw = robots(tmp_path, status=429, body=b"slow down", IMAGECRAWL_TUNING={"robots_retry_seconds": 0.1})
    clock = mw.policy.clock = Clock()
    engine: RobotsEngine = crawler.engine  # type: ignore[assignment]
    assert isinstance(fetch(mw, "https://s.example/a.png")[0], IgnoreRequest)
    clock.advance(0.1)
    assert isinstance(fetch(mw, "https://s.example/a.png")[0], IgnoreRequest)
    assert len(engine.asked) == 2
    clock.advance(0.19)  # the wait doubled to 0.2 s: not yet
    assert isinstance(fetch(mw, "https://s.example/a.png")[0], IgnoreRequest)
    assert len(engine.asked) == 2
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 2
