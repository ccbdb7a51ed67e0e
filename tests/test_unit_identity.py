"""The identity guard driven directly (no DNS, no network): without a valid IMAGECRAWL_CONTACT only
loopback hosts are crawled; a start request or start URL to another host stops the crawl (exit code
2), a link or redirect to one is dropped and counted with one WARNING per host; an IP literal the
network guard refuses is left to it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from imagecrawl.guard.downloadermiddlewares.identity import CLOSE_REASON, EXIT_CODE, IdentityGuard
from tests.crawlers import make_crawler


class StubEngine:
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def close_spider_async(self, reason: str) -> None:
        self.closed.append(reason)


class RemoteSpider(Spider):
    name = "remote"
    start_urls = ["https://gallery.example/"]


def guard(spidercls: type[Spider] | None = None, **overrides: Any) -> tuple[Crawler, IdentityGuard, StubEngine]:
    crawler = make_crawler(spidercls, **overrides)
    crawler.stats.open_spider()
    crawler.spider = crawler._create_spider()
    engine = StubEngine()
    crawler.engine = engine  # type: ignore[assignment]
    return crawler, IdentityGuard.from_crawler(crawler), engine


def subtree(crawler: Crawler) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith("imagecrawl/")}


@pytest.mark.parametrize("contact", ["https://example.org/bot", "ops@example.org"])
def test_with_a_contact_every_host_passes(contact: str) -> None:
    crawler, mw, engine = guard(RemoteSpider, IMAGECRAWL_CONTACT=contact)
    assert mw.process_request(Request("https://gallery.example/", meta={"is_start_request": True})) is None
    assert crawler.settings["USER_AGENT"].endswith(f"(+{contact})")
    assert subtree(crawler) == {} and engine.closed == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/", "http://localhost/a", "http://shop.localhost/", "http://[::1]/"]
)
def test_loopback_needs_no_contact(url: str) -> None:
    crawler, mw, _ = guard()
    assert mw.process_request(Request(url, meta={"is_start_request": True})) is None
    assert subtree(crawler) == {}


def test_a_link_to_another_host_is_dropped_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    crawler, mw, engine = guard()
    with caplog.at_level("WARNING"):
        for path in ("a", "b"):
            with pytest.raises(IgnoreRequest, match="no IMAGECRAWL_CONTACT"):
                mw.process_request(Request(f"https://elsewhere.example/{path}"))
        with pytest.raises(IgnoreRequest):  # a redirect of a start request counts as a link
            mw.process_request(Request("https://x.example/", meta={"is_start_request": True, "redirect_times": 1}))
    assert subtree(crawler) == {"imagecrawl/identity/refused": 3}
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Dropped")]
    assert [m.split(":")[1].strip() for m in dropped] == ["//elsewhere.example/a", "//x.example/"]  # one per host
    assert engine.closed == []  # the crawl goes on


def test_a_start_request_to_another_host_stops_the_crawl(caplog: pytest.LogCaptureFixture) -> None:
    crawler, mw, engine = guard()

    async def start() -> None:  # the close is scheduled on the running loop, not awaited
        with pytest.raises(IgnoreRequest):
            mw.process_request(Request("https://gallery.example/", meta={"is_start_request": True}))
        await asyncio.sleep(0)

    with caplog.at_level("ERROR"):
        asyncio.run(start())
    assert engine.closed == [CLOSE_REASON]
    assert crawler.stats.get_value("imagecrawl/exit_code") == EXIT_CODE
    assert "Refusing to crawl gallery.example: IMAGECRAWL_CONTACT is not set" in caplog.text
    with pytest.raises(IgnoreRequest):  # closing once is enough
        mw.process_request(Request("https://other.example/", meta={"is_start_request": True}))
    assert engine.closed == [CLOSE_REASON]


def test_a_remote_start_url_refuses_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR"):
        crawler, _, engine = guard(RemoteSpider, IMAGECRAWL_CONTACT="bob")
    assert "('bob') is neither an http(s) URL nor an e-mail" in caplog.text
    assert crawler.stats.get_value("imagecrawl/exit_code") == EXIT_CODE
    assert engine.closed == []

    async def open_spider() -> None:
        crawler.signals.send_catch_log(signals.spider_opened, spider=crawler.spider)
        await asyncio.sleep(0)

    asyncio.run(open_spider())
    assert engine.closed == [CLOSE_REASON]


def test_addresses_the_network_guard_refuses_are_left_to_it() -> None:
    crawler, mw, _ = guard()
    assert mw.process_request(Request("http://169.254.169.254/latest/meta-data/")) is None
    assert mw.process_request(Request("data:,x")) is None
    with pytest.raises(IgnoreRequest):  # a public literal needs the contact
        mw.process_request(Request("http://93.184.216.34/"))
    _, unguarded, _ = guard(IMAGECRAWL_NETGUARD_ENABLED=False)
    with pytest.raises(IgnoreRequest):  # no guard after it: refused here
        unguarded.process_request(Request("http://169.254.169.254/latest/meta-data/"))
    assert subtree(crawler) == {"imagecrawl/identity/refused": 1}


def test_switched_off_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"), pytest.raises(NotConfigured):
        IdentityGuard.from_crawler(make_crawler(IMAGECRAWL_IDENTITY_ENABLED=False))
    assert "crawling without an operator contact" in caplog.text
