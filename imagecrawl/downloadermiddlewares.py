"""The last line of the downloader: every download failure becomes a counted, one-line skip.

Scrapy logs a download error that reaches a request without an errback at ERROR *with a traceback*.
Hostile servers (resets, truncated bodies, slow drips, oversized bodies) make such errors routine,
so this middleware — last in ``process_exception`` order, i.e. after retries gave up — counts the
failure under ``imagecrawl/download/errors/<kind>``, logs one WARNING line and turns it into
``IgnoreRequest`` (the original kind stays in ``request.meta["imagecrawl_download_error"]``).

It also counts image responses whose Content-Type is not an image type while their bytes are one
(``imagecrawl/media/content_type_mismatch``; the image is kept: bytes decide, not labels), and
:class:`HttpCompressionMiddleware` counts decompression bombs refused by DOWNLOAD_MAXSIZE
(``imagecrawl/download/errors/decompression_bomb``).
"""

from __future__ import annotations

import logging
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.httpcompression import (
    HttpCompressionMiddleware as ScrapyHttpCompressionMiddleware,
)
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.media import sniff_format
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("timeout", ("DownloadTimeoutError", "TimeoutError", "TCPTimedOutError", "UserTimeoutError")),
    ("maxsize", ("DownloadCancelledError", "CancelledError")),
    ("data_loss", ("ResponseDataLossError", "_DataLoss", "PotentialDataLoss")),
    ("connection_refused", ("DownloadConnectionRefusedError", "ConnectionRefusedError")),
    ("dns", ("CannotResolveHostError", "DNSLookupError")),
    (
        "connection",
        (
            "ResponseFailed",
            "ResponseNeverReceived",
            "ConnectionLost",
            "ConnectionDone",
            "ConnectionResetError",
            "ConnectionAbortedError",
            "DownloadFailedError",
            "ConnectError",
        ),
    ),
    ("tls", ("SSLError", "TLSError")),
)


def error_kind(exc: BaseException) -> str:
    """A short, stable stats key for a download exception (a capped set, never free text)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        for kind, candidates in _KINDS:
            if names.intersection(candidates):
                return kind
        current = current.__cause__ or current.__context__
    return "other"


class DownloadErrorsMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not tuning(crawler.settings).download_errors_enabled:
            logger.warning("IMAGECRAWL_TUNING['download_errors_enabled'] is off: download errors log tracebacks")
            raise NotConfigured("IMAGECRAWL_TUNING['download_errors_enabled'] is off")
        return cls(crawler)

    def process_exception(self, request: Request, exception: Exception) -> None:
        if isinstance(exception, IgnoreRequest):
            return
        kind = error_kind(exception)
        request.meta[meta.DOWNLOAD_ERROR] = kind
        self.stats.inc_value(f"imagecrawl/download/errors/{kind}")
        logger.warning("Giving up on %s: %s (%s)", request.url, exception or type(exception).__name__, kind)
        raise IgnoreRequest(f"download failed ({kind}): {exception}") from exception

    def process_response(self, request: Request, response: Response) -> Response:
        if request.meta.get(meta.KIND) == "image" and response.status == 200:
            ctype = (response.headers.get(b"Content-Type") or b"").split(b";", 1)[0].strip().lower()
            if not ctype.startswith(b"image/") and sniff_format(response.body[:16]) is not None:
                self.stats.inc_value("imagecrawl/media/content_type_mismatch")
        return response


class RedirectLoopCounter:
    """Counts redirect chains Scrapy's RedirectMiddleware is about to abandon (REDIRECT_MAX_TIMES):
    Scrapy drops them with a DEBUG line and no stat. Sits just outside it (priority 601)."""

    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.max_times = crawler.settings.getint("REDIRECT_MAX_TIMES")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("REDIRECT_ENABLED"):
            raise NotConfigured("REDIRECT_ENABLED is off")
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        if (
            300 <= response.status < 400
            and b"Location" in response.headers
            and not request.meta.get("dont_redirect")
            and request.meta.get("redirect_times", 0) >= self.max_times
        ):
            self.stats.inc_value("imagecrawl/download/errors/redirect_loop")
            logger.warning("Giving up on %s: more than %d redirects", request.url, self.max_times)
        return response


class HttpCompressionMiddleware(ScrapyHttpCompressionMiddleware):
    """Scrapy's, counting the bodies it refuses because they decompress past DOWNLOAD_MAXSIZE. A policy
    file (``meta["imagecrawl_policy_file"]``: robots.txt, tdmrep.json) is left encoded: its reader
    decompresses it within its own budget (``IMAGECRAWL_TUNING['policy_max_bytes']``)."""

    def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]
        if request.meta.get(meta.POLICY_FILE) is not None:
            return response
        try:
            return super().process_response(request, response)
        except IgnoreRequest:
            if self.stats is not None:
                self.stats.inc_value("imagecrawl/download/errors/decompression_bomb")
            raise
