"""Last pipeline: write records into Parquet shards and hand finished shards to the outbox, which
commits them to the store (atomic rename locally; a completed upload on S3) and the dedupe ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl.items import PromptImage
from imagecrawl.schema import COLUMNS
from imagecrawl.storage.context import CrawlStorage, crawl_context
from imagecrawl.storage.outbox import Outbox
from imagecrawl.storage.shards import ShardWriter, partition_of, shard_key
from imagecrawl.storage.stores import LocalStore

logger = logging.getLogger(__name__)


def _row(item: Any) -> dict[str, Any]:
    if isinstance(item, PromptImage):
        return {name: getattr(item, name) for name in COLUMNS}
    adapter = ItemAdapter(item)
    return {name: adapter.get(name) for name in COLUMNS}


class ParquetPipeline:
    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.max_rows = settings.getint("IMAGECRAWL_SHARD_MAX_ROWS")
        self.max_bytes = settings.getint("IMAGECRAWL_SHARD_MAX_BYTES")
        self.max_seconds = settings.getfloat("IMAGECRAWL_SHARD_MAX_SECONDS")
        self.row_group_rows = max(1, settings.getint("IMAGECRAWL_ROW_GROUP_ROWS"))
        self.close_timeout = settings.getfloat("IMAGECRAWL_CLOSE_COMMIT_TIMEOUT_SECONDS")
        self.flush_seconds = settings.getfloat("IMAGECRAWL_SPOOL_FLUSH_SECONDS")
        self.spool_batch_rows = max(1, settings.getint("IMAGECRAWL_SPOOL_BATCH_ROWS"))
        self.storage: CrawlStorage = crawl_context(crawler).storage
        self.outbox = Outbox(
            self.storage.state_dir / "outbox",
            self.storage.store,
            self.storage.ledger,
            max_bytes=settings.getint("IMAGECRAWL_OUTBOX_MAX_BYTES"),
            retry_initial=settings.getfloat("IMAGECRAWL_COMMIT_RETRY_SECONDS"),
            on_event=lambda name, n: self.stats.inc_value(f"imagecrawl/store/{name}", n),
        )
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        self.seq = 0
        self._age_task: asyncio.Task[None] | None = None
        crawler.signals.connect(self._engine_started, signal=signals.engine_started)
        if settings.getbool("IMAGECRAWL_SHARD_FLUSH_ON_IDLE"):
            # Distributed crawls: an idle worker commits what it holds, so the crawl's leases can end.
            crawler.signals.connect(self._flush_idle, signal=signals.spider_idle)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_PARQUET_ENABLED"):
            raise NotConfigured("IMAGECRAWL_PARQUET_ENABLED is off")
        return cls(crawler)

    # -- lifecycle ----------------------------------------------------------------------------
    async def open_spider(self) -> None:
        store = self.storage.store
        if isinstance(store, LocalStore):
            store.clean_staging()
        try:
            keys = {shard.key for shard in await asyncio.to_thread(lambda: list(store.list_shards()))}
        except Exception as exc:
            # Unknown: shards left in the outbox are uploaded again (same key, same bytes: harmless).
            logger.warning("Cannot list the store %s (%s); outbox shards will be uploaded again", store.url, exc)
            keys = set()
        self.outbox.recover(keys, self.row_group_rows)

    def _engine_started(self) -> None:
        if self.flush_seconds > 0:
            self._age_task = asyncio.get_running_loop().create_task(self._age_loop())

    async def close_spider(self) -> None:
        if self._age_task is not None:
            self._age_task.cancel()
        for partition in list(self.writers):
            self._finish(partition)
        left = await self.outbox.close(self.close_timeout)
        self.stats.set_value("imagecrawl/store/outbox_pending", len(left))
        if left:
            self.stats.set_value("imagecrawl/exit_code", 3)
            logger.error(
                "The store %s did not accept %d shard(s); they wait in %s and the next run with the same "
                "store commits them first: %s",
                self.storage.store.url,
                len(left),
                self.outbox.dir,
                ", ".join(left),
            )
        self.storage.close()

    # -- items --------------------------------------------------------------------------------
    async def process_item(self, item: Any) -> Any:
        await self.outbox.wait_for_room()
        row = _row(item)
        partition = partition_of(row)
        writer = self.writers.get(partition)
        if writer is None:
            self.seq += 1
            key = shard_key(partition, self.storage.run_id, self.seq)
            writer = ShardWriter(
                key=key,
                path=self.outbox.path_for(key),
                row_group_rows=self.row_group_rows,
                spool_batch_rows=self.spool_batch_rows,
                owner=self.outbox.owner,
            )
            self.writers[partition] = writer
        writer.add(row)
        self.stats.inc_value("imagecrawl/parquet/rows")
        if writer.rows >= self.max_rows or writer.bytes >= self.max_bytes:
            self._finish(partition)
        return item

    async def _age_loop(self) -> None:
        """Every second: make buffered rows durable in the spool, and finish shards past their age."""
        while True:
            await asyncio.sleep(self.flush_seconds)
            self.storage.ledger.heartbeat()
            now = time.monotonic()
            for partition, writer in list(self.writers.items()):
                if self.max_seconds > 0 and writer.rows and now - writer.opened_at >= self.max_seconds:
                    self._finish(partition)
                else:
                    writer.flush()

    def _flush_idle(self) -> None:
        for partition, writer in list(self.writers.items()):
            if writer.rows:
                self._finish(partition)

    def _finish(self, partition: tuple[str, str]) -> None:
        writer = self.writers.pop(partition, None)
        if writer is None:
            return
        if writer.rows == 0:
            writer.abort()
            return
        self.outbox.submit(writer.close(), writer.key, writer.entries)
        self.stats.inc_value("imagecrawl/parquet/shards_written")
