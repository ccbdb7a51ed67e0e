"""Crawl-delay per site, parsed from robots.txt, handed to the pacing middleware. Pure.

The robots.txt middleware (:class:`imagecrawl.optout.downloadermiddlewares.robots.RobotsMiddleware`)
stores the delay for our User-Agent token when robots.txt is parsed; the crawl's registry is::

    from imagecrawl.optout.downloadermiddlewares.robots import crawl_delays
    delay = crawl_delays(crawler).get(urlparse_cached(request).netloc)   # seconds or None

Keys are URL netlocs (``host`` or ``host:port``, as in ``urlparse(url).netloc``), the same keys
Scrapy's robots.txt middleware uses. ``listeners`` are called with ``(netloc, delay)`` on each update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

#: A robots.txt asking for more than this is clamped (a day-long delay is a typo or a trap).
MAX_CRAWL_DELAY_SECONDS: Final = 300.0


class CrawlDelays:
    def __init__(self) -> None:
        self._delays: dict[str, float] = {}
        self.listeners: list[Callable[[str, float | None], None]] = []

    def set(self, netloc: str, delay: float | None) -> None:
        if delay is not None and (not math.isfinite(delay) or delay < 0):
            delay = None
        if delay is not None:
            delay = min(delay, MAX_CRAWL_DELAY_SECONDS)
            self._delays[netloc] = delay
        else:
            self._delays.pop(netloc, None)
        for listener in list(self.listeners):
            listener(netloc, delay)

    def get(self, netloc: str) -> float | None:
        return self._delays.get(netloc)

    def as_dict(self) -> dict[str, float]:
        return dict(self._delays)
