"""The download-error components driven directly: a failed download becomes a counted, one-line
IgnoreRequest with its kind in meta; an image whose bytes are an image under a wrong Content-Type is
counted (and kept); redirect chains Scrapy abandons are counted; decompression bombs are refused and
counted."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import CannotResolveHostError, DownloadTimeoutError, IgnoreRequest, NotConfigured
from scrapy.http import Response
from twisted.internet.error import ConnectionRefusedError as TxConnectionRefusedError
from twisted.web._newclient import ResponseNeverReceived

from imagecrawl import meta
from imagecrawl.downloadermiddlewares import (
    DownloadErrorsMiddleware,
    HttpCompressionMiddleware,
    RedirectLoopCounter,
    error_kind,
)
from tests.crawlers import make_crawler

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def crawler_with(**overrides: Any) -> Crawler:
    crawler = make_crawler(**overrides)
    crawler.stats.open_spider()
    return crawler


def subtree(crawler: Crawler, prefix: str = "imagecrawl/") -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefix)}


class Chained(Exception):
    pass


def chained() -> Exception:
    try:
        try:
            raise DownloadTimeoutError("slow")
        except DownloadTimeoutError as inner:
            raise Chained("wrapped") from inner
    except Chained as exc:
        return exc


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (DownloadTimeoutError("took too long"), "timeout"),
        (TxConnectionRefusedError(), "connection_refused"),
        (CannotResolveHostError("nowhere.example"), "dns"),
        (ResponseNeverReceived([]), "connection"),
        (chained(), "timeout"),  # the cause decides
        (ValueError("a bug"), "other"),
    ],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_a_failed_download_becomes_a_counted_skip(
    exception: Exception, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    crawler = crawler_with()
    mw = DownloadErrorsMiddleware.from_crawler(crawler)
    request = Request("https://img.example/a.png")
    with caplog.at_level("WARNING"), pytest.raises(IgnoreRequest, match=f"download failed \\({kind}\\)"):
        mw.process_exception(request, exception)
    assert request.meta[meta.DOWNLOAD_ERROR] == kind
    assert subtree(crawler) == {f"imagecrawl/download/errors/{kind}": 1}
    assert error_kind(exception) == kind
    [record] = [r for r in caplog.records if r.name == "imagecrawl.downloadermiddlewares"]
    assert record.levelname == "WARNING" and record.exc_info is None  # one line, no traceback


def test_ignore_request_passes_untouched() -> None:
    crawler = crawler_with()
    mw = DownloadErrorsMiddleware.from_crawler(crawler)
    request = Request("https://img.example/a.png")
    assert mw.process_exception(request, IgnoreRequest("robots")) is None
    assert meta.DOWNLOAD_ERROR not in request.meta and subtree(crawler) == {}


def test_image_bytes_under_a_wrong_content_type_are_counted_and_kept() -> None:
    crawler = crawler_with()
    mw = DownloadErrorsMiddleware.from_crawler(crawler)
    image = Request("https://img.example/a", meta={meta.KIND: "image"})
    for headers, body in (({"Content-Type": "text/html"}, PNG), ({}, PNG), ({"Content-Type": "image/png"}, PNG)):
        response = Response(image.url, body=body, headers=headers)
        assert mw.process_response(image, response) is response
    mw.process_response(image, Response(image.url, body=b"<html>", headers={"Content-Type": "text/html"}))
    mw.process_response(Request(image.url), Response(image.url, body=PNG, headers={"Content-Type": "text/html"}))
    assert subtree(crawler) == {"imagecrawl/media/content_type_mismatch": 2}


def test_download_errors_switch() -> None:
    with pytest.raises(NotConfigured):
        DownloadErrorsMiddleware.from_crawler(make_crawler(IMAGECRAWL_TUNING={"download_errors_enabled": False}))


def test_redirect_chains_scrapy_abandons_are_counted() -> None:
    crawler = crawler_with(REDIRECT_MAX_TIMES=3)
    mw = RedirectLoopCounter.from_crawler(crawler)
    redirect = Response("https://a.example/x", status=302, headers={"Location": "/y"})
    for meta_, total in (
        ({"redirect_times": 2}, None),
        ({"redirect_times": 3}, 1),  # Scrapy's RedirectMiddleware gives up on this one
        ({"redirect_times": 3, "dont_redirect": True}, 1),
    ):
        assert mw.process_response(Request("https://a.example/x", meta=meta_), redirect) is redirect
        assert crawler.stats.get_value("imagecrawl/download/errors/redirect_loop") == total
    mw.process_response(Request("https://a.example/x", meta={"redirect_times": 9}), Response("https://a.example/x"))
    assert subtree(crawler) == {"imagecrawl/download/errors/redirect_loop": 1}
    with pytest.raises(NotConfigured):
        RedirectLoopCounter.from_crawler(make_crawler(REDIRECT_ENABLED=False))


def test_decompression_bombs_are_refused_and_counted() -> None:
    crawler = crawler_with(DOWNLOAD_MAXSIZE=10_000)
    mw = HttpCompressionMiddleware.from_crawler(crawler)
    request = Request("https://a.example/page")
    small = Response(request.url, body=gzip.compress(b"x" * 100), headers={"Content-Encoding": "gzip"})
    assert mw.process_response(request, small).body == b"x" * 100
    bomb = Response(request.url, body=gzip.compress(b"\0" * 1_000_000), headers={"Content-Encoding": "gzip"})
    assert len(bomb.body) < 10_000
    with pytest.raises(IgnoreRequest):
        mw.process_response(request, bomb)
    assert subtree(crawler) == {"imagecrawl/download/errors/decompression_bomb": 1}
