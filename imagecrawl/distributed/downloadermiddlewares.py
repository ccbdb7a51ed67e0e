"""The shared per-site rate gate closest to the network, for crawls without the pacing middleware.

:class:`GlobalRateMiddleware`: requests the shared frontier (:mod:`.scheduler`) let out hold their slot
already; any other (robots.txt, a component's own fetch) waits at its site's shared gate here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.distributed.config import redis_url
from imagecrawl.distributed.gate import SHARED_LATE_SECONDS
from imagecrawl.distributed.ratelimit import RedisRateLimiter
from imagecrawl.pacing import CONGESTION, parse_retry_after
from imagecrawl.pacing.config import site_key_mode
from imagecrawl.pacing.signals import classify_exception, classify_status
from imagecrawl.pacing.sitekey import site_of_url
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)


class GlobalRateMiddleware:
    """Lets a request the shared frontier granted go, makes any other wait at the site's shared gate
    (:mod:`.ratelimit`) right before it leaves, and reports
    what the site answered, so every worker slows down on one worker's 429 or Retry-After. Only for
    crawls without the pacing middleware (which waits at the shared gate itself, :class:`.gate.RedisGate`)."""

    def __init__(self, crawler: Crawler, limiter: RedisRateLimiter) -> None:
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.limiter = limiter
        self.site_key = site_key_mode(crawler.settings)
        self.retry_after_max = tuning(crawler.settings).retry_after_max_seconds

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        if not redis_url(settings):
            raise NotConfigured("no IMAGECRAWL_REDIS_URL / REDIS_URL: no shared rate limit")
        if pacing_uses_shared_gate(settings):
            raise NotConfigured("the pacing middleware waits at the shared gate itself (RedisGate)")
        limiter = crawl_context(crawler).shared_limiter()
        if limiter is None:
            raise NotConfigured("IMAGECRAWL_TUNING['redis_rate_enabled'] is off")
        return cls(crawler, limiter)

    def site_of(self, request: Request) -> str:
        return site_of_url(request.url, self.site_key)

    async def process_request(self, request: Request) -> None:
        if request.meta.get(meta.DONT_PACE):
            return
        if request.meta.get(meta.PACING_GRANTED) == SHARED_GRANT:
            del request.meta[meta.PACING_GRANTED]
            granted_at = float(request.meta.get(meta.SENT_AT, 0.0))
            if time.monotonic() - granted_at <= SHARED_LATE_SECONDS:
                # The shared frontier let it out with its slot taken (imagecrawl.distributed.scheduler)
                self.stats.inc_value("imagecrawl/distributed/rate/granted")
                return
            # It left late (it waited for robots.txt): its slot is long past, it takes a fresh one.
        # Not from the shared frontier (robots.txt, a component's own fetch): it waits here, counted.
        site = self.site_of(request)
        waited = 0.0
        while True:
            wait = self.limiter.acquire(site)
            if wait <= 0:
                break
            nap = min(wait, MAX_NAP_SECONDS)
            waited += nap
            await asyncio.sleep(nap)
        if waited:
            self.stats.inc_value("imagecrawl/distributed/rate/waits")
            self.stats.inc_value("imagecrawl/distributed/rate/wait_ms", round(waited * 1000))
        self.stats.inc_value("imagecrawl/distributed/rate/granted")

    def process_response(self, request: Request, response: Response) -> Response:
        if request.meta.get(meta.DONT_PACE):
            return response
        site = self.site_of(request)
        signal = classify_status(response.status)
        if signal in CONGESTION:
            parsed = parse_retry_after(response.headers.get(b"Retry-After"), time.time(), self.retry_after_max)
            retry_after = parsed.pause_seconds() if parsed is not None and parsed.seconds > 0 else None
            if retry_after and self.limiter.pause(site, retry_after):
                self.stats.inc_value("imagecrawl/distributed/rate/retry_after")
                logger.info(
                    "%s answered %d with Retry-After %.1fs: every worker waits", site, response.status, retry_after
                )
            rate = self.limiter.congestion(site)
            if rate is not None:
                self.stats.inc_value(f"imagecrawl/distributed/rate/decrease/{response.status}")
                logger.info("%s answered %d: shared rate cut to %.3g req/s", site, response.status, rate)
        elif 200 <= response.status < 400:
            self.limiter.healthy(site)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if request.meta.get(meta.DONT_PACE):
            return
        signal = classify_exception(exception)
        if signal in CONGESTION and self.limiter.congestion(self.site_of(request)) is not None:
            self.stats.inc_value(f"imagecrawl/distributed/rate/decrease/{signal.value}")


MAX_NAP_SECONDS = 1.0
#: ``imagecrawl_pacing_granted`` of a request the shared frontier let out while the pacing middleware is
#: off: its shared rate slot is taken (:mod:`.scheduler`), it does not wait again here
SHARED_GRANT = "shared"

PACING_MIDDLEWARE = "imagecrawl.pacing.downloadermiddlewares.pacing.PacingMiddleware"


def pacing_uses_shared_gate(settings: Any) -> bool:
    """True when the pacing middleware is on: it then wraps its gate in :class:`.gate.RedisGate`."""
    if not settings.getbool("IMAGECRAWL_PACING_ENABLED"):
        return False
    mws = settings.getwithbase("DOWNLOADER_MIDDLEWARES")
    return any(_path_of(path) == PACING_MIDDLEWARE and order is not None for path, order in mws.items())


def _path_of(component: Any) -> str:
    """A component's import path, whether named by its path or given as the class (as add-ons do)."""
    if isinstance(component, str):
        return component
    return f"{getattr(component, '__module__', '')}.{getattr(component, '__qualname__', '')}"
