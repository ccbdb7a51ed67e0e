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
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.items import PromptImage
from imagecrawl.schema import COLUMNS
from imagecrawl.storage.context import CrawlStorage, crawl_context
from imagecrawl.storage.outbox import Outbox
from imagecrawl.storage.shards import ShardWriter, SpoolWriteError, partition_of, shard_key
from imagecrawl.storage.stores import LocalStore

logger = logging.getLogger(__name__)

#: ``scrapy crawl`` exits with this when the local disk refused a write (the crawl stops)
WRITE_ERROR_EXIT_CODE = 5
WRITE_ERROR_REASON = "spool_write_error"


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
        self._stopping: asyncio.Future[None] | None = None
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
            if not self.stats.get_value("imagecrawl/exit_code"):
                self.stats.set_value("imagecrawl/exit_code", 3)
            logger.error(
                "The store %s did not accept %d shard(s); they wait in %s and the next run with the same "
                "store commits them first: %s",
                self.storage.store.url,
                len(left),
                self.outbox.dir,
                ", ".join(left),
            )
        else:
            for hook in crawl_context(self.crawler).commit_hooks:
                hook()
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
        try:
            writer.add(row)
        except SpoolWriteError as exc:
            self._write_failed(exc)
            raise DropItem(f"not stored: {exc}") from None
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
                    try:
                        writer.flush()
                    except SpoolWriteError as exc:
                        self._write_failed(exc)

    def _flush_idle(self) -> None:
        for partition, writer in list(self.writers.items()):
            if writer.rows:
                self._finish(partition)

    def _write_failed(self, exc: OSError) -> None:
        """The local disk refused a write: stop the crawl (once) with a clear reason and exit status.
        What is durable stays in the spool and becomes a shard now or at the next start."""
        self.stats.inc_value("imagecrawl/store/write_errors")
        if self._stopping is not None:
            return
        self.stats.set_value("imagecrawl/exit_code", WRITE_ERROR_EXIT_CODE)
        logger.error(
            "Cannot write to %s (%s): the crawl stops; rows already spooled are kept and committed, the "
            "rest is crawled again by the next run once there is room",
            self.outbox.dir,
            exc,
        )
        engine = self.crawler.engine
        if engine is not None:
            self._stopping = asyncio.ensure_future(engine.close_spider_async(reason=WRITE_ERROR_REASON))

    def _finish(self, partition: tuple[str, str]) -> None:
        writer = self.writers.pop(partition, None)
        if writer is None:
            return
        if writer.durable_rows == 0 and (writer.failed is not None or writer.rows == 0):
            writer.abort()
            return
        try:
            path = writer.close()
            if not writer.entries:
                writer.abort()
                return
            self.outbox.submit(path, writer.key, writer.entries)
        except OSError as exc:
            # The spool (complete batches) stays in the outbox: the next start turns it into a shard.
            self._write_failed(exc)
            writer.path.unlink(missing_ok=True)
            return
        self.stats.inc_value("imagecrawl/parquet/shards_written")
