"""Exact dedupe: drop an image whose sha256 (or a record whose id) is already committed or pending.

The ledger is asked through its async interface (:class:`~imagecrawl.dedupe.base.AsyncLedger`): the
embedded ledger's lookups and claims run batched on its thread (:class:`~imagecrawl.dedupe.worker.LedgerWorker`),
so the event loop never waits for SQLite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any, NoReturn, Self

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.dedupe.base import AsyncLedger
from imagecrawl.errors import ConfigError
from imagecrawl.exitcodes import WRITE_ERROR, mark_unsettled, set_exit_code
from imagecrawl.forget.crawl import count_refused, tombstones
from imagecrawl.storage.extensions import storage_owner
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)


#: the crawl's finish reason when the dedupe ledger cannot be written (exit status 5)
LEDGER_ERROR_REASON = "ledger_write_error"


#: another run's claims an item waits for (:meth:`DedupePipeline._settled_reason`): this very record on its
#: way to the store by a live run, or anything of runs that ended (until a live run adopts their outbox)
WAIT_FOR = frozenset({"pending", "orphaned"})


class DuplicateItem(DropItem):
    """Dropped because an equal image or id is already committed or pending."""


class DedupePipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self._ledger_stopping = False
        self._stop_task: asyncio.Future[Any] | None = None
        owner = storage_owner(crawler)
        self.storage = owner.storage
        self.tombstones = tombstones(crawler)
        settings = crawler.settings
        self.near_policy = settings.get("IMAGECRAWL_NEAR_POLICY")
        if self.near_policy not in ("drop", "keep"):
            raise ConfigError(f"IMAGECRAWL_NEAR_POLICY must be 'drop' or 'keep', not {self.near_policy!r}")
        self.near_distance = settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE")
        if settings.getbool("IMAGECRAWL_NEAR_DEDUPE_ENABLED"):
            owner.enable_near()
        else:
            logger.warning(
                "Near-duplicate dedupe is off (IMAGECRAWL_NEAR_DEDUPE_ENABLED): only exact copies are dropped"
            )
        crawler.signals.connect(self.item_dropped, signal=signals.item_dropped)
        #: the ledger's async interface (the embedded ledger's: lookups and claims batched on its thread)
        self.worker: AsyncLedger = self.storage.ledger_async
        self._inflight: dict[str, str] = {}
        self._inflight_ids: set[str] = set()
        self.claim_wait = tuning(settings).claim_wait_item_seconds
        self._unsettled_logged = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_DEDUPE_ENABLED"):
            raise NotConfigured("IMAGECRAWL_DEDUPE_ENABLED is off")
        return cls(crawler)

    async def open_spider(self) -> None:
        storage = self.storage
        if not storage.reconciled:
            try:
                added = await self.worker.reconcile(storage.store)
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

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        sha, item_id, phash = adapter["image_sha256"], adapter["id"], adapter.get("image_phash")
        # an equal item still on its way through this pipeline (its claim not made yet)
        reason = "sha256" if sha in self._inflight else ("id" if item_id in self._inflight_ids else None)
        if reason is not None:
            self._drop(reason, item_id, adapter)
        self._inflight[sha] = item_id
        self._inflight_ids.add(item_id)
        try:
            return await self._dedupe(adapter, item, sha, item_id, phash)
        except (sqlite3.Error, OSError) as exc:  # the ledger's disk: full, read-only, an I/O error
            self._ledger_failed(exc)
            raise DropItem(f"not stored, the ledger cannot be written: {item_id}", log_level="DEBUG") from None
        finally:
            self._inflight.pop(sha, None)
            self._inflight_ids.discard(item_id)

    async def _dedupe(self, adapter: ItemAdapter, item: Any, sha: str, item_id: str, phash: int | None) -> Any:
        forgotten = self.tombstones.refused(sha, item_id, adapter.get("image_url"), phash)
        if forgotten is not None:  # docs/forget.md: forgotten is never stored again
            count_refused(self.crawler, forgotten)
            raise DuplicateItem(f"forgotten ({forgotten}): {item_id}", log_level="DEBUG")
        worker = self.worker
        reason = await self._settled_reason(sha, item_id, adapter.get("image_url"))
        if reason is not None:
            self._drop(reason, item_id, adapter)
        near = worker.near_duplicate(phash, self.near_distance)
        if near is not None:
            other, distance = near
            if self.near_policy == "drop":
                self.stats.inc_value("imagecrawl/dedupe/dropped/near")
                raise DuplicateItem(f"near-duplicate of {other} (distance {distance}): {item_id}", log_level="DEBUG")
            adapter["duplicate_of"] = other
            self.stats.inc_value("imagecrawl/dedupe/kept_near")
        url = adapter.get("image_url")
        for _attempt in range(3):
            if await worker.reserve(sha, item_id, url, phash):
                self.stats.inc_value("imagecrawl/dedupe/unique")
                return item
            # another run writing into the same store claimed it between the check and now
            reason = await self._settled_reason(sha, item_id, url)
            if reason is not None:
                self._drop(reason, item_id, adapter)
        self.stats.inc_value("imagecrawl/dedupe/dropped/claimed")
        raise DuplicateItem(f"duplicate (claimed elsewhere): {item_id}", log_level="DEBUG")

    async def _settled_reason(self, sha: str, item_id: str, url: str | None) -> str | None:
        """The ledger's :meth:`~imagecrawl.dedupe.base.AsyncLedger.duplicate_reason`. A live run's claim of
        these bytes or this id from elsewhere (``"claimed"``) is a duplicate at once (that run stores its
        record). A live run's claim of this very item (``"pending"``: this id from this URL, both fetched
        it) and a claim only of runs that ended (``"orphaned"``: the row may be in their outbox, or lost
        with them) make the item wait, up to ``claim_wait_item_seconds``, until that run commits or gives
        the row up, or a live run adopts the ended runs' outbox (within seconds). Still undecided after
        that: ``"unsettled"``, and the run is marked unsettled (its JOBDIR stays unclean and its
        watermarks stay, so the next run asks again)."""
        reason = await self.worker.duplicate_reason(sha, item_id, url)
        if reason not in WAIT_FOR:
            return reason
        self.stats.inc_value("imagecrawl/dedupe/claim_wait/items")
        deadline = time.monotonic() + self.claim_wait
        pause = 0.25
        while time.monotonic() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 5.0)
            reason = await self.worker.duplicate_reason(sha, item_id, url)
            if reason not in WAIT_FOR:
                return reason
        mark_unsettled(self.stats)
        if not self._unsettled_logged:
            self._unsettled_logged = True
            logger.warning(
                "Image %s was fetched while another run held its claim, and that run (or the run taking over its "
                "outbox in %s) did not store it or give it up within %.0f s: not stored here; this run is marked "
                "unsettled (JOBDIR stays unclean, watermarks stay), so the next run asks again "
                "(imagecrawl/dedupe/claim_wait/unsettled)",
                item_id,
                self.storage.store.url,
                self.claim_wait,
            )
        return "unsettled"

    def _drop(self, reason: str, item_id: str, adapter: ItemAdapter) -> NoReturn:
        self.stats.inc_value(f"imagecrawl/dedupe/dropped/{reason}")
        raise DuplicateItem(f"duplicate {reason}: {item_id} ({adapter.get('image_url')})", log_level="DEBUG")

    def _ledger_failed(self, exc: BaseException) -> None:
        """The dedupe ledger cannot be written (SQLite: "database or disk is full"): one ERROR line,
        counted, the crawl stops with exit status 5 as for the outbox's disk; no traceback per item."""
        self.stats.inc_value("imagecrawl/dedupe/ledger_errors")
        if self._ledger_stopping:
            return
        self._ledger_stopping = True
        set_exit_code(self.stats, WRITE_ERROR)
        logger.error(
            "Cannot write the dedupe ledger of %s (%s): the crawl stops; what was committed is kept, the "
            "rest is crawled again by the next run",
            self.storage.store.url,
            exc,
        )
        engine = self.crawler.engine
        if engine is not None:
            self._stop_task = asyncio.ensure_future(engine.close_spider_async(reason=LEDGER_ERROR_REASON))

    async def item_dropped(self, item: Any, exception: BaseException) -> None:
        # A later pipeline refused a record this one reserved: free its hash again.
        if not isinstance(exception, DuplicateItem):
            adapter = ItemAdapter(item)
            try:
                await self.worker.release(
                    adapter.get("image_sha256", ""), adapter.get("id", ""), adapter.get("image_url")
                )
            except (sqlite3.Error, OSError) as exc:  # its claim ends with the run anyway
                self._ledger_failed(exc)
