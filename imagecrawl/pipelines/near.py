"""Near-duplicate dedupe: drop an image whose perceptual hash is within ``IMAGECRAWL_NEAR_MAX_DISTANCE``
bits of one already accepted (committed, or on its way to the store) — the same picture re-encoded,
resized or slightly edited.

Runs after the exact dedupe (:mod:`.dedupe`). The index (:mod:`imagecrawl.dedupe.near`) is SQLite in the
store's state folder for one process, or Redis (:mod:`imagecrawl.dedupe.redis_near`) when the crawl is
distributed, so every worker sees every worker's images. An image is added to the index when it is
accepted, not when its shard commits: another worker's near copy is refused from that moment on (the
window left is one Redis round trip). If the accepting worker dies before committing, its leases bring
the same record back, and a hit on the record's own id does not count.
"""

from __future__ import annotations

import logging
from typing import Any, Self

import pyarrow.parquet as pq
from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.dedupe.near import DEFAULT_MAX_DISTANCE, SqliteNearIndex
from imagecrawl.pipelines._state import CrawlStorage, crawl_storage

logger = logging.getLogger(__name__)


class NearDuplicateItem(DropItem):
    """Dropped because a perceptually near image is already accepted."""


def open_near_index(crawler: Crawler, storage: CrawlStorage) -> Any:
    settings = crawler.settings
    backend = str(settings.get("IMAGECRAWL_NEAR_BACKEND") or "auto").lower()
    if backend not in ("auto", "sqlite", "redis"):
        raise ValueError(f"IMAGECRAWL_NEAR_BACKEND must be auto, sqlite or redis, got {backend!r}")
    from imagecrawl.distributed.config import DEFAULT_PREFIX, ledger_prefix, redis_url

    url = redis_url(settings)
    if backend == "redis" or (backend == "auto" and url):
        if not url:
            raise ValueError("IMAGECRAWL_NEAR_BACKEND=redis needs IMAGECRAWL_REDIS_URL (or REDIS_URL)")
        import redis

        from imagecrawl.dedupe.redis_near import RedisNearIndex

        prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX") or DEFAULT_PREFIX)
        namespace = ledger_prefix(prefix, storage.store.url).replace(":ledger:", ":near:").rstrip(":")
        logger.info("Near-duplicate index in Redis (%s)", namespace)
        return RedisNearIndex(redis.Redis.from_url(url), namespace=namespace)
    return SqliteNearIndex(storage.state_dir / "near.sqlite3")


class NearDedupePipeline:
    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.storage = crawl_storage(crawler)
        self.max_distance = crawler.settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE", DEFAULT_MAX_DISTANCE)
        self.index = open_near_index(crawler, self.storage)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_NEAR_DEDUPE_ENABLED", False):
            raise NotConfigured("IMAGECRAWL_NEAR_DEDUPE_ENABLED is off")
        return cls(crawler)

    def open_spider(self) -> None:
        if len(self.index):
            return
        # A new index for a store that has shards: index them first (adds are idempotent per record id).
        rows = 0
        store = self.storage.store
        for shard in store.list_shards():
            with store.open(shard.key) as fh:
                cols = pq.read_table(fh, columns=["id", "image_phash"]).to_pydict()
            batch = [(i, h) for i, h in zip(cols["id"], cols["image_phash"], strict=True) if h is not None]
            self.index.add_many(batch)
            rows += len(batch)
        if rows:
            self.stats.inc_value("imagecrawl/dedupe/near/indexed_from_store", rows)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        phash = adapter.get("image_phash")
        if phash is None:
            return item
        item_id = str(adapter["id"])
        hit = self.index.query(int(phash), self.max_distance)
        if hit is not None and hit[0] != item_id:
            self.stats.inc_value("imagecrawl/dedupe/dropped/near")
            raise NearDuplicateItem(
                f"near duplicate of {hit[0]} (distance {hit[1]}): {item_id} ({adapter.get('image_url')})",
                log_level="DEBUG",
            )
        self.index.add(item_id, int(phash))
        return item

    def close_spider(self) -> None:
        self.index.close()
