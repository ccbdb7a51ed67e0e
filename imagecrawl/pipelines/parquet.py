"""Last pipeline: write records into Parquet shards and commit them to the store.

A shard is written to a local file in the state directory's ``outbox/``, then committed to the store
(atomic rename locally; a completed upload on S3), then recorded in the dedupe ledger, and only then
deleted locally. A shard whose commit failed stays in the outbox and is committed first by the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Self

import pyarrow.parquet as pq
from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl.items import PromptImage
from imagecrawl.pipelines._state import CrawlStorage, crawl_storage
from imagecrawl.schema import COLUMNS
from imagecrawl.storage.shards import ShardWriter, partition_of, shard_key

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
        self.storage: CrawlStorage = crawl_storage(crawler)
        self.outbox = self.storage.state_dir / "outbox"
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        self.seq = 0
        self._age_task: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self.failed: list[str] = []
        crawler.signals.connect(self._engine_started, signal=signals.engine_started)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_PARQUET_ENABLED", True):
            raise NotConfigured("IMAGECRAWL_PARQUET_ENABLED is off")
        return cls(crawler)

    # -- lifecycle ----------------------------------------------------------------------------
    async def open_spider(self) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        await self._drain_outbox()

    def _engine_started(self) -> None:
        if self.max_seconds > 0:
            self._age_task = asyncio.get_running_loop().create_task(self._age_loop())

    async def close_spider(self) -> None:
        if self._age_task is not None:
            self._age_task.cancel()
        for partition in list(self.writers):
            self._start_commit(partition)
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        if self.failed:
            self.stats.set_value("imagecrawl/store/outbox_pending", len(self.failed))
            logger.error(
                "%d shard(s) could not be committed to %s and wait in %s; the next run commits them first",
                len(self.failed),
                self.storage.store.url,
                self.outbox,
            )
        self.storage.close()

    # -- items --------------------------------------------------------------------------------
    def process_item(self, item: Any) -> Any:
        row = _row(item)
        partition = partition_of(row)
        writer = self.writers.get(partition)
        if writer is None:
            writer = self._open_writer(partition)
        writer.add(row)
        self.stats.inc_value("imagecrawl/parquet/rows")
        if writer.rows >= self.max_rows or writer.bytes >= self.max_bytes:
            self._start_commit(partition)
        return item

    def _open_writer(self, partition: tuple[str, str]) -> ShardWriter:
        self.seq += 1
        key = shard_key(partition, self.storage.run_id, self.seq)
        path = self.outbox / (key.replace("/", "__") + ".tmp")
        writer = ShardWriter(key=key, path=path, row_group_rows=self.row_group_rows)
        self.writers[partition] = writer
        return writer

    async def _age_loop(self) -> None:
        interval = min(5.0, max(0.2, self.max_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for partition, writer in list(self.writers.items()):
                if writer.rows and now - writer.opened_at >= self.max_seconds:
                    self._start_commit(partition)

    # -- commits ------------------------------------------------------------------------------
    def _start_commit(self, partition: tuple[str, str]) -> None:
        writer = self.writers.pop(partition, None)
        if writer is None or writer.rows == 0:
            if writer is not None:
                writer.abort()
            return
        tmp = writer.close()
        ready = tmp.with_suffix("")  # "<key>.parquet": complete, waiting to be committed
        tmp.rename(ready)
        self._write_sidecar(ready, writer.key, writer.entries)
        task = asyncio.get_running_loop().create_task(self._commit(ready, writer.key, writer.entries))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    def _write_sidecar(self, ready: Path, key: str, entries: list[tuple[str, str, int | None]]) -> None:
        ready.with_suffix(".json").write_text(json.dumps({"key": key, "rows": len(entries)}))

    async def _commit(self, local: Path, key: str, entries: list[tuple[str, str, int | None]]) -> None:
        store = self.storage.store
        try:
            await asyncio.to_thread(store.commit, local, key)
        except Exception as exc:
            self.failed.append(key)
            self.stats.inc_value("imagecrawl/store/commit_errors")
            logger.error("Committing shard %s to %s failed, kept in the outbox: %s", key, store.url, exc)
            return
        self.storage.ledger.commit_shard(key, entries)
        local.unlink(missing_ok=True)
        local.with_suffix(".json").unlink(missing_ok=True)
        self.stats.inc_value("imagecrawl/store/shards_committed")
        self.stats.inc_value("imagecrawl/store/rows_committed", len(entries))
        logger.info("Committed shard %s (%d rows) to %s", key, len(entries), store.url)

    async def _drain_outbox(self) -> None:
        """Commit shards a previous run finished but could not commit; drop half-written ones."""
        for tmp in sorted(self.outbox.glob("*.tmp")):
            logger.warning("Discarding unfinished shard %s from an interrupted run", tmp.name)
            tmp.unlink(missing_ok=True)
            self.stats.inc_value("imagecrawl/store/discarded_partial")
        for ready in sorted(self.outbox.glob("*.parquet")):
            sidecar = ready.with_suffix(".json")
            try:
                key = json.loads(sidecar.read_text())["key"]
                table = pq.read_table(ready, columns=["image_sha256", "id", "image_phash"]).to_pydict()
            except Exception as exc:
                logger.error("Outbox shard %s is unreadable (%s); moved aside", ready, exc)
                ready.rename(ready.with_suffix(".corrupt"))
                continue
            entries = list(zip(table["image_sha256"], table["id"], table["image_phash"], strict=True))
            for sha, item_id, _ in entries:
                # Until this shard is committed, its images count as pending: not crawled twice.
                self.storage.ledger.reserve(sha, item_id)
            self.stats.inc_value("imagecrawl/store/outbox_recovered")
            await self._commit(ready, key, entries)
