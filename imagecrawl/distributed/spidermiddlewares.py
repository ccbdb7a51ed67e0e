"""Where a leased request's work ends, seen from inside the crawl (see :mod:`.worker`).

:class:`LeaseSpiderMiddleware` (closest to the engine) sees every response's callback output: items are
bound to the request's lease (the lease ends when they are committed; see :mod:`.worker` for the hook
that sees the end of every request, failures included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.distributed.config import redis_url
from imagecrawl.distributed.worker import Worker, worker_for


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
        lease = response.request.meta.get(meta.LEASE) if response.request is not None else None
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
