"""The opt-out downloader and spider middlewares driven directly: X-Robots-Tag / tdm-reservation on an
image stop its download at the headers and drop it, counted and listed in the skip log; a page that
opts out (HTML meta robots, page headers) is marked so the spider middleware drops the image requests
found on it; the TDMRep file (fetched through a stub engine) reserves paths before anything is sent;
hosts the user owns are exempt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured, StopDownload
from scrapy.http import Headers, HtmlResponse, Response
from twisted.python.failure import Failure

from imagecrawl import meta
from imagecrawl.optout.downloadermiddlewares.optout import TDMREP_PATH, OptOutMiddleware, skip_log
from imagecrawl.optout.spidermiddlewares import OptOutSpiderMiddleware
from tests.crawlers import make_crawler

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


class StubEngine:
    """Answers ``download_async`` (the TDMRep file fetch) from a dict of URL -> Response."""

    def __init__(self, answers: dict[str, Response]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def download_async(self, request: Request) -> Response:
        self.asked.append(request.url)
        await asyncio.sleep(0.01)  # other requests of the host arrive meanwhile
        if request.url not in self.answers:
            raise IgnoreRequest("not here")
        return self.answers[request.url].replace(request=request)


def optout(tmp_path: Path, **overrides: Any) -> tuple[Crawler, OptOutMiddleware]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), **overrides)
    crawler.stats.open_spider()
    return crawler, OptOutMiddleware.from_crawler(crawler)


def subtree(crawler: Crawler, prefix: str = "imagecrawl/optout") -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefix)}


def skip_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / ".imagecrawl" / "state" / "optout.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def image(url: str = "https://cdn.example/a.png") -> Request:
    return Request(url, meta={meta.KIND: "image"})


def headers_received(crawler: Crawler, request: Request, headers: dict[str, str]) -> list[Any]:
    """Send ``headers_received`` as Scrapy's HTTP handler does; returns the handlers' results."""
    results = crawler.signals.send_catch_log(
        signals.headers_received, headers=Headers(headers), body_length=1000, request=request, spider=None
    )
    return [result for _, result in results]


def test_x_robots_tag_noai_on_an_image_is_dropped_counted_and_logged(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request = image()
    response = Response(request.url, body=PNG, headers={"X-Robots-Tag": "noai", "Content-Type": "image/png"})
    with pytest.raises(IgnoreRequest, match="x_robots_tag"):
        mw.process_response(request, response)
    assert subtree(crawler) == {"imagecrawl/optout/x_robots_tag": 1, "imagecrawl/optout/skipped": 1}
    skip_log(crawler).close()
    [line] = skip_lines(tmp_path)
    assert (line["reason"], line["url"], line["detail"]) == ("x_robots_tag", request.url, "noai")


@pytest.mark.parametrize(
    ("header", "dropped"),
    [
        ("imagecrawl: noimageai", True),
        ("noindex, noai", True),
        ("otherbot: noai", False),  # addressed to another crawler
        ("noindex", False),  # not in IMAGECRAWL_OPTOUT_DIRECTIVES by default
    ],
)
def test_x_robots_tag_addressing(tmp_path: Path, header: str, dropped: bool) -> None:
    crawler, mw = optout(tmp_path)
    request = image()
    response = Response(request.url, body=PNG, headers={"X-Robots-Tag": header})
    if dropped:
        with pytest.raises(IgnoreRequest):
            mw.process_response(request, response)
    else:
        assert mw.process_response(request, response) is response
    assert crawler.stats.get_value("imagecrawl/optout/x_robots_tag") == (1 if dropped else None)


def test_headers_received_stops_an_opted_out_image_before_its_body(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request = image()
    [result] = headers_received(crawler, request, {"X-Robots-Tag": "noai", "Content-Type": "image/png"})
    assert isinstance(result, Failure) and isinstance(result.value, StopDownload)
    assert result.value.fail is False
    assert request.meta[meta.OPTOUT_SKIP] == ("x_robots_tag", "noai")
    # The downloader then hands back the headers-only response: dropped and counted once.
    with pytest.raises(IgnoreRequest):
        mw.process_response(request, Response(request.url, headers={"X-Robots-Tag": "noai"}, request=request))
    assert meta.OPTOUT_SKIP not in request.meta
    assert subtree(crawler) == {"imagecrawl/optout/x_robots_tag": 1, "imagecrawl/optout/skipped": 1}


def test_headers_received_judges_by_content_type_and_leaves_pages_whole(tmp_path: Path) -> None:
    crawler, _ = optout(tmp_path)
    unlabelled = Request("https://cdn.example/x")
    [stopped] = headers_received(crawler, unlabelled, {"X-Robots-Tag": "noai", "Content-Type": "image/webp"})
    assert isinstance(stopped, Failure) and isinstance(stopped.value, StopDownload)
    page = Request("https://www.example/gallery", meta={meta.KIND: "page"})
    assert headers_received(crawler, page, {"X-Robots-Tag": "noai", "Content-Type": "text/html"}) == [None]
    assert headers_received(crawler, image(), {"Content-Type": "image/png"}) == [None]


def test_tdm_reservation_header_on_an_image(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request = image()
    [result] = headers_received(crawler, request, {"tdm-reservation": "1"})
    assert isinstance(result, Failure)
    with pytest.raises(IgnoreRequest, match="tdmrep_header"):
        mw.process_response(request, Response(request.url, request=request))
    assert subtree(crawler) == {"imagecrawl/optout/tdmrep_header": 1, "imagecrawl/optout/skipped": 1}
    assert mw.process_response(image(), Response("https://cdn.example/a.png", headers={"tdm-reservation": "0"}))


PAGE_NOAI = b'<html><head><meta name="robots" content="noai"></head><body><img src="/a.png"></body></html>'


def page(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[Request, HtmlResponse]:
    request = Request(url, meta={meta.KIND: "page"})
    return request, HtmlResponse(url, body=body, headers=headers or {}, request=request)


def test_a_page_with_meta_robots_noai_is_marked(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request, response = page("https://www.example/gallery", PAGE_NOAI)
    assert mw.process_response(request, response) is response
    assert request.meta[meta.OPTOUT_PAGE] == {"reason": "meta_robots", "detail": "noai"}
    assert subtree(crawler) == {"imagecrawl/optout/pages/meta_robots": 1}
    plain, plain_response = page("https://www.example/other", b"<html><meta name='robots' content='noindex'></html>")
    mw.process_response(plain, plain_response)
    assert meta.OPTOUT_PAGE not in plain.meta


def test_a_page_with_x_robots_tag_or_tdm_meta_is_marked(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request, response = page("https://www.example/a", b"<html></html>", {"X-Robots-Tag": "imagecrawl: noai"})
    mw.process_response(request, response)
    assert request.meta[meta.OPTOUT_PAGE] == {"reason": "x_robots_tag", "detail": "noai"}
    request, response = page("https://www.example/b", b'<html><meta name="tdm-reservation" content="1"></html>')
    mw.process_response(request, response)
    assert request.meta[meta.OPTOUT_PAGE] == {"reason": "tdmrep_meta", "detail": "tdm-reservation: 1"}
    assert subtree(crawler) == {"imagecrawl/optout/pages/x_robots_tag": 1, "imagecrawl/optout/pages/tdmrep_meta": 1}


def test_owned_hosts_are_exempt(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path, IMAGECRAWL_OPTOUT_OWNED_HOSTS=["mine.example"])
    request = image("https://cdn.mine.example/a.png")
    assert headers_received(crawler, request, {"X-Robots-Tag": "noai", "Content-Type": "image/png"}) == [None]
    response = Response(request.url, body=PNG, headers={"X-Robots-Tag": "noai"})
    assert mw.process_response(request, response) is response
    own_page, own_response = page("https://mine.example/gallery", PAGE_NOAI)
    mw.process_response(own_page, own_response)
    assert meta.OPTOUT_PAGE not in own_page.meta
    with pytest.raises(IgnoreRequest):  # anyone else's host is not
        mw.process_response(image("https://cdn.example/a.png"), response)
    assert subtree(crawler) == {"imagecrawl/optout/x_robots_tag": 1, "imagecrawl/optout/skipped": 1}


def test_switches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crawler, mw = optout(tmp_path, IMAGECRAWL_TUNING={"optout_x_robots_tag": False})
    response = Response("https://cdn.example/a.png", body=PNG, headers={"X-Robots-Tag": "noai"})
    assert mw.process_response(image(), response) is response
    assert subtree(crawler) == {}
    with caplog.at_level("WARNING"), pytest.raises(NotConfigured):
        OptOutMiddleware.from_crawler(make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_OPTOUT_ENABLED=False))
    assert "IMAGECRAWL_OPTOUT_ENABLED is off" in caplog.text
    with pytest.raises(NotConfigured):
        OptOutSpiderMiddleware.from_crawler(
            make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_OPTOUT_ENABLED=False)
        )


def test_the_page_filter_is_installed_only_for_spiders_that_request_images_from_pages(tmp_path: Path) -> None:
    from spiders.gallery import GallerySpider
    from spiders.urls import UrlsSpider

    # the urls spider's image requests all come from start(): no async generator around its callbacks
    with pytest.raises(NotConfigured):
        OptOutSpiderMiddleware.from_crawler(make_crawler(UrlsSpider, IMAGECRAWL_STORE=str(tmp_path)))
    assert isinstance(
        OptOutSpiderMiddleware.from_crawler(make_crawler(GallerySpider, IMAGECRAWL_STORE=str(tmp_path))),
        OptOutSpiderMiddleware,
    )


# --- TDMRep file ---------------------------------------------------------------------------------

TDMREP = json.dumps(
    [{"location": "/reserved/*", "tdm-reservation": 1}, {"location": "/open/*", "tdm-reservation": 0}]
).encode()


def test_tdmrep_file_reserves_paths_before_anything_is_sent(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    tdm_url = f"https://www.example{TDMREP_PATH}"
    engine = StubEngine({tdm_url: Response(tdm_url, status=200, body=TDMREP)})
    crawler.engine = engine  # type: ignore[assignment]
    reserved = [image(f"https://www.example/reserved/{n}.png") for n in range(3)]
    opened = image("https://www.example/open/1.png")
    other = image("https://www.example/misc/1.png")

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(mw.process_request(r) for r in [*reserved, opened, other]), return_exceptions=True
        )

    results = asyncio.run(run())
    assert engine.asked == [tdm_url]  # one fetch for every request of the host
    assert all(isinstance(r, IgnoreRequest) for r in results[:3])
    assert results[3:] == [None, None]
    assert all(r.meta[meta.TDM_FILE] == 1 for r in reserved)
    assert opened.meta[meta.TDM_FILE] == 0 and meta.TDM_FILE not in other.meta
    assert subtree(crawler) == {
        "imagecrawl/optout/tdmrep/status/200": 1,
        "imagecrawl/optout/tdmrep_file": 3,
        "imagecrawl/optout/skipped": 3,
    }
    # the file's 0 yields to a header's 1 (a header overrides the file)
    with pytest.raises(IgnoreRequest, match="tdmrep_header"):
        mw.process_response(opened, Response(opened.url, headers={"tdm-reservation": "1"}))


@pytest.mark.parametrize(
    ("answer", "stat"),
    [
        (Response("https://www.example/.well-known/tdmrep.json", status=404), "tdmrep/status/404"),
        (Response("https://www.example/.well-known/tdmrep.json", status=200, body=b"{oops"), "tdmrep/invalid"),
        (None, None),  # refused (IgnoreRequest, e.g. robots.txt): no file, nothing counted
    ],
)
def test_no_usable_tdmrep_file_means_no_rules(tmp_path: Path, answer: Response | None, stat: str | None) -> None:
    crawler, mw = optout(tmp_path)
    engine = StubEngine({answer.url: answer} if answer is not None else {})
    crawler.engine = engine  # type: ignore[assignment]
    request = image("https://www.example/reserved/1.png")
    asyncio.run(mw.process_request(request))
    asyncio.run(mw.process_request(image("https://www.example/reserved/2.png")))
    assert len(engine.asked) == 1  # remembered: not fetched again
    assert meta.TDM_FILE not in request.meta
    counted = subtree(crawler)
    if stat is not None:
        assert counted[f"imagecrawl/optout/{stat}"] == 1
    assert "imagecrawl/optout/skipped" not in counted


def test_a_tdmrep_file_over_the_budget_reserves_the_whole_site(tmp_path: Path) -> None:
    # 600 KiB of rules: the reservation that matters may sit past the 512 KiB read, so none is assumed absent
    rules = b",".join(b'{"location": "/open/%d", "tdm-reservation": 0}' % i for i in range(14_000))
    body = b"[" + rules + b"]"
    assert len(body) > 512 * 1024
    crawler, mw = optout(tmp_path)
    url = "https://www.example/.well-known/tdmrep.json"
    crawler.engine = StubEngine({url: Response(url, status=200, body=body)})  # type: ignore[assignment]
    for path in ("/open/1.png", "/anything/else.png"):
        with pytest.raises(IgnoreRequest, match="reserved"):
            asyncio.run(mw.process_request(image(f"https://www.example{path}")))
    counted = subtree(crawler)
    assert counted["imagecrawl/optout/tdmrep/over_budget"] == 1
    assert counted["imagecrawl/optout/tdmrep_file"] == 2
    assert "imagecrawl/optout/tdmrep/invalid" not in counted


def test_internal_and_owned_requests_never_wait_for_the_file(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path, IMAGECRAWL_OPTOUT_OWNED_HOSTS=["mine.example"])
    engine = StubEngine({})
    crawler.engine = engine  # type: ignore[assignment]

    async def run() -> None:
        await mw.process_request(Request("https://www.example/robots.txt", meta={"dont_obey_robotstxt": True}))
        await mw.process_request(Request(f"https://www.example{TDMREP_PATH}", meta={meta.KIND: "tdmrep"}))
        await mw.process_request(image("https://mine.example/reserved/1.png"))
        await mw.process_request(Request("data:,x"))

    asyncio.run(run())
    assert engine.asked == []


# --- the spider middleware -----------------------------------------------------------------------


def spider_mw(tmp_path: Path) -> tuple[Crawler, OptOutMiddleware, OptOutSpiderMiddleware]:
    crawler, mw = optout(tmp_path)
    return crawler, mw, OptOutSpiderMiddleware.from_crawler(crawler)


def test_images_found_on_an_opted_out_page_are_dropped_and_counted(tmp_path: Path) -> None:
    crawler, downloader, spider_side = spider_mw(tmp_path)
    request, response = page("https://www.example/gallery", PAGE_NOAI)
    downloader.process_response(request, response)
    found = [
        image("https://cdn.example/a.png"),
        image("https://cdn.example/b.png"),
        Request("https://www.example/gallery?page=2", meta={meta.KIND: "page"}),
        {"an": "item"},
    ]
    kept = list(spider_side.process_spider_output(response, found))
    assert kept == found[2:]
    assert subtree(crawler) == {
        "imagecrawl/optout/pages/meta_robots": 1,
        "imagecrawl/optout/meta_robots": 2,
        "imagecrawl/optout/skipped": 2,
    }
    skip_log(crawler).close()
    lines = skip_lines(tmp_path)
    assert [(x["reason"], x["url"], x["page"]) for x in lines] == [
        ("meta_robots", "https://cdn.example/a.png", response.url),
        ("meta_robots", "https://cdn.example/b.png", response.url),
    ]


def test_the_async_output_is_filtered_too_and_other_pages_pass(tmp_path: Path) -> None:
    crawler, downloader, spider_side = spider_mw(tmp_path)
    request, response = page("https://www.example/gallery", PAGE_NOAI)
    downloader.process_response(request, response)

    async def output(items: list[Any]) -> AsyncIterator[Any]:
        for item in items:
            yield item

    async def collect(resp: Response, items: list[Any]) -> list[Any]:
        return [x async for x in spider_side.process_spider_output_async(resp, output(items))]

    assert asyncio.run(collect(response, [image(), {"k": 1}])) == [{"k": 1}]
    _, healthy = page("https://www.example/fine", b"<html><img src='/a.png'></html>")
    images = [image(), image("https://cdn.example/b.png")]
    assert asyncio.run(collect(healthy, images)) == images
    assert list(spider_side.process_spider_output(healthy, images)) == images
    assert crawler.stats.get_value("imagecrawl/optout/meta_robots") == 1


def test_one_skip_log_for_the_crawl(tmp_path: Path) -> None:
    crawler, mw, spider_side = spider_mw(tmp_path)
    assert mw.ledger is spider_side.ledger is skip_log(crawler)
    assert skip_log(make_crawler(IMAGECRAWL_STORE=str(tmp_path))) is not mw.ledger


def test_content_usage_header_on_an_image_stops_it_before_its_body(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request = image()
    [result] = headers_received(crawler, request, {"Content-Usage": "search=y, train-ai=n"})
    assert isinstance(result, Failure) and isinstance(result.value, StopDownload)
    with pytest.raises(IgnoreRequest, match="content_usage"):
        mw.process_response(request, Response(request.url, request=request))
    assert subtree(crawler) == {"imagecrawl/optout/content_usage": 1, "imagecrawl/optout/skipped": 1}
    for allowed in ("train-ai=n, train-genai=y", "search=n", "Train-AI=n"):
        assert headers_received(crawler, image(), {"Content-Usage": allowed}) == [None], allowed
    crawler, _ = optout(tmp_path, IMAGECRAWL_TUNING={"optout_content_usage": False})
    assert headers_received(crawler, image(), {"Content-Usage": "train-ai=n"}) == [None]


def test_a_page_with_a_content_usage_header_is_marked(tmp_path: Path) -> None:
    crawler, mw = optout(tmp_path)
    request, response = page("https://www.example/a", b"<html></html>", {"Content-Usage": "train-genai=n"})
    mw.process_response(request, response)
    assert request.meta[meta.OPTOUT_PAGE] == {"reason": "content_usage", "detail": "Content-Usage: train-genai=n"}
    allowed, allowed_response = page("https://www.example/b", b"<html></html>", {"Content-Usage": "search=n"})
    mw.process_response(allowed, allowed_response)
    assert meta.OPTOUT_PAGE not in allowed.meta
    assert subtree(crawler) == {"imagecrawl/optout/pages/content_usage": 1}
