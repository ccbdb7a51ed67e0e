"""The per-crawl storage context shared by the dedupe and Parquet pipelines."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrapy.crawler import Crawler

from imagecrawl.dedupe.base import LedgerLike
from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore, S3Store, open_store, s3_config_from_settings

logger = logging.getLogger(__name__)


@dataclass
class CrawlStorage:
    store: LocalStore | S3Store
    state_dir: Path
    ledger: LedgerLike
    run_id: str
    reconciled: bool = False

    def close(self) -> None:
        self.ledger.close()


_BY_CRAWLER: weakref.WeakKeyDictionary[Crawler, CrawlStorage] = weakref.WeakKeyDictionary()


def make_run_id(worker: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    worker = worker or f"{socket.gethostname().split('.')[0]}{os.getpid()}"
    safe = "".join(ch if ch.isalnum() else "-" for ch in worker)[:32]
    return f"{stamp}-{safe}-{secrets.token_hex(2)}"


def crawl_storage(crawler: Crawler) -> CrawlStorage:
    """One store, ledger and run id per crawler, created on first use."""
    existing = _BY_CRAWLER.get(crawler)
    if existing is not None:
        return existing
    settings = crawler.settings
    url = settings.get("IMAGECRAWL_STORE") or "data/"
    store = open_store(url, s3_config_from_settings(settings))
    state = state_dir_for(url, settings.get("IMAGECRAWL_STATE_DIR", ""))
    run_id = make_run_id(settings.get("IMAGECRAWL_WORKER_ID", ""))
    ledger: LedgerLike
    if _redis_ledger(settings):
        from imagecrawl.distributed.ledger import open_redis_ledger

        ledger = open_redis_ledger(settings, url, owner=run_id)
        # Workers on one machine share the state folder: each keeps its own outbox. A dead worker's
        # unfinished shards are not committed later: its leases expire and other workers redo them.
        state = state / "workers" / run_id
    else:
        ledger = Ledger(state / "ledger.sqlite3", owner=run_id)
    storage = CrawlStorage(store, state, ledger, run_id)
    _BY_CRAWLER[crawler] = storage
    return storage


def _redis_ledger(settings: Any) -> bool:
    backend = str(settings.get("IMAGECRAWL_DEDUPE_BACKEND") or "auto").lower()
    if backend not in ("auto", "sqlite", "redis"):
        raise ValueError(f"IMAGECRAWL_DEDUPE_BACKEND must be auto, sqlite or redis, got {backend!r}")
    has_redis = bool(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL"))
    if backend == "redis" and not has_redis:
        raise ValueError("IMAGECRAWL_DEDUPE_BACKEND=redis needs IMAGECRAWL_REDIS_URL (or REDIS_URL)")
    return backend == "redis" or (backend == "auto" and has_redis)
