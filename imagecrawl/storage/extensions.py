"""The owner of the crawl's store, dedupe ledger and near-duplicate index.

One extension opens them and closes them; every other component reaches them through Scrapy's public
lookup, ``crawler.get_extension(StorageOwner)`` (:func:`storage_owner`, :func:`crawl_storage`):

* **open** on first use: the first component that needs the store (the known-image middleware, the
  dedupe or Parquet pipeline, an incremental walk, the report) opens it, with the write probe, so a
  store that cannot be written stops the crawl before any request (one line, exit 3) and a crawl with
  every such component off opens nothing;
* **close** when the engine stops (``engine_stopped``): after the pipelines have committed the last
  shards (``close_spider``) and after every ``spider_closed`` handler (the report, the monitor's last
  sample), which therefore still find the store open. A crawl that never opened them closes nothing.

``commit_hooks`` are called by the Parquet pipeline once every row of the crawl is committed (nothing
left in the outbox); what must wait for committed rows (the watermarks of incremental runs) hooks in.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Self

from scrapy import signals
from scrapy.crawler import Crawler

from imagecrawl.dedupe.near import NearIndex, SqliteNearIndex
from imagecrawl.errors import ConfigError, StoreError
from imagecrawl.forget.lock import hold_for_crawl
from imagecrawl.state import state_dir_for
from imagecrawl.storage.context import CrawlStorage, ledger_factory, make_run_id
from imagecrawl.storage.stores import LocalStore, S3Store, open_store, s3_config_from_settings

logger = logging.getLogger(__name__)

#: how often the near-duplicate index looks for other processes' commits (each process's own claims
#: are in the ledger's memory index at once)
NEAR_FRESH_SECONDS = 0.5


def _migrate_layout(store: LocalStore | S3Store) -> None:
    """Move a store of the first layout into the current one (``imagecrawl.storage.layout``); a store that
    cannot be listed now is moved by a later run (its shards still read, beside the new ones)."""
    try:
        store.migrate()
    except Exception as exc:
        logger.warning("Cannot move %s into the current store layout now (%s); a later run will", store.url, exc)


class StorageOwner:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._storage: CrawlStorage | None = None
        #: the near-duplicate index this owner opened (a shared ledger may bring its own)
        self._near: NearIndex | None = None
        self.closed = False
        #: called by the Parquet pipeline at close once every row of the crawl is committed to the store
        self.commit_hooks: list[Callable[[], None]] = []
        crawler.signals.connect(self.close, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def opened(self) -> bool:
        return self._storage is not None and not self.closed

    @property
    def storage(self) -> CrawlStorage:
        """The store, its local state folder, the ledger and this run's id (opened on first use).

        Opening probes the store (:meth:`LocalStore.probe`, :meth:`S3Store.probe`): a store that cannot be
        written raises :class:`~imagecrawl.errors.StoreError`, one line from ``scrapy crawl``, exit 3."""
        if self._storage is None:
            if self.closed:
                raise RuntimeError("the crawl's storage was closed")
            settings = self.crawler.settings
            url = str(settings.get("IMAGECRAWL_STORE"))
            store = open_store(url, s3_config_from_settings(settings))
            # The write probe: a store that cannot take shards stops the crawl here, before any request.
            if settings.getbool("IMAGECRAWL_STORE_PROBE"):
                store.probe()
            _migrate_layout(store)
            state = state_dir_for(url, settings.get("IMAGECRAWL_STATE_DIR"))
            run_id = make_run_id(str(settings.get("IMAGECRAWL_WORKER_ID")))
            lock = hold_for_crawl(state)  # waits while `imagecrawl forget` rewrites this store
            try:
                ledger, state = ledger_factory(settings)(settings, url, state, run_id)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the crawl state in {state} (IMAGECRAWL_STATE_DIR): {exc}") from None
            self._storage = CrawlStorage(store, state, ledger, run_id, lock=lock)
        return self._storage

    def enable_near(self) -> None:
        """Let the ledger answer near-duplicate queries: the SQLite index in the state folder, unless the
        ledger brings its own (the distributed one shares a Redis index)."""
        storage = self.storage
        if storage.ledger.near is None:
            self._near = SqliteNearIndex(storage.state_dir / "near.sqlite3", fresh_seconds=NEAR_FRESH_SECONDS)
            storage.ledger.enable_near(self._near)

    def close(self) -> None:
        """Close the ledger (giving up this run's remaining claims) and the near index; idempotent."""
        if self.closed:
            return
        self.closed = True
        storage, self._storage = self._storage, None
        near, self._near = self._near, None
        try:
            if storage is not None:
                storage.close()
        finally:
            if near is not None:
                near.close()


def storage_owner(crawler: Crawler) -> StorageOwner:
    """The crawl's :class:`StorageOwner` (an extension; the settings of this project install it)."""
    owner = crawler.get_extension(StorageOwner)
    if owner is None:
        raise ConfigError(
            "the store is needed but imagecrawl.storage.extensions.StorageOwner is not in EXTENSIONS "
            "(imagecrawl's settings install it)"
        )
    return owner


def crawl_storage(crawler: Crawler) -> CrawlStorage:
    """The crawl's store, state folder, ledger and run id, opened on first use by their owner."""
    return storage_owner(crawler).storage
