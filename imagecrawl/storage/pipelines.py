"""Last pipeline: write records into Parquet shards and hand finished shards to the outbox, which
commits them to the store (atomic rename locally; a completed upload on S3) and the dedupe ledger.

The file work (a spool batch's Arrow encoding and fsync, a shard's Parquet conversion) runs on one
thread of its own, so the reactor never waits for the disk; the operations on one shard run in order,
one at a time."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.exitcodes import STORE, WRITE_ERROR, set_exit_code
from imagecrawl.items import PromptImage
from imagecrawl.schema import COLUMNS
from imagecrawl.storage.context import CrawlStorage
from imagecrawl.storage.extensions import storage_owner
from imagecrawl.storage.outbox import Outbox
from imagecrawl.storage.shards import ShardWriter, SpoolWriteError, no_room, partition_of, shard_key
from imagecrawl.storage.stores import LocalStore
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

#: the ``urls`` spider's failure counters, summed into each shard's stats JSON
FAILED_STAT_PREFIX = "imagecrawl/urls/failed/"

WRITE_ERROR_REASON = "spool_write_error"
#: how often, at most, the outboxes of ended runs whose claims this run met are adopted (adopt_orphans)
ADOPT_EVERY_SECONDS = 5.0


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
        #: the run's first shard rolls early (a running crawl shows committed rows soon); 0: no early roll
        self.first_rows = tuning(settings).first_shard_max_rows
        self.first_seconds = tuning(settings).first_shard_max_seconds
        self._first_pending = True
        self.row_group_rows = max(1, tuning(settings).row_group_rows)
        self.close_timeout = tuning(settings).close_commit_timeout_seconds
        self.flush_seconds = tuning(settings).spool_flush_seconds
        self.spool_batch_rows = max(1, tuning(settings).spool_batch_rows)
        self.owner = storage_owner(crawler)
        self.storage: CrawlStorage = self.owner.storage
        self.outbox = Outbox(
            self.storage.state_dir / "outbox",
            self.storage.store,
            self.storage.ledger,
            max_bytes=tuning(settings).outbox_max_bytes,
            retry_initial=tuning(settings).commit_retry_seconds,
            on_event=lambda name, n: self.stats.inc_value(f"imagecrawl/store/{name}", n),
            failures=self._failures,
        )
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        #: the file operation in progress for each shard (at most one)
        self._busy: dict[str, asyncio.Future[Any]] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagecrawl-spool")
        self.seq = 0
        self._stopping: asyncio.Future[None] | None = None
        self._age_task: asyncio.Task[None] | None = None
        #: the age loop is between two sleeps (holding a batch it took): it is stopped, never cancelled
        self._age_working = False
        self._age_stop = False
        self._next_adoption = 0.0
        crawler.signals.connect(self._engine_started, signal=signals.engine_started)
        if tuning(settings).shard_flush_on_idle:
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
        await self.outbox.recover_async(keys, self.row_group_rows)
        if hasattr(self.storage.ledger, "release_dead"):
            # what ended runs left in the outbox is this run's now (claims too): their other claims go
            outbox = self.outbox
            await self.storage.ledger_async.call(lambda led: led.release_dead(keep=outbox.file_owners()))

    def _engine_started(self) -> None:
        if self.flush_seconds > 0:
            self._age_task = asyncio.get_running_loop().create_task(self._age_loop())

    async def close_spider(self) -> None:
        if self._age_task is not None:
            # Cancelled only while it sleeps: mid-iteration it may hold a batch taken from a writer, whose
            # rows would be lost; then it is let finish that iteration and stop.
            self._age_stop = True
            if self._age_working:
                await asyncio.wait({self._age_task})
            else:
                self._age_task.cancel()
        for partition in list(self.writers):
            await self._finish(partition)
        while self._finishing:
            await asyncio.wait(set(self._finishing))
        self.io.shutdown(wait=True)
        left = await self.outbox.close(self.close_timeout)
        self.stats.set_value("imagecrawl/store/outbox_pending", len(left))
        if left:
            set_exit_code(self.stats, STORE)
            logger.error(
                "The store %s did not accept %d shard(s); they wait in %s and the next run with the same "
                "store commits them first: %s",
                self.storage.store.url,
                len(left),
                self.outbox.dir,
                ", ".join(left),
            )
        else:
            for hook in self.owner.commit_hooks:
                hook()

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
                auto_flush=False,
            )
            self.writers[partition] = writer
        try:
            writer.add(row)
            if writer.rows >= self._row_limit() or writer.bytes >= self.max_bytes:
                # full: the next rows go to a new shard while this one is written
                del self.writers[partition]
                self.stats.inc_value("imagecrawl/parquet/rows")
                await self._finish_writer(writer)
                return item
            if writer.batch_full:
                await self._flush(writer)
        except SpoolWriteError as exc:
            self._write_failed(exc)
            raise DropItem(f"not stored: {exc}") from None
        self.stats.inc_value("imagecrawl/parquet/rows")
        return item

    async def _idle(self, writer: ShardWriter) -> None:
        """Wait until no file operation of ``writer``'s shard is in progress."""
        while (busy := self._busy.get(writer.key)) is not None:
            await asyncio.wait({busy})

    async def _on_io_thread(self, writer: ShardWriter, fn: Any, *args: Any) -> Any:
        await self._idle(writer)
        fut = asyncio.get_running_loop().run_in_executor(self.io, fn, *args)
        self._busy[writer.key] = fut
        try:
            return await fut
        finally:
            if self._busy.get(writer.key) is fut:
                del self._busy[writer.key]

    async def _flush(self, writer: ShardWriter) -> None:
        """Make the buffered rows of ``writer`` durable in its spool (raises SpoolWriteError).

        The rows are handed to the spool thread in the same step as they are taken from the writer (no
        await between): a caller cancelled while the write runs (the crawl closing) never loses them;
        the write goes on, in order before anything else done to the shard."""
        await self._idle(writer)
        rows = writer.take_batch()
        if rows is None:
            return
        fut = asyncio.get_running_loop().run_in_executor(self.io, writer.write_rows, rows)
        self._busy[writer.key] = fut
        try:
            written = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(lambda done: self._written_late(writer, rows, done))
            raise
        except Exception as exc:  # the disk, or anything else: the spool is sealed, the crawl stops
            writer.batch_failed(rows, exc)
        finally:
            if self._busy.get(writer.key) is fut:
                del self._busy[writer.key]
        writer.batch_written(rows, written)
        self._count_dropped(writer)

    def _written_late(self, writer: ShardWriter, rows: list[dict[str, Any]], done: asyncio.Future[Any]) -> None:
        """A write whose caller was cancelled has ended: account for it as :meth:`_flush` would have."""
        if done.cancelled() or done.exception() is not None:
            return  # the shard's close finds the spool as it is (a failed batch is cut off there)
        writer.batch_written(rows, done.result())
        self._count_dropped(writer)

    def _count_dropped(self, writer: ShardWriter) -> None:
        """Count the rows ``writer`` left out since the last call (the schema could not hold them)."""
        for reason, count in writer.take_dropped().items():
            self.stats.inc_value(f"imagecrawl/parquet/rows_dropped/{reason}", count)

    async def adopt_orphans(self) -> int:
        """Settle the claims of runs that ended without committing or releasing them (a kill, a full disk),
        once this crawl met one in its way (the embedded ledger's ``take_orphans``): what their outbox holds
        is recovered and committed by this run (their claims on those rows become this run's), and their
        other claims are released: those rows were lost with them and are fetched again. Returns how many
        ended runs were settled."""
        ledger = self.storage.ledger
        if not hasattr(ledger, "take_orphans"):
            return 0  # a ledger without ended runs' claims (the distributed one: leases bring their rows back)
        now = time.monotonic()
        if now < self._next_adoption:
            return 0  # at most every few seconds: an outbox that cannot be converted now (a full disk) waits
        worker = self.storage.ledger_async
        orphans = await worker.call(lambda led: led.take_orphans())
        if not orphans:
            return 0
        self._next_adoption = now + ADOPT_EVERY_SECONDS
        outbox = self.outbox
        try:
            shards = await outbox.adopt_async(self.row_group_rows)
            # an ended run whose files could not be taken over (no room to convert them) keeps its claims
            released = await worker.call(lambda led: led.release_dead(keep=outbox.file_owners()))
        except (OSError, sqlite3.Error) as exc:  # the state folder's disk: tried again in a few seconds
            self.stats.inc_value("imagecrawl/store/recover_errors")
            logger.warning("Cannot take over the outbox files of ended runs now (%s); trying again later", exc)
            await worker.call(lambda led: led.orphans.update(orphans))
            return 0
        self.stats.inc_value("imagecrawl/store/orphans_adopted", len(orphans))
        logger.info(
            "Runs that ended without committing their claims (%s): %d of their outbox shards taken over, %d claims "
            "released (those images are fetched again)",
            ", ".join(sorted(orphans)),
            shards,
            released,
        )
        return len(orphans)

    async def _age_loop(self) -> None:
        """Every second: make buffered rows durable in the spool, and finish shards past their age."""
        while not self._age_stop:
            await asyncio.sleep(self.flush_seconds)
            self._age_working = True
            try:
                await self._age_step()
            finally:
                self._age_working = False

    async def _age_step(self) -> None:
        """One turn of the age loop: the ledger's heartbeat, ended runs' outboxes adopted, then every writer
        flushed or finished."""
        await self.storage.ledger_async.heartbeat()
        await self.adopt_orphans()
        now = time.monotonic()
        max_age = self._age_limit()
        for partition, writer in list(self.writers.items()):
            try:
                if max_age > 0 and writer.rows and now - writer.opened_at >= max_age:
                    await self._finish(partition)
                else:
                    await self._flush(writer)
            except SpoolWriteError as exc:
                self._write_failed(exc)
            except Exception as exc:  # never let the loop die unseen: its rows would wait forever
                logger.exception("Writing shard %s failed", writer.key)
                self._write_failed(exc)

    def _failures(self) -> int:
        """Input rows of this run that gave no image so far (``imagecrawl/urls/failed/<stage>``)."""
        counts = self.stats.get_stats()
        return sum(int(v) for k, v in counts.items() if k.startswith(FAILED_STAT_PREFIX))

    def _row_limit(self) -> int:
        if self._first_pending and self.first_rows > 0:
            return min(self.max_rows, self.first_rows)
        return self.max_rows

    def _age_limit(self) -> float:
        """Seconds a shard may stay open (0: no limit); shorter until the run's first shard is handed over."""
        if self._first_pending and self.first_seconds > 0:
            return min(self.max_seconds, self.first_seconds) if self.max_seconds > 0 else self.first_seconds
        return self.max_seconds

    def _flush_idle(self) -> None:
        for partition, writer in list(self.writers.items()):
            if writer.rows:
                task = asyncio.get_running_loop().create_task(self._finish(partition))
                self._finishing.add(task)
                task.add_done_callback(self._finishing.discard)

    def _write_failed(self, exc: BaseException) -> None:
        """A write to the outbox failed: stop the crawl (once) with a clear reason and exit status.
        What is durable stays in the spool and becomes a shard now or at the next start. Only an error
        that says so (ENOSPC, EDQUOT, EFBIG) is reported as a lack of room."""
        self.stats.inc_value("imagecrawl/store/write_errors")
        if self._stopping is not None:
            return
        set_exit_code(self.stats, WRITE_ERROR)
        cause = exc.__cause__ if isinstance(exc, SpoolWriteError) and exc.__cause__ is not None else exc
        if no_room(cause):
            then = "the rest is crawled again by the next run once there is room"
        else:
            then = "the rest is crawled again by the next run"
        logger.error(
            "Cannot write to %s (%s): the crawl stops; rows already spooled are kept and committed, %s",
            self.outbox.dir,
            exc,
            then,
        )
        engine = self.crawler.engine
        if engine is not None:
            self._stopping = asyncio.ensure_future(engine.close_spider_async(reason=WRITE_ERROR_REASON))

    async def _finish(self, partition: tuple[str, str]) -> None:
        writer = self.writers.pop(partition, None)
        if writer is not None:
            await self._finish_writer(writer)

    async def _finish_writer(self, writer: ShardWriter) -> None:
        """Turn ``writer``'s spool into its Parquet shard and hand it to the outbox."""
        if writer.rows:
            self._first_pending = False  # the early first shard is on its way: later ones take the usual limits
        await self._idle(writer)
        if writer.durable_rows == 0 and (writer.failed is not None or writer.rows == 0):
            writer.abort()
            return
        try:
            path = await self._on_io_thread(writer, writer.close)
            self._count_dropped(writer)
            if not writer.entries:
                writer.abort()
                return
            self.outbox.submit(path, writer.key, writer.entries)
        except Exception as exc:
            # The spool (complete batches) stays in the outbox: the next start turns it into a shard.
            if not isinstance(exc, OSError):
                logger.exception("Finishing shard %s failed", writer.key)
            self._write_failed(exc)
            writer.path.unlink(missing_ok=True)
            return
        self.stats.inc_value("imagecrawl/parquet/shards_written")
