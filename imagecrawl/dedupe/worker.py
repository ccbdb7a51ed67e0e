"""The ledger's lookups and claims off the event loop, in batches.

The crawl asks the ledger twice per image (is it known? may this process keep it?). Each question is
an SQLite statement, and a claim is a write transaction that waits for the file's lock while another
process writing into the same store holds it. :class:`LedgerWorker` runs them on a thread and a
connection of its own: every question asked during one turn of the event loop (and while the previous
batch was running) goes in one batch, the claims of a batch in one transaction. The caller awaits an
:class:`asyncio.Future`; the loop never waits for the disk or the lock.

What this owner claimed is answered from memory first (:class:`~imagecrawl.dedupe.sqlite.Ledger`), and
remembered there on the loop's thread once a claim succeeded. No Scrapy imports.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from imagecrawl.dedupe import sqlite as sql

if TYPE_CHECKING:
    from imagecrawl.dedupe.sqlite import Ledger

#: one question: (kind, arguments, the future that gets its answer)
_Job = tuple[str, tuple[Any, ...], "asyncio.Future[Any]"]


class LedgerWorker:
    def __init__(self, ledger: Ledger, db: sqlite3.Connection) -> None:
        self.ledger = ledger
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
        claimed (by any owner), else None."""
        if record_id and self.ledger.owns_id(record_id):
            return "id"
        if url and self.ledger.owns_url(url):
            return "url"
        result: str | None = await self._ask("known", record_id, sql.url_key(url) if url else None)
        return result

    async def duplicate_reason(self, sha256: str, item_id: str) -> str | None:
        """``"sha256"`` or ``"id"`` if this image or id is committed or claimed, else None."""
        own = self.ledger.own_reason(sha256, item_id)
        if own is not None:
            return own
        result: str | None = await self._ask("reason", sha256, item_id)
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
                if record_id and sql.sql_has_id(self.db, record_id):
                    answers[i] = "id"
                elif key is not None and sql.sql_has_url(self.db, key):
                    answers[i] = "url"
            elif kind == "reason":
                answers[i] = sql.sql_duplicate_reason(self.db, *args)
            else:
                claims.append((i, args))
        if claims:
            results = sql.sql_claim_many(self.db, self.ledger.owner, [c for _, c in claims])
            for (i, _), ok in zip(claims, results, strict=True):
                answers[i] = ok
        return answers

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.db.close()
