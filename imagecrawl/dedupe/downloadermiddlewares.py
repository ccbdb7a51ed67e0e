"""Skip downloading an image whose record is already in the store (or on its way there).

This is what makes a restart cheap and safe: after a crash, the crawl walks its pages again and only
images that never reached a committed shard are fetched again. Record ids (``source:source_id``) are
checked when the spider knows them; otherwise the image URL is. An image forgotten with
``imagecrawl forget`` (its id or URL has a tombstone) is never fetched again.

An image that another run writing into the same store has *claimed* is neither fetched nor skipped: that
row is on its way to the store but may still be lost with that run (a full disk, a kill). The request
goes back to the frontier (``meta.NOT_BEFORE``: 1, 2, 4 … 60 s later, holding no download slot; with a
JOBDIR it is saved like any other) and is asked about again, until that run commits the row (skipped)
or gives it up (fetched). Past ``IMAGECRAWL_TUNING['claim_wait_seconds']`` it is fetched anyway, and the
dedupe pipeline decides.
"""

from __future__ import annotations

import logging
import time
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from imagecrawl import meta
from imagecrawl.forget.crawl import count_refused, tombstones
from imagecrawl.storage.extensions import crawl_storage
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)


class KnownImageMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.crawler = crawler
        self.storage = crawl_storage(crawler)
        self.tombstones = tombstones(crawler)
        self.claim_wait = tuning(crawler.settings).claim_wait_seconds

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_SKIP_KNOWN_IMAGES"):
            raise NotConfigured("IMAGECRAWL_SKIP_KNOWN_IMAGES is off")
        return cls(crawler)

    async def process_request(self, request: Request) -> Request | None:
        if request.meta.get(meta.KIND) != "image":
            return None
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
        if known in ("claimed", "orphaned"):
            return self._wait_for_claim(request)
        return None

    def _wait_for_claim(self, request: Request) -> Request | None:
        """The request again, due a little later (another run holds the claim on its image); None (fetch it
        now) once it waited ``claim_wait_seconds``."""
        now = time.time()
        first, times = request.meta.get(meta.CLAIM_WAIT) or (now, 0)
        if now - float(first) >= self.claim_wait:
            self.stats.inc_value("imagecrawl/dedupe/claim_wait/fetched")
            logger.info(
                "Image %s: another run has held its claim for %.0f s without storing it; fetched (the dedupe "
                "pipeline decides)",
                request.url,
                now - float(first),
            )
            return None
        if not times:
            self.stats.inc_value("imagecrawl/dedupe/claim_wait/images")
        self.stats.inc_value("imagecrawl/dedupe/claim_wait/requeued")
        again = request.replace(dont_filter=True)
        again.meta.pop(meta.FRONTIER_KEY, None)  # it waits its turn behind the site's queue, not at its head
        again.meta[meta.CLAIM_WAIT] = [float(first), int(times) + 1]
        again.meta[meta.NOT_BEFORE] = now + min(60.0, 2.0 ** min(int(times), 6))
        return again
