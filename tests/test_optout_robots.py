"""The robots.txt middleware's additions, driven directly (no network): a 5xx robots.txt disallows
everything (RFC 9309), a 4xx one allows everything (its error page is not read as rules), skips are
counted, and Crawl-delay for our token lands in the registry pacing reads."""

from __future__ import annotations

import asyncio

import pytest
from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred

from imagecrawl.optout.downloadermiddlewares.robots import RobotsMiddleware, crawl_delays
from tests.crawlers import project_settings

ROBOTS = (
    b"User-agent: *\nDisallow: /private/\nCrawl-delay: 9\n\n"
    b"User-agent: imagecrawl\nDisallow: /no-ai/\nCrawl-delay: 2.5\n"  # our group replaces * for us
)


def parse(status: int, body: bytes) -> tuple[RobotsMiddleware, object]:
    crawler = get_crawler(
        settings_dict=project_settings(
            **{"ROBOTSTXT_OBEY": True, "ROBOTSTXT_USER_AGENT": "imagecrawl", "IMAGECRAWL_OPTOUT_LOG": "-"}
        )
    )
    crawler.stats.open_spider()
    mw = RobotsMiddleware(crawler)
    mw._parsers["s.example"] = Deferred()
    response = Response("http://s.example/robots.txt", status=status, body=body)
    asyncio.run(mw._parse_robots(response, "s.example", Request("http://s.example/a.png")))
    return mw, crawler


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        (200, {"/a.png": True, "/private/x": True, "/no-ai/x": False}),
        (503, {"/a.png": False}),
        (404, {"/no-ai/x": True}),
    ],
)
def test_status_semantics_and_our_token(status: int, allowed: dict[str, bool]) -> None:
    mw, _ = parse(status, ROBOTS)
    for path, ok in allowed.items():
        request = Request(f"http://s.example{path}")
        if ok:
            mw.process_request_2(mw._parsers["s.example"], request)
        else:
            with pytest.raises(IgnoreRequest):
                mw.process_request_2(mw._parsers["s.example"], request)


def test_skips_are_counted_and_crawl_delay_is_handed_over() -> None:
    mw, crawler = parse(200, ROBOTS)
    with pytest.raises(IgnoreRequest):
        mw.process_request_2(mw._parsers["s.example"], Request("http://s.example/no-ai/1.png"))
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt") == 1
    assert crawl_delays(crawler).get("s.example") == 2.5  # our group's delay, not the * group's


def test_unreachable_robots_is_counted() -> None:
    _, crawler = parse(500, b"")
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 1


def test_owned_hosts_skip_robots_and_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    crawler = get_crawler(
        settings_dict=project_settings(
            **{
                "ROBOTSTXT_OBEY": True,
                "IMAGECRAWL_OPTOUT_OWNED_HOSTS": "mine.example",
                "IMAGECRAWL_OPTOUT_LOG": "-",
            }
        )
    )
    crawler.stats.open_spider()
    mw = RobotsMiddleware(crawler)
    asyncio.run(mw.process_request(Request("https://cdn.mine.example/a.png")))
    assert crawler.stats.get_value("robotstxt/request_count") is None  # robots.txt not even asked for
    assert mw.optout_config.owns("https://mine.example/")
    assert not mw.optout_config.owns("https://notmine.example/")
    # Any other host: robots.txt is fetched (here it fails: there is no engine), unreachable = disallowed.
    with pytest.raises(IgnoreRequest):
        asyncio.run(mw.process_request(Request("https://other.example/a.png")))
    assert crawler.stats.get_value("robotstxt/request_count") == 1
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 1
    with caplog.at_level("WARNING"):
        mw.optout_config.warn_disabled()
    assert "NOT honoured on mine.example" in caplog.text
