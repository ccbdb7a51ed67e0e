"""Skip downloading an image whose record is already in the store (or on its way there).

This is what makes a restart cheap and safe: after a crash, the crawl walks its pages again and only
images that never reached a committed shard are fetched again. Record ids (``source:source_id``) are
checked when the spider knows them; otherwise the image URL is. An image forgotten with
``imagecrawl forget`` (its id or URL has a tombstone) is never fetched again.
"""

from __future__ import annotations

import logging
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from imagecrawl import meta
from imagecrawl.forget.crawl import count_refused, tombstones
from imagecrawl.storage.extensions import crawl_storage

logger = logging.getLogger(__name__)


class KnownImageMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.crawler = crawler
        self.storage = crawl_storage(crawler)
        self.tombstones = tombstones(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_SKIP_KNOWN_IMAGES"):
            raise NotConfigured("IMAGECRAWL_SKIP_KNOWN_IMAGES is off")
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        if request.meta.get(meta.KIND) != "image":
            return
        record_id = request.meta.get(meta.RECORD_ID)
        forgotten = self.tombstones.before_fetch(record_id, request.url)
        if forgotten is not None:  # docs/forget.md: forgotten is never fetched again
            count_refused(self.crawler, forgotten)
            raise IgnoreRequest(f"image {request.url} was forgotten ({forgotten}): not fetched")
        known = await self.storage.ledger_async.known(record_id, request.url)
        if known == "id":
            self.stats.inc_value("imagecrawl/dedupe/skipped_known/id")
            raise IgnoreRequest(f"record {record_id} is already in the store")
        if known == "url":
            self.stats.inc_value("imagecrawl/dedupe/skipped_known/url")
            raise IgnoreRequest(f"image {request.url} is already in the store")
