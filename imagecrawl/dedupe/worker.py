"""The embedded ledger's async interface: every statement on one thread of its own.

The crawl asks the ledger twice per image (is it known? may this process keep it?), commits shards,
keeps its claims alive and, in incremental walks, asks whether listed items are known. Each is SQLite,
and a write waits for the file's lock while another process writing into the same store holds it.
:class:`LedgerWorker` runs all of it on one thread and a connection of its own, so the event loop
never waits for the disk or the lock: the lookups and claims asked during one turn of the event loop
(and while the previous batch ran) go in one batch, the claims of a batch in one transaction; anything
else (:meth:`LedgerWorker.call`: a shard's commit, the heartbeat, a release, the reconciliation, an
extension's own table) runs on the same thread in turn. The caller awaits an :class:`asyncio.Future`.

What this owner claimed is answered from memory first (the ledger's :class:`ClaimMemory`), and
remembered there on the loop's thread once a claim succeeded. No Scrapy imports.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from imagecrawl.dedupe import sql
from imagecrawl.dedupe.base import Entry, LedgerLike

T = TypeVar("T")

#: one question: (kind, arguments, the future that gets its answer)
_Job = tuple[str, tuple[Any, ...], "asyncio.Future[Any]"]


class ClaimMemory(LedgerLike, Protocol):
    """What the worker needs of the synchronous ledger besides :class:`LedgerLike`: this owner's claims,
    kept in memory (:class:`imagecrawl.dedupe.sqlite.Ledger`)."""

    def owns_id(self, item_id: str) -> bool: ...

    def owns_url(self, url: str) -> bool: ...

    def own_reason(self, sha256: str, item_id: str) -> str | None: ...

    def note_pending(self, item_id: str, phash: int | None) -> None: ...

    def drop_pending(self, item_id: str) -> None: ...

    def remember_claim(self, sha256: str, item_id: str, url_hash: bytes | None, phash: int | None) -> None: ...

    def owner_alive(self, owner: str, db: sqlite3.Connection | None = None) -> bool: ...

    def others_reason(
        self, db: sqlite3.Connection, sha256: str, item_id: str, url_hash: bytes | None = None
    ) -> str | None: ...

    def claimed_elsewhere(
        self,
        db: sqlite3.Connection,
        *,
        sha256: str | None = None,
        item_id: str | None = None,
        url_hash: bytes | None = None,
    ) -> str | None: ...


class LedgerWorker:
    """The :class:`~imagecrawl.dedupe.base.AsyncLedger` of the embedded ledger."""

    def __init__(self, ledger: ClaimMemory, db: sqlite3.Connection) -> None:
        self.ledger = ledger
        self.owner = ledger.owner
        self.db = db
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagecrawl-ledger")
        self._queue: list[_Job] = []
        self._task: asyncio.Task[None] | None = None
        #: batches run and questions answered (for the micro-benchmark and the tests)
        self.batches = 0
        self.jobs = 0

    # -- questions -----------------------------------------------------------------------------
    async def known(self, record_id: str | None, url: str | None) -> str | None:
        """``"id"`` or ``"url"`` if a record with this id, or an image from this URL, is committed or
        claimed by this run; ``"claimed"`` while another run that is still going holds its claim,
        ``"orphaned"`` while only ended runs do (the row may be in their outbox, or lost); else None."""
        if record_id and self.ledger.owns_id(record_id):
            return "id"
        if url and self.ledger.owns_url(url):
            return "url"
        result: str | None = await self._ask("known", record_id, sql.url_key(url) if url else None)
        return result

    async def duplicate_reason(self, sha256: str, item_id: str, url: str | None = None) -> str | None:
        """``"sha256"`` or ``"id"`` if this image or id is committed or claimed by this run, else another
        run's claim (``"pending"``, ``"claimed"``, ``"orphaned"``: ``Ledger.others_reason``), else None."""
        own = self.ledger.own_reason(sha256, item_id)
        if own is not None:
            return own
        result: str | None = await self._ask("reason", sha256, item_id, sql.url_key(url) if url else None)
        return result

    async def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        """Claim an image for this owner (batched with other claims); False when another claim or a
        committed row holds it already."""
        url_hash = sql.url_key(url) if url else None
        self.ledger.note_pending(item_id, phash)  # items behind this one compare with it already
        ok: bool = await self._ask("claim", sha256, item_id, url_hash)
        if ok:
            self.ledger.remember_claim(sha256, item_id, url_hash, phash)
        else:
            self.ledger.drop_pending(item_id)
        return ok

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """Answered at once on the caller's thread: the near index keeps its hashes in memory (and looks
        for other processes' commits at most twice a second), this owner's claims are in memory."""
        return self.ledger.near_duplicate(phash, max_distance)

    # -- everything else, on the same thread -----------------------------------------------------
    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(ledger)`` on the ledger's thread, after what was asked before it: the plug point for
        statements of one's own (an extension's table in the same file goes through ``ledger.db``)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, self.ledger)

    async def release(self, sha256: str, item_id: str, url: str | None = None) -> None:
        await self.call(lambda ledger: ledger.release(sha256, item_id, url))

    async def commit_shard(self, key: str, entries: Iterable[Entry]) -> None:
        rows = list(entries)
        await self.call(lambda ledger: ledger.commit_shard(key, rows))

    async def heartbeat(self) -> None:
        await self.call(lambda ledger: ledger.heartbeat())

    async def owner_alive(self, owner: str) -> bool:
        return await self.call(lambda ledger: ledger.owner_alive(owner))

    async def reconcile(self, store: Any) -> int:
        return await self.call(lambda ledger: ledger.reconcile(store))

    # -- batching ------------------------------------------------------------------------------
    def _ask(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((kind, args, fut))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    answers = await loop.run_in_executor(self.pool, self._run, batch)
                except Exception as exc:  # the ledger file failed: every question of the batch fails
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), answer in zip(batch, answers, strict=True):
                    if not fut.done():
                        fut.set_result(answer)
        finally:
            self._task = None

    def _run(self, batch: list[_Job]) -> list[Any]:
        """On the worker thread: the lookups first, then the claims in one transaction."""
        self.batches += 1
        self.jobs += len(batch)
        answers: list[Any] = [None] * len(batch)
        claims: list[tuple[int, tuple[str, str, bytes | None]]] = []
        for i, (kind, args, _) in enumerate(batch):
            if kind == "known":
                record_id, key = args
                if record_id and sql.has_id(self.db, record_id):
                    answers[i] = "id"
                elif key is not None and sql.has_url(self.db, key):
                    answers[i] = "url"
                else:
                    answers[i] = self.ledger.claimed_elsewhere(self.db, item_id=record_id, url_hash=key)
            elif kind == "reason":
                sha256, item_id, url_hash = args
                answers[i] = self.ledger.others_reason(self.db, sha256, item_id, url_hash)
            else:
                claims.append((i, args))
        if claims:
            results = sql.claim_many(self.db, self.owner, [c for _, c in claims])
            for (i, _), ok in zip(claims, results, strict=True):
                answers[i] = ok
        return answers

    def close(self) -> None:
        """Wait for what was asked, then stop the thread and close its connection (the ledger closes itself)."""
        self.pool.shutdown(wait=True)
        self.db.close()


