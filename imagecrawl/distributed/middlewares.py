"""Where a leased request's work ends, seen from inside the crawl (see :mod:`.worker`).

- :class:`LeaseSpiderMiddleware` (closest to the engine) sees every response's callback output: items are
  bound to the request's lease (the lease ends when they are committed; see :mod:`.worker` for the
  hook that sees the end of every request, failures included);
- :class:`GlobalRateMiddleware` (closest to the network) holds each request at its site's shared gate.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from imagecrawl.distributed.config import DEFAULT_PREFIX, LEASE_META, redis_url
from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.distributed.worker import Worker, worker_for

logger = logging.getLogger(__name__)


def _worker(crawler: Crawler) -> Worker | None:
    if not redis_url(crawler.settings):
        raise NotConfigured("no IMAGECRAWL_REDIS_URL / REDIS_URL: not a distributed crawl")
    return worker_for(crawler)


class LeaseSpiderMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        _worker(crawler)
        return cls(crawler)

    @property
    def worker(self) -> Worker | None:
        return worker_for(self.crawler)  # created by the scheduler, after the middlewares

    async def process_spider_output(self, response: Response, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        worker = self.worker
        lease = response.request.meta.get(LEASE_META) if response.request is not None else None
        if worker is None or lease is None:
            async for output in result:
                yield output
            return
        try:
            async for output in result:
                if not isinstance(output, Request) and output is not None:
                    worker.bind_item(lease, output)
                yield output
        finally:
            # Requests yielded above are queued by now (the scraper schedules each one synchronously
            # before it asks for the next output); items settle when committed or dropped. (The
            # scraper's finish hook in .worker calls this again for every request: it is idempotent.)
            worker.callback_done(lease)


class GlobalRateMiddleware:
    """Waits at the site's shared gate (:mod:`.ratelimit`) right before a request leaves, and reports
    what the site answered, so every worker slows down on one worker's 429 or Retry-After."""

    def __init__(self, crawler: Crawler, limiter: RedisRateLimiter, retry_after_max: float) -> None:
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.limiter = limiter
        self.retry_after_max = retry_after_max

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        url = redis_url(settings)
        if not url:
            raise NotConfigured("no IMAGECRAWL_REDIS_URL / REDIS_URL: no shared rate limit")
        if not settings.getbool("IMAGECRAWL_REDIS_RATE_ENABLED", True):
            raise NotConfigured("IMAGECRAWL_REDIS_RATE_ENABLED is off")
        if pacing_uses_shared_gate(settings):
            raise NotConfigured("the pacing middleware waits at the shared gate itself (RedisGate)")
        import redis

        prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX") or DEFAULT_PREFIX)
        limiter = RedisRateLimiter(redis.Redis.from_url(url), prefix, RateConfig.from_settings(settings))
        return cls(crawler, limiter, settings.getfloat("IMAGECRAWL_RETRY_AFTER_MAX_SECONDS", 3600.0))

    async def process_request(self, request: Request) -> None:
        if request.meta.get("imagecrawl_dont_pace"):
            return
        site = site_of(request.url)
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
        if request.meta.get("imagecrawl_dont_pace"):
            return response
        site = site_of(request.url)
        if response.status in CONGESTION_STATUSES:
            retry_after = parse_retry_after(response.headers.get(b"Retry-After"), self.retry_after_max)
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
        if type(exception).__name__ not in TIMEOUT_EXCEPTIONS or request.meta.get("imagecrawl_dont_pace"):
            return
        if self.limiter.congestion(site_of(request.url)) is not None:
            self.stats.inc_value("imagecrawl/distributed/rate/decrease/timeout")


MAX_NAP_SECONDS = 1.0
CONGESTION_STATUSES = frozenset({429, 503})
TIMEOUT_EXCEPTIONS = frozenset({"TimeoutError", "DownloadTimeoutError", "TCPTimedOutError"})


PACING_MIDDLEWARE = "imagecrawl.downloadermiddlewares.pacing.PacingMiddleware"


def pacing_uses_shared_gate(settings: Any) -> bool:
    """True when the pacing middleware is on: it then wraps its gate in :class:`.gate.RedisGate`."""
    if not settings.getbool("IMAGECRAWL_PACING_ENABLED", True):
        return False
    mws = settings.getwithbase("DOWNLOADER_MIDDLEWARES")
    return any(str(path) == PACING_MIDDLEWARE and order is not None for path, order in mws.items())


def site_of(url: str) -> str:
    """The rate-limit key of a URL: its host name, as the pacing middleware's default ``host`` site key
    (every port of a host is one site: one machine to be polite to)."""
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def parse_retry_after(value: bytes | str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, cap)
