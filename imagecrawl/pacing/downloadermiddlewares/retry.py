"""Retries later, never at once: Scrapy's ``get_retry_request`` plus a backoff the pacing gate enforces.

``BackoffRetryMiddleware`` replaces Scrapy's RetryMiddleware (which retries a 429 immediately and
ignores Retry-After). Retries go back through the scheduler with ``imagecrawl_not_before`` set
(exponential backoff with jitter, at least the Retry-After the site sent), so they re-enter the
pacing gate and never go out at once. The retry itself (counting, ``max_retry_times``, priority,
the give-up log line) is Scrapy's :func:`scrapy.downloadermiddlewares.retry.get_retry_request`, with
stats under ``imagecrawl/retry/`` (``count``, ``reason_count/<reason>``, ``max_reached``).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.utils.misc import load_object

from imagecrawl import meta
from imagecrawl.pacing.config import RetryConfig

logger = logging.getLogger(__name__)

#: pacing keys of the attempt that failed: a retry takes a fresh slot at the gate
_ATTEMPT_KEYS = (meta.SENT_AT, meta.PACING_GRANTED, meta.RETRY_AFTER)


def retry_later(crawler: Crawler, request: Request, reason: str, delay: float, config: RetryConfig) -> Request | None:
    """A copy of ``request`` that the pacing gate holds until ``delay`` seconds from now, or ``None``
    (counted and logged) once ``max_retry_times`` / ``RETRY_TIMES`` retries are used up."""
    assert crawler.spider is not None and crawler.stats is not None
    max_times = request.meta.get("max_retry_times")
    new = get_retry_request(
        request,
        spider=crawler.spider,
        reason=reason,
        max_retry_times=int(max_times) if max_times is not None else config.times,
        priority_adjust=config.priority_adjust,
        logger=logger,
        give_up_log_level=logging.WARNING,
        stats_base_key="imagecrawl/retry",
    )
    if new is None:
        crawler.stats.inc_value(f"imagecrawl/retry/max_reached/{reason}")
        return None
    for key in _ATTEMPT_KEYS:
        new.meta.pop(key, None)
    new.meta[meta.NOT_BEFORE] = time.time() + delay
    return new


class BackoffRetryMiddleware:
    """Retries 429/503/5xx answers and network errors later, never at once, a bounded number of times."""

    def __init__(self, crawler: Crawler, config: RetryConfig) -> None:
        self.crawler = crawler
        self.config = config
        self.rng = random.Random()
        self.exceptions = tuple(
            load_object(x) if isinstance(x, str) else x for x in crawler.settings.getlist("RETRY_EXCEPTIONS")
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = RetryConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("RETRY_ENABLED is off")
        return cls(crawler, config)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get("dont_retry") or response.status not in self.config.http_codes:
            return response
        retry = self._retry(request, str(response.status), request.meta.get(meta.RETRY_AFTER))
        return retry or response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if request.meta.get("dont_retry") or not isinstance(exception, self.exceptions):
            return None
        if meta.POLICY_FILE in request.meta or request.meta.get(meta.KIND) in ("robots", "tdmrep"):
            return None  # a policy fetch: fetched again with the site's next request (the circuit decides)
        return self._retry(request, type(exception).__name__, None)

    def _retry(self, request: Request, reason: str, retry_after: float | None) -> Request | None:
        if reason == "429":
            # "Too many requests" is about the site's pace, not this request: the pacing gate has
            # already slowed the whole site down (and closed it for a Retry-After), so the retry waits
            # only for that pause and then its turn at the gate; a backoff of its own on top kept the
            # site idle at the end of its list while its last retries waited
            delay = (retry_after or 0.0) + self.rng.uniform(0, 0.5)
        else:
            delay = self.config.backoff(int(request.meta.get("retry_times", 0)) + 1, self.rng)
            if retry_after is not None:
                delay = max(delay, retry_after + self.rng.uniform(0, 0.5))
        return retry_later(self.crawler, request, reason, delay, self.config)
