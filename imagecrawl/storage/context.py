"""The crawl-wide context: what the components of one crawl share, reached through one typed accessor.

The store, the ledger and the near-duplicate index have an owner of their own, the extension
:class:`imagecrawl.storage.extensions.StorageOwner` (reached with ``crawler.get_extension``); this
module holds what it opens them with: :class:`CrawlStorage`, the run id and the ledger factory. The
ledger is the embedded SQLite one unless ``IMAGECRAWL_LEDGER_FACTORY`` names another
:class:`LedgerFactory` (the distributed add-on plugs in the Redis ledger that way); the core never
imports the optional parts.

Other crawl-wide state without a Scrapy component of its own (the pacing runtime, the opt-out skip
log, the Crawl-delay registry, a distributed worker) is held by :func:`crawl_context`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, cast

from scrapy.crawler import Crawler
from scrapy.utils.misc import load_object

from imagecrawl.dedupe.base import AsyncLedger, LedgerLike
from imagecrawl.dedupe.sqlite import open_ledger
from imagecrawl.errors import ConfigError
from imagecrawl.storage.stores import LocalStore, S3Store
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEDUPE_BACKENDS = ("auto", "sqlite", "redis")


class LedgerFactory(Protocol):
    """Opens the exact-dedupe ledger of a store; returns it with the state folder this process uses."""

    def __call__(self, settings: Any, store_url: str, state_dir: Path, owner: str) -> tuple[LedgerLike, Path]: ...


def open_sqlite_ledger(settings: Any, store_url: str, state_dir: Path, owner: str) -> tuple[LedgerLike, Path]:
    """The embedded ledger in the store's state folder (the default :class:`LedgerFactory`)."""
    return open_ledger(state_dir / "ledger.sqlite3", owner=owner), state_dir


@dataclass
class CrawlStorage:
    store: LocalStore | S3Store
    state_dir: Path
    ledger: LedgerLike
    run_id: str
    reconciled: bool = False
    #: the store's crawl lock, held shared while the crawl runs (imagecrawl.forget.lock)
    lock: IO[str] | None = None

    @property
    def ledger_async(self) -> AsyncLedger:
        """The ledger as components ask it (:class:`~imagecrawl.dedupe.base.AsyncLedger`): its statements on
        its own thread, never on the event loop's."""
        return self.ledger.worker()

    def close(self) -> None:
        self.ledger.close()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def make_run_id(worker: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    worker = worker or f"{socket.gethostname().split('.')[0]}{os.getpid()}"
    safe = "".join(ch if ch.isalnum() else "-" for ch in worker)[:32]
    return f"{stamp}-{safe}-{secrets.token_hex(2)}"


def check_dedupe_backend(settings: Any) -> str:
    backend = str(tuning(settings).dedupe_backend).lower()
    if backend not in DEDUPE_BACKENDS:
        raise ConfigError(f"IMAGECRAWL_TUNING['dedupe_backend'] must be auto, sqlite or redis, got {backend!r}")
    return backend


def ledger_factory(settings: Any) -> LedgerFactory:
    backend = check_dedupe_backend(settings)
    path = settings.get("IMAGECRAWL_LEDGER_FACTORY")
    if backend == "sqlite" or not path:
        if backend == "redis":
            raise ConfigError("IMAGECRAWL_TUNING['dedupe_backend']=redis needs IMAGECRAWL_REDIS_URL (or REDIS_URL)")
        return open_sqlite_ledger
    return cast(LedgerFactory, load_object(path))


class SnapshotProvider(Protocol):
    """Per-site state for the progress line and the report (see :mod:`imagecrawl.report.extensions.monitor`)."""

    def snapshot(self) -> dict[str, dict[str, Any]]: ...


class CrawlContext:
    """The shared state of one crawl. Get it with :func:`crawl_context`."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._parts: dict[type, Any] = {}
        self._limiter: Any = None
        self._limiter_made = False
        #: published by components with per-site state (the pacing runtime); read by the monitor
        self.snapshot_providers: list[SnapshotProvider] = []

    def get(self, kind: type[T], factory: Callable[[], T]) -> T:
        """The crawl's one ``kind`` object, made by ``factory`` on first use."""
        part = self._parts.get(kind)
        if part is None:
            part = self._parts[kind] = factory()
        return cast(T, part)

    def find(self, kind: type[T]) -> T | None:
        """The crawl's ``kind`` object if a component made one, else None."""
        return cast("T | None", self._parts.get(kind))

    def shared_limiter(self) -> Any:
        """The cross-process per-site rate limiter (``acquire(site) -> seconds``), or None.

        ``IMAGECRAWL_SHARED_LIMITER_FACTORY`` names a callable ``(crawler) -> limiter | None``; the
        distributed add-on sets it to the Redis limiter. One limiter per crawl."""
        if not self._limiter_made:
            self._limiter_made = True
            path = self.crawler.settings.get("IMAGECRAWL_SHARED_LIMITER_FACTORY")
            if path:
                self._limiter = load_object(path)(self.crawler)
        return self._limiter


_CONTEXTS: weakref.WeakKeyDictionary[Crawler, CrawlContext] = weakref.WeakKeyDictionary()


def crawl_context(crawler: Crawler) -> CrawlContext:
    """The one context of ``crawler``."""
    context = _CONTEXTS.get(crawler)
    if context is None:
        context = _CONTEXTS[crawler] = CrawlContext(crawler)
    return context