class DirectLedger:
    """The :class:`~imagecrawl.dedupe.base.AsyncLedger` of a synchronous :class:`LedgerLike` that does not
    touch the disk (the distributed add-on's Redis ledger: a network round trip, its commit listeners
    on the event loop's thread): every call answered in place."""

    def __init__(self, ledger: LedgerLike) -> None:
        self.ledger = ledger
        self.owner = ledger.owner

    async def call(self, fn: Callable[[Any], T]) -> T:
        return fn(self.ledger)

    async def known(self, record_id: str | None, url: str | None) -> str | None:
        if record_id and self.ledger.has_id(record_id):
            return "id"
        return "url" if url and self.ledger.has_url(url) else None

    async def duplicate_reason(self, sha256: str, item_id: str, url: str | None = None) -> str | None:
        return self.ledger.duplicate_reason(sha256, item_id)

    async def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        return self.ledger.reserve(sha256, item_id, url, phash)

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        return self.ledger.near_duplicate(phash, max_distance)

    async def release(self, sha256: str, item_id: str, url: str | None = None) -> None:
        self.ledger.release(sha256, item_id, url)

    async def commit_shard(self, key: str, entries: Iterable[Entry]) -> None:
        self.ledger.commit_shard(key, entries)

    async def heartbeat(self) -> None:
        self.ledger.heartbeat()

    async def owner_alive(self, owner: str) -> bool:
        return self.ledger.owner_alive(owner)

    async def reconcile(self, store: Any) -> int:
        return self.ledger.reconcile(store)

    def close(self) -> None:
        """Nothing of its own to close (the ledger closes itself)."""
