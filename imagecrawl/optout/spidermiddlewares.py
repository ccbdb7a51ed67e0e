"""Drop the image requests found on a page that opted out (HTML meta robots, X-Robots-Tag on the
page, TDMRep header/meta on the page): those images are never requested.

The decision is made by :class:`imagecrawl.optout.downloadermiddlewares.optout.OptOutMiddleware` when the
page arrives and stored in ``response.meta["imagecrawl_optout_page"]``; this middleware only
filters, so spiders need no change: any ``Request`` with ``meta["imagecrawl_kind"] == "image"``
(what :meth:`imagecrawl.spider.ImageSpider.image_request` builds) coming out of such a page is
dropped and counted under ``imagecrawl/optout/<reason>``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.optout.downloadermiddlewares.optout import skip_log
from imagecrawl.optout.skiplog import SkipLog

logger = logging.getLogger(__name__)


class OptOutSpiderMiddleware:
    def __init__(self, ledger: SkipLog) -> None:
        self.ledger = ledger

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = OptOutConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("IMAGECRAWL_OPTOUT_ENABLED is off")  # the downloader side warns
        if not getattr(crawler.spidercls, "requests_from_pages", True):
            # a spider whose callbacks never request an image (the ``urls`` spider: its image requests
            # come from ``start()``, which this middleware never sees): nothing to filter, and no
            # async-generator layer around every image's callback output
            raise NotConfigured
        return cls(skip_log(crawler))

    def _keep(self, response: Response, item: Any) -> bool:
        if not isinstance(item, Request) or item.meta.get(meta.KIND) != "image":
            return True
        page = response.meta.get(meta.OPTOUT_PAGE) if response.request is not None else None
        if not page:
            return True
        self.ledger.skip(page["reason"], item.url, f"on opted-out page: {page['detail']}", page=response.url)
        return False

    def process_spider_output(self, response: Response, result: Iterable[Any]) -> Iterable[Any]:
        for item in result:
            if self._keep(response, item):
                yield item

    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in result:
            if self._keep(response, item):
                yield item
