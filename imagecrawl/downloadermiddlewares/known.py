"""Skip downloading an image whose record is already in the store (or on its way there).

This is what makes a restart cheap and safe: after a crash, the crawl walks its pages again and only
images that never reached a committed shard are fetched again. Record ids (``source:source_id``) are
checked when the spider knows them; otherwise the image URL is.
"""

from __future__ import annotations

import logging
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from imagecrawl import meta
from imagecrawl.extensions.storage import crawl_storage

logger = logging.getLogger(__name__)


class KnownImageMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.storage = crawl_storage(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_SKIP_KNOWN_IMAGES"):
            raise NotConfigured("IMAGECRAWL_SKIP_KNOWN_IMAGES is off")
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        if request.meta.get(meta.KIND) != "image":
            return
        ledger = self.storage.ledger
        record_id = request.meta.get(meta.RECORD_ID)
        factory = getattr(ledger, "worker", None)
        if factory is not None:  # the embedded ledger: batched, off the event loop
            known = await factory().known(record_id, request.url)
        elif record_id and ledger.has_id(record_id):
            known = "id"
        else:
            known = "url" if ledger.has_url(request.url) else None
        if known == "id":
            self.stats.inc_value("imagecrawl/dedupe/skipped_known/id")
            raise IgnoreRequest(f"record {record_id} is already in the store")
        if known == "url":
            self.stats.inc_value("imagecrawl/dedupe/skipped_known/url")
            raise IgnoreRequest(f"image {request.url} is already in the store")
