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

from scrapy.crawler import Crawler

from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore, S3Store, open_store, s3_config_from_settings

logger = logging.getLogger(__name__)


@dataclass
class CrawlStorage:
    store: LocalStore | S3Store
    state_dir: Path
    ledger: Ledger
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
    ledger = Ledger(state / "ledger.sqlite3", owner=run_id)
    storage = CrawlStorage(store, state, ledger, run_id)
    _BY_CRAWLER[crawler] = storage
    return storage
