"""What the pipelines, the outbox and the known-image check need from an exact-dedupe ledger.

:class:`LedgerLike` is the synchronous ledger, implemented by :class:`imagecrawl.dedupe.sqlite.Ledger`
(embedded, one process) and :class:`imagecrawl.distributed.ledger.RedisLedger` (shared by many
workers). The crawl's components use its :class:`AsyncLedger` (``ledger.worker()``): for the embedded
ledger every statement runs on the ledger's own thread (:class:`imagecrawl.dedupe.worker.LedgerWorker`),
so the event loop never waits for SQLite. No Scrapy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Entry = tuple[str, str, int | None, str | None]  # (sha256, id, phash, image_url)
#: a forgotten image (docs/forget.md): (sha256, url key, id key, phash, near, reason, forgotten_at, op)
TombstoneRow = tuple[str, str | None, str | None, int | None, int, str, str, str]


class LedgerLike(Protocol):
    #: this run's name: its claims, and its files in a shared outbox
    owner: str
    #: the near-duplicate index of committed rows, once :meth:`enable_near` was called
    near: Any

    def enable_near(self, index: Any) -> None: ...

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """(id, distance) of the closest committed or claimed image within ``max_distance``, else None."""
        ...

    def duplicate_reason(self, sha256: str, item_id: str) -> str | None: ...

    def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        """Claim a pending image for this owner; False when another owner (or a committed row) holds it."""
        ...

    def heartbeat(self, *, force: bool = False) -> None:
        """Keep this owner's claims alive (called about every second)."""
        ...

    def owner_alive(self, owner: str) -> bool:
        """Whether the run ``owner`` still goes on (same rule as for its claims)."""
        ...

    def release(self, sha256: str, item_id: str, url: str | None = None) -> None: ...

    def has_id(self, item_id: str) -> bool: ...

    def has_url(self, url: str) -> bool: ...

    def known_shards(self) -> set[str]: ...

    def commit_shard(self, key: str, entries: Iterable[Entry]) -> None: ...

    def reconcile(self, store: Any) -> int: ...

    def worker(self) -> AsyncLedger:
        """The async interface of this ledger (one per ledger, closed with it)."""
        ...

    def close(self) -> None: ...


class AsyncLedger(Protocol):
    """The ledger as the crawl's components ask it: awaitable, never blocking the event loop on a file."""

    owner: str

    async def known(self, record_id: str | None, url: str | None) -> str | None:
        """``"id"`` or ``"url"`` if this record id or image URL is committed or claimed by this run;
        ``"claimed"`` while another run that is still going holds its claim (not stored yet), ``"orphaned"``
        while only runs that ended do (the row may be in their outbox, or lost with them); else None. (The
        distributed ledger answers ``"id"``/``"url"`` for a live worker's claim: a dead worker's rows come
        back through its leases.)"""
        ...

    async def duplicate_reason(self, sha256: str, item_id: str, url: str | None = None) -> str | None:
        """``"sha256"``/``"id"`` as :meth:`known`, else ``"claimed"``/``"orphaned"`` as there, or
        ``"pending"`` when a live run claimed this very item (this id from this ``url``), else None."""
        ...

    async def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool: ...

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """Answered at once: the near index and this owner's claims are in memory."""
        ...

    async def release(self, sha256: str, item_id: str, url: str | None = None) -> None: ...

    async def commit_shard(self, key: str, entries: Iterable[Entry]) -> None: ...

    async def heartbeat(self) -> None: ...

    async def owner_alive(self, owner: str) -> bool: ...

    async def reconcile(self, store: Any) -> int: ...

    async def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(synchronous ledger)`` where the ledger's statements run, in turn with them: the extension
        point for a table of one's own in the same ledger (through ``ledger.db`` for the embedded one)."""
        ...

    def close(self) -> None: ...
