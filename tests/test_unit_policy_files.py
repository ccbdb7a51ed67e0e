"""Policy files (robots.txt, tdmrep.json) stay fresh and within their budget: with an injected clock,
robots.txt (and its Content-Signal / Content-Usage lines) and tdmrep.json are fetched again once they are
``IMAGECRAWL_TUNING['policy_ttl_seconds']`` old, never before; a tdmrep.json that cannot be fetched refuses the site
and is retried like an unreachable robots.txt; bodies are read up to ``IMAGECRAWL_TUNING['policy_max_bytes']``
(the download stopped there, compressed ones decompressed only that far, cut at a line break)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import brotli
import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, StopDownload
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.downloadermiddlewares import HttpCompressionMiddleware
from imagecrawl.errors import ConfigError
from imagecrawl.optout.budget import PolicyBodyError, PolicyFileConfig, cut_to_budget, decode_policy_body
from imagecrawl.optout.downloadermiddlewares.optout import TDMREP_PATH, OptOutMiddleware, policy_files
from imagecrawl.optout.downloadermiddlewares.robots import RobotsMiddleware
from tests.crawlers import make_crawler

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Site:
    """Answers the policy-file fetches of ``download_async`` from ``files`` (path -> (status, body)) or
    raises ``files[path]`` when it is an exception; counts what was asked."""

    def __init__(self, files: dict[str, Any]) -> None:
        self.files = files
        self.asked: list[str] = []

    async def download_async(self, request: Request) -> Response:
        path = request.url.split("s.example", 1)[1]
        self.asked.append(path)
        answer = self.files[path]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return Response(request.url, status=status, body=body, request=request)


def crawler_with(tmp_path: Path, site: Site, **overrides: Any) -> tuple[Crawler, Clock]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), **overrides)
    crawler.stats.open_spider()
    crawler.engine = site  # type: ignore[assignment]
    clock = Clock()
    policy_files(crawler).clock = clock
    return crawler, clock


def outcome(mw: RobotsMiddleware | OptOutMiddleware, url: str) -> str:
    try:
        asyncio.run(mw.process_request(Request(url, meta={meta.KIND: "image"})))
    except IgnoreRequest:
        return "refused"
    return "allowed"


# --- freshness -------------------------------------------------------------------------------------


def test_robots_txt_is_fetched_again_after_the_ttl_and_not_before(tmp_path: Path) -> None:
    site = Site({"/robots.txt": (200, b"User-agent: *\nDisallow: /old/\n")})
    crawler, clock = crawler_with(tmp_path, site)
    mw = RobotsMiddleware.from_crawler(crawler)
    assert outcome(mw, "https://s.example/new/a.png") == "allowed"
    assert outcome(mw, "https://s.example/old/a.png") == "refused"
    # the site changes its mind: a disallow and a site-wide Content-Signal
    site.files["/robots.txt"] = (200, b"User-agent: *\nDisallow: /new/\n\nUser-agent: *\nContent-Signal: ai-train=no\n")
    clock.now += DAY - 1
    assert outcome(mw, "https://s.example/new/a.png") == "allowed"
    assert site.asked == ["/robots.txt"]
    clock.now += 1
    assert outcome(mw, "https://s.example/new/a.png") == "refused"
    assert outcome(mw, "https://s.example/old/a.png") == "refused"  # Content-Signal: ai-train=no, site-wide
    assert site.asked == ["/robots.txt", "/robots.txt"]
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_refreshed") == 1
    assert crawler.stats.get_value("imagecrawl/optout/content_signal") == 1


def test_a_later_content_signal_line_is_seen_within_a_shorter_ttl(tmp_path: Path) -> None:
    site = Site({"/robots.txt": (200, b"User-agent: *\nAllow: /\n")})
    crawler, clock = crawler_with(tmp_path, site, IMAGECRAWL_TUNING={"policy_ttl_seconds": 3600})
    mw = RobotsMiddleware.from_crawler(crawler)
    assert outcome(mw, "https://s.example/img/a.png") == "allowed"
    site.files["/robots.txt"] = (200, b"User-agent: *\nContent-Usage: /img/\ttrain-ai=n\n")
    clock.now += 3599.5
    assert outcome(mw, "https://s.example/img/a.png") == "allowed"
    clock.now += 0.5
    assert outcome(mw, "https://s.example/img/a.png") == "refused"
    assert outcome(mw, "https://s.example/doc/a.png") == "allowed"
    assert len(site.asked) == 2


def test_an_unreachable_robots_txt_is_retried_with_backoff_and_its_rules_then_kept_a_day(tmp_path: Path) -> None:
    site = Site({"/robots.txt": (503, b"busy")})
    crawler, clock = crawler_with(tmp_path, site, IMAGECRAWL_TUNING={"robots_retry_seconds": 60})
    mw = RobotsMiddleware.from_crawler(crawler)
    assert outcome(mw, "https://s.example/a.png") == "refused"
    clock.now += 59
    assert outcome(mw, "https://s.example/a.png") == "refused" and len(site.asked) == 1
    clock.now += 1
    site.files["/robots.txt"] = ConnectionRefusedError("down")
    assert outcome(mw, "https://s.example/a.png") == "refused" and len(site.asked) == 2
    # no answer at all: the site's next request fetches it again (in a crawl, the pacing gate's
    # dead-site circuit decides when that is)
    assert outcome(mw, "https://s.example/a.png") == "refused" and len(site.asked) == 3
    site.files["/robots.txt"] = (503, b"busy")
    assert outcome(mw, "https://s.example/a.png") == "refused" and len(site.asked) == 4
    clock.now += 119  # the wait doubled from the first 503's
    assert outcome(mw, "https://s.example/a.png") == "refused" and len(site.asked) == 4
    clock.now += 1
    site.files["/robots.txt"] = (200, b"User-agent: *\nDisallow: /x/\n")
    assert outcome(mw, "https://s.example/a.png") == "allowed" and len(site.asked) == 5
    clock.now += DAY - 1
    assert outcome(mw, "https://s.example/a.png") == "allowed" and len(site.asked) == 5
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 4


TDM_OPEN = json.dumps([{"location": "/reserved/", "tdm-reservation": 1}]).encode()
TDM_ALL = json.dumps([{"location": "/", "tdm-reservation": 1}]).encode()


def test_tdmrep_is_fetched_again_after_the_ttl(tmp_path: Path) -> None:
    site = Site({TDMREP_PATH: (200, TDM_OPEN)})
    crawler, clock = crawler_with(tmp_path, site)
    mw = OptOutMiddleware.from_crawler(crawler)
    assert outcome(mw, "https://s.example/open/a.png") == "allowed"
    assert outcome(mw, "https://s.example/reserved/a.png") == "refused"
    site.files[TDMREP_PATH] = (200, TDM_ALL)
    clock.now += DAY - 1
    assert outcome(mw, "https://s.example/open/a.png") == "allowed"
    clock.now += 1
    assert outcome(mw, "https://s.example/open/a.png") == "refused"
    assert site.asked == [TDMREP_PATH, TDMREP_PATH]
    # a file that disappears (404) is "no rules" from then on, also cached a day
    site.files[TDMREP_PATH] = (404, b"")
    clock.now += DAY
    assert outcome(mw, "https://s.example/reserved/a.png") == "allowed"
    assert len(site.asked) == 3


@pytest.mark.parametrize(
    "failure",
    [(503, b"busy"), (500, b""), (429, b"slow down"), TimeoutError("timed out"), ConnectionResetError("reset")],
    ids=["503", "500", "429", "timeout", "reset"],
)
def test_a_failed_tdmrep_fetch_refuses_the_site_and_is_retried(tmp_path: Path, failure: Any) -> None:
    site = Site({TDMREP_PATH: failure})
    crawler, clock = crawler_with(tmp_path, site, IMAGECRAWL_TUNING={"robots_retry_seconds": 30})
    mw = OptOutMiddleware.from_crawler(crawler)
    assert outcome(mw, "https://s.example/open/a.png") == "refused"
    clock.now += 29
    assert outcome(mw, "https://s.example/open/b.png") == "refused"
    assert len(site.asked) == 1  # not cached as "no rules", not fetched at every request either
    clock.now += 1
    assert outcome(mw, "https://s.example/open/c.png") == "refused"  # still failing: the wait doubles
    assert len(site.asked) == 2
    site.files[TDMREP_PATH] = (200, TDM_OPEN)
    clock.now += 59
    assert outcome(mw, "https://s.example/open/d.png") == "refused" and len(site.asked) == 2
    clock.now += 1
    assert outcome(mw, "https://s.example/open/d.png") == "allowed"
    assert outcome(mw, "https://s.example/reserved/d.png") == "refused"
    assert len(site.asked) == 3
    counted = crawler.stats.get_stats()
    assert counted["imagecrawl/optout/tdmrep/unreachable"] == 2
    assert counted["imagecrawl/optout/tdmrep_file"] == 5


def test_ttl_and_budget_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="policy_ttl_seconds"):
        PolicyFileConfig.from_settings(make_crawler(IMAGECRAWL_TUNING={"policy_ttl_seconds": DAY + 1}).settings)
    with pytest.raises(ConfigError, match="policy_ttl_seconds"):
        PolicyFileConfig.from_settings(make_crawler(IMAGECRAWL_TUNING={"policy_ttl_seconds": 0}).settings)
    with pytest.raises(ConfigError, match="policy_max_bytes"):
        PolicyFileConfig.from_settings(make_crawler(IMAGECRAWL_TUNING={"policy_max_bytes": 10}).settings)
    config = PolicyFileConfig.from_settings(make_crawler().settings)
    assert (config.max_bytes, config.ttl_seconds) == (512 * 1024, DAY)
    assert [config.next_retry(w) for w in (None, 300.0, 60000.0)] == [300.0, 600.0, DAY]


# --- budget ----------------------------------------------------------------------------------------


def test_the_download_of_a_policy_file_stops_at_the_budget(tmp_path: Path) -> None:
    crawler, _ = crawler_with(tmp_path, Site({}), IMAGECRAWL_TUNING={"policy_max_bytes": 4096})
    files = policy_files(crawler)
    request = files.request("https://s.example/robots.txt")
    assert request.meta["download_maxsize"] == 0 and request.headers[b"Accept-Encoding"] == b"identity"
    files._bytes_received(b"x" * 4000, request)
    with pytest.raises(StopDownload) as stopped:
        files._bytes_received(b"x" * 100, request)
    assert stopped.value.fail is False  # the response keeps what was read
    files._bytes_received(b"x" * 10**6, Request("https://s.example/page"))  # any other request: untouched


def test_a_policy_file_is_cut_at_its_last_complete_line(tmp_path: Path) -> None:
    crawler, _ = crawler_with(tmp_path, Site({}), IMAGECRAWL_TUNING={"policy_max_bytes": 1024})
    rules = b"User-agent: *\nDisallow: /a/\n" + b"# padding\n" * 99 + b"Allow: /private/long-path\n"
    assert len(rules) > 1024
    response = Response("https://s.example/robots.txt", body=rules, flags=["download_stopped"])
    body, cut = policy_files(crawler).read(response, "robots.txt")
    assert cut and len(body) <= 1024 and body.endswith(b"\n") and b"Allow: /pri" not in body
    assert body.startswith(b"User-agent: *\nDisallow: /a/\n")
    assert crawler.stats.get_value("imagecrawl/optout/policy_file_truncated") == 1
    assert cut_to_budget(b"x" * 2000, 1024) == b""  # no line break at all: nothing is read
    assert cut_to_budget(b"a\rb" * 10, 1024) == b"a\rb" * 10


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate
        ("br", brotli.compress),
    ],
)
def test_a_compressed_policy_file_is_decompressed_only_up_to_the_budget(encoding: str, compress: Any) -> None:
    bomb = b"User-agent: *\nDisallow: /x/\n" + b"#" * 5_000_000 + b"\nDisallow: /\n"
    packed = compress(bomb)
    assert len(packed) < 50_000
    body, cut = decode_policy_body(packed, [encoding], 4096)
    assert cut and body == b"User-agent: *\nDisallow: /x/\n"
    small, cut = decode_policy_body(compress(b"User-agent: *\nAllow: /\n"), [encoding.upper()], 4096)
    assert (small, cut) == (b"User-agent: *\nAllow: /\n", False)


def test_an_unreadable_encoding_is_an_error_not_rules() -> None:
    with pytest.raises(PolicyBodyError, match="unsupported"):
        decode_policy_body(b"(zstd)", ["zstd"], 4096)
    with pytest.raises(PolicyBodyError, match="cannot decode gzip"):
        decode_policy_body(b"not gzip at all", ["gzip"], 4096)
    assert decode_policy_body(b"User-agent: *\n", ["identity"], 4096) == (b"User-agent: *\n", False)


def test_robots_txt_in_an_unknown_encoding_is_unreachable(tmp_path: Path) -> None:
    site = Site({})
    crawler, _ = crawler_with(tmp_path, site)
    mw = RobotsMiddleware.from_crawler(crawler)

    async def download(request: Request) -> Response:
        return Response(request.url, body=b"\x28\xb5\x2f\xfd...", headers={"Content-Encoding": "zstd"}, request=request)

    site.download_async = download  # type: ignore[method-assign]
    assert outcome(mw, "https://s.example/a.png") == "refused"
    assert crawler.stats.get_value("imagecrawl/optout/robots_txt_unreachable") == 1


def test_the_compression_middleware_leaves_policy_files_to_their_reader(tmp_path: Path) -> None:
    crawler, _ = crawler_with(tmp_path, Site({}))
    mw = HttpCompressionMiddleware.from_crawler(crawler)
    packed = gzip.compress(b"User-agent: *\n" + b"#" * 10_000_000)
    request = policy_files(crawler).request("https://s.example/robots.txt")
    response = Response(request.url, body=packed, headers={"Content-Encoding": "gzip"}, request=request)
    assert mw.process_response(request, response) is response
    page = Request("https://s.example/page")
    decoded = mw.process_response(page, response.replace(request=page))
    assert isinstance(decoded, Response) and len(decoded.body) > 10_000_000
