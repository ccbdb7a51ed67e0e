"""A load spider for the pacing tests and ``benchmarks/politeness.py``: ``n`` pages per site, round
robin over the given sites, nothing but requests (no items).

    scrapy crawl pacing_load -s SPIDER_MODULES=tests.pacing_spider \\
        -a urls=http://127.0.0.1:8765/,http://localhost:8765/ -a n=100
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.http import Response


class PacingLoadSpider(scrapy.Spider):
    name = "pacing_load"

    def __init__(
        self, urls: str = "", n: str = "50", path: str = "?i={i}", marker: str = "", busy: str = "0", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        # each entry: a base URL ending in "/" (``path`` is appended), a template with ``{i}``, or one
        # fixed URL (requested once: the duplicates are filtered)
        self.bases = [u for u in urls.split(",") if u]
        self.n = int(n)
        self.path = path
        self.marker = marker
        #: a crawler whose own work is heavy: every 2 x ``busy`` seconds, ``busy`` seconds of CPU work on the
        #: event loop (as a big conversion or a slow callback would do), whatever the site does
        self.busy = float(busy)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.busy > 0:
            asyncio.get_running_loop().call_later(self.busy, self._stall)
        meta = {"imagecrawl_healthy_marker": self.marker} if self.marker else {}
        for i in range(self.n):
            # lazy: Scrapy drains start() into the scheduler even while it backs out
            while self.crawler.engine is not None and self.crawler.engine.needs_backout():
                await asyncio.sleep(0.05)
            for base in self.bases:
                if "{i}" in base:
                    url = base.format(i=i)
                elif base.endswith("/"):
                    url = base + self.path.format(i=i)
                else:
                    url = base
                yield scrapy.Request(url, callback=self.parse, meta=dict(meta))

    def parse(self, response: Response) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("pacing_load/ok")

    def _stall(self) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("pacing_load/stalls")
        end = time.monotonic() + self.busy
        while time.monotonic() < end:
            pass
        asyncio.get_running_loop().call_later(self.busy, self._stall)
