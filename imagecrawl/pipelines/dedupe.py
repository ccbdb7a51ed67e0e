"""Exact dedupe: drop an image whose sha256 (or a record whose id) is already committed or pending."""

from __future__ import annotations

import logging
from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.dedupe.near import SqliteNearIndex
from imagecrawl.errors import ConfigError
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)


class DuplicateItem(DropItem):
    """Dropped because an equal image or id is already committed or pending."""


class DedupePipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.storage = crawl_context(crawler).storage
        settings = crawler.settings
        self.near_policy = settings.get("IMAGECRAWL_NEAR_POLICY")
        if self.near_policy not in ("drop", "keep"):
            raise ConfigError(f"IMAGECRAWL_NEAR_POLICY must be 'drop' or 'keep', not {self.near_policy!r}")
        self.near_distance = settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE")
        if settings.getbool("IMAGECRAWL_NEAR_DEDUPE_ENABLED") and self.storage.ledger.near is None:
            self.storage.ledger.enable_near(SqliteNearIndex(self.storage.state_dir / "near.sqlite3"))
        elif not settings.getbool("IMAGECRAWL_NEAR_DEDUPE_ENABLED"):
            logger.warning(
                "Near-duplicate dedupe is off (IMAGECRAWL_NEAR_DEDUPE_ENABLED): only exact copies are dropped"
            )
        crawler.signals.connect(self.item_dropped, signal=signals.item_dropped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_DEDUPE_ENABLED"):
            raise NotConfigured("IMAGECRAWL_DEDUPE_ENABLED is off")
        return cls(crawler)

    def open_spider(self) -> None:
        storage = self.storage
        if not storage.reconciled:
            try:
                added = storage.ledger.reconcile(storage.store)
            except Exception as exc:  # the store may be down; the crawl can still go on
                self.stats.inc_value("imagecrawl/store/list_errors")
                logger.warning(
                    "Cannot list the store %s to check the dedupe ledger against it (%s); going on with the "
                    "ledger as it is",
                    storage.store.url,
                    exc,
                )
                return
            storage.reconciled = True
            if added:
                self.stats.inc_value("imagecrawl/dedupe/reconciled_shards", added)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        ledger = self.storage.ledger
        sha, item_id, phash = adapter["image_sha256"], adapter["id"], adapter.get("image_phash")
        reason = ledger.duplicate_reason(sha, item_id)
        if reason is not None:
            self.stats.inc_value(f"imagecrawl/dedupe/dropped/{reason}")
            raise DuplicateItem(f"duplicate {reason}: {item_id} ({adapter.get('image_url')})", log_level="DEBUG")
        near = ledger.near_duplicate(phash, self.near_distance)
        if near is not None:
            other, distance = near
            if self.near_policy == "drop":
                self.stats.inc_value("imagecrawl/dedupe/dropped/near")
                raise DuplicateItem(f"near-duplicate of {other} (distance {distance}): {item_id}", log_level="DEBUG")
            adapter["duplicate_of"] = other
            self.stats.inc_value("imagecrawl/dedupe/kept_near")
        if not ledger.reserve(sha, item_id, adapter.get("image_url"), phash):
            # another process writing into the same store claimed it between the check and now
            self.stats.inc_value("imagecrawl/dedupe/dropped/claimed")
            raise DuplicateItem(f"duplicate (claimed elsewhere): {item_id}", log_level="DEBUG")
        self.stats.inc_value("imagecrawl/dedupe/unique")
        return item

    def item_dropped(self, item: Any, exception: BaseException) -> None:
        # A later pipeline refused a record this one reserved: free its hash again.
        if not isinstance(exception, DuplicateItem):
            adapter = ItemAdapter(item)
            self.storage.ledger.release(
                adapter.get("image_sha256", ""), adapter.get("id", ""), adapter.get("image_url")
            )
