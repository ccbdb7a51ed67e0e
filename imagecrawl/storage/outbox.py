"""The outbox: finished shards wait here, on local disk, until the store has confirmed them.

A shard file is deleted locally only after (1) the store confirmed the commit and (2) the dedupe ledger
recorded it. Failed commits are retried in the background with exponential backoff while the crawl goes
on; producers wait (back-pressure) when the outbox holds more than ``max_bytes``. A later run commits
whatever an earlier run left behind before it writes anything new.

Several runs may share one outbox (``-a shard=I/N`` into one store). Every file of a shard has a
sidecar naming its owner (the run, as in the dedupe ledger); a run recovers only the files of owners
that are no longer alive, by the ledger's rule for claims, and takes them over (the sidecar then names
it) under an exclusive lock, so two runs starting together never recover one file twice. No Scrapy
imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from imagecrawl import failpoints
from imagecrawl.dedupe.base import Entry, LedgerLike
from imagecrawl.dedupe.reconcile import ENTRY_COLUMNS, entries_of
from imagecrawl.dedupe.sqlite import outbox_owners
from imagecrawl.storage import layout
from imagecrawl.storage.layout import current_key
from imagecrawl.storage.shards import SPOOL_SUFFIX, no_room, read_sidecar, spool_to_parquet, write_sidecar
from imagecrawl.storage.stores import LocalStore, S3Store

logger = logging.getLogger(__name__)

SHARD_SUFFIX = ".parquet"
#: a complete Parquet file waiting for the store; not ".parquet", so globs over a store never match it
READY_SUFFIX = ".ready"
SIDECAR_SUFFIX = ".json"
PARTIAL_SUFFIX = ".tmp"
#: held (flock) while a run recovers: one recoverer at a time, released by the kernel if it dies
RECOVER_LOCK = ".recover.lock"


@dataclass
class Pending:
    path: Path
    key: str
    entries: list[Entry]
    size: int
    attempts: int = 0


class Outbox:
    def __init__(
        self,
        directory: Path,
        store: LocalStore | S3Store,
        ledger: LedgerLike,
        *,
        max_bytes: int,
        retry_initial: float = 2.0,
        retry_max: float = 300.0,
        on_event: Callable[[str, int], None] | None = None,
        failures: Callable[[], int] | None = None,
    ) -> None:
        self.dir = directory
        self.store = store
        self.ledger = ledger
        #: the ledger's async interface: a shard's commit runs on the ledger's thread
        self.ledger_async = ledger.worker()
        self.max_bytes = max_bytes
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_event = on_event or (lambda name, n: None)
        #: how many input rows of this run gave no image so far (the ``urls`` spider's failure records)
        self.failures = failures or (lambda: 0)
        self._failures_reported = 0
        #: this run, as the ledger names it; written into every sidecar of its shards
        self.owner = ledger.owner
        self.pending: dict[str, Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def backlog_bytes(self) -> int:
        return sum(p.size for p in self.pending.values())

    @property
    def backlog_shards(self) -> int:
        return len(self.pending)

    async def wait_for_room(self) -> None:
        """Back-pressure: return once the outbox holds less than ``max_bytes``."""
        if self.backlog_bytes < self.max_bytes:
            return
        self.on_event("backpressure_waits", 1)
        logger.warning(
            "Outbox holds %d bytes in %d shard(s) (limit %d): waiting for the store before writing more",
            self.backlog_bytes,
            self.backlog_shards,
            self.max_bytes,
        )
        while self.backlog_bytes >= self.max_bytes:
            self._room.clear()
            await self._room.wait()

    # -- submitting ----------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        return self.dir / (key.replace("/", "__").removesuffix(SHARD_SUFFIX) + PARTIAL_SUFFIX)

    @staticmethod
    def _key_of(path: Path) -> str:
        key = read_sidecar(path.with_suffix(SIDECAR_SUFFIX)).get("key")
        # a shard of the first layout ("source=<source>/...") is committed under the current key
        return current_key(str(key) if key else path.name.rsplit(".", 1)[0].replace("__", "/") + SHARD_SUFFIX)

    def submit(self, partial: Path, key: str, entries: list[Entry], *, enqueue: bool = True) -> None:
        """``partial`` is a complete Parquet file written under :meth:`path_for`; queue its commit."""
        sidecar = partial.with_suffix(SIDECAR_SUFFIX)
        write_sidecar(sidecar, {"key": key, "owner": self.owner, "rows": len(entries)})
        failpoints.hit("outbox.submit.before_ready")
        ready = partial.with_suffix(READY_SUFFIX)
        os.replace(partial, ready)  # from here on a restart finds and commits it
        partial.with_suffix(SPOOL_SUFFIX).unlink(missing_ok=True)
        if enqueue:
            self._enqueue(Pending(ready, key, entries, ready.stat().st_size))

    def _enqueue(self, pending: Pending) -> None:
        self.pending[pending.key] = pending
        task = asyncio.get_running_loop().create_task(self._run(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pending: Pending) -> None:
        delay = self.retry_initial
        while not await self._try_commit(pending):
            # Full backoff while crawling; prompt retries while the crawl is closing.
            wait = min(delay, 1.0) if self._closing else delay
            await asyncio.sleep(wait * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max)

    async def _try_commit(self, pending: Pending) -> bool:
        pending.attempts += 1
        failpoints.hit("shard.commit.before")
        size = pending.size
        try:
            await asyncio.to_thread(self.store.commit, pending.path, pending.key)
        except Exception as exc:
            self.on_event("commit_errors", 1)
            logger.error(
                "Committing shard %s to %s failed (attempt %d), kept in the outbox: %s",
                pending.key,
                self.store.url,
                pending.attempts,
                exc,
            )
            return False
        failpoints.hit("shard.commit.after")
        await self.ledger_async.commit_shard(pending.key, pending.entries)
        self._recorded(pending)
        await self._put_stats(pending, size)
        return True

    async def _put_stats(self, pending: Pending, size: int) -> None:
        """The shard's stats JSON beside the store's state (:func:`layout.shard_stats_key`); a failure here
        is logged and counted, never fatal: the shard itself is committed."""
        failures = self.failures()
        stats = {
            "key": pending.key,
            "rows": len(pending.entries),
            "bytes": size,
            "failures": max(0, failures - self._failures_reported),
            "run_id": self.owner,
            "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._failures_reported = max(failures, self._failures_reported)
        body = (json.dumps(stats, indent=2) + "\n").encode()
        try:
            await asyncio.to_thread(self.store.put_bytes, layout.shard_stats_key(pending.key), body, "application/json")
        except Exception as exc:
            self.on_event("stats_errors", 1)
            logger.warning("Could not write the stats of shard %s to %s: %s", pending.key, self.store.url, exc)

    def _confirmed(self, pending: Pending) -> None:
        """The store holds ``pending`` (found at recovery): record it in the ledger (on the ledger's thread
        when recovery runs there, :meth:`recover_async`) and let its files go."""
        failpoints.hit("shard.commit.after")
        self.ledger.commit_shard(pending.key, pending.entries)
        self._recorded(pending)

    def _recorded(self, pending: Pending) -> None:
        pending.path.unlink(missing_ok=True)
        pending.path.with_suffix(SIDECAR_SUFFIX).unlink(missing_ok=True)
        self.pending.pop(pending.key, None)
        self.on_event("shards_committed", 1)
        self.on_event("rows_committed", len(pending.entries))
        logger.info("Committed shard %s (%d rows) to %s", pending.key, len(pending.entries), self.store.url)
        if self.backlog_bytes < self.max_bytes:
            self._room.set()

    # -- recovery ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _recover_lock(self) -> Iterator[None]:
        with open(self.dir / RECOVER_LOCK, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _take_over(self, path: Path, own: bool = True) -> bool:
        """True if ``path`` was left by a run that has ended (or names none): its sidecar now names this
        run. False if its owner is still going (or the file is gone: its owner finished it meanwhile).
        ``own``: this run's own files count (at start: what it took over before); mid-run they are its
        shards in the making, never recovered."""
        sidecar = path.with_suffix(SIDECAR_SUFFIX)
        data = read_sidecar(sidecar)
        owner = str(data.get("owner") or "")
        if owner == self.owner or (not owner and not own):  # mid-run, a file naming no run waits for a start
            return own and path.exists()
        if owner and self.ledger.owner_alive(owner):
            self.on_event("recover_skipped_live", 1)
            logger.info("Outbox file %s belongs to run %s, still going: left to it", path.name, owner)
            return False
        if not path.exists():
            return False
        if data:
            # the run it came from stays named ("from") until the file is gone: its claims on the rows in it
            # are kept meanwhile (Ledger.release_dead), so no run fetches them again before they are stored
            earlier = sorted({*data.get("from", []), *([owner] if owner else [])})
            try:
                write_sidecar(sidecar, {**data, "owner": self.owner, "from": earlier})
            except OSError as exc:  # a full disk: the file stays its ended owner's, for a run with room
                self.on_event("recover_errors", 1)
                logger.error("Cannot take over outbox file %s now (%s); it is kept for the next run", path.name, exc)
                return False
        return True

    def _set_aside(self, spool: Path, exc: BaseException) -> None:
        self.on_event("recover_errors", 1)
        aside = spool.with_suffix(".corrupt")
        try:
            spool.rename(aside)
        except OSError as rename_exc:
            logger.error("Spool %s is unreadable (%s) and cannot be set aside: %s", spool, exc, rename_exc)
            return
        logger.error("Spool %s is unreadable (%s); set aside as %s, its items are crawled again", spool, exc, aside)

    def recover(self, store_keys: set[str], row_group_rows: int = 512) -> None:
        """Queue what ended runs left: spools of open shards become shards, finished shards are
        committed (or, if the store already has them, just recorded); half-converted files are dropped
        (their spool is the source of truth). Files of runs still going are theirs and left alone."""
        with self._recover_lock():
            self._recover(store_keys, row_group_rows, self._enqueue)

    async def recover_async(self, store_keys: set[str], row_group_rows: int = 512) -> None:
        """:meth:`recover` with its file work and ledger statements on the ledger's thread; the shards to
        commit are queued here, on the event loop."""
        queued: list[Pending] = []

        def recover(_ledger: Any) -> None:
            with self._recover_lock():
                self._recover(store_keys, row_group_rows, queued.append)

        await self.ledger_async.call(recover)
        for pending in queued:
            self._enqueue(pending)

    async def adopt_async(self, row_group_rows: int = 512) -> int:
        """Mid-run: recover what runs that ended since this one started left in the outbox (as at start,
        never this run's own files), so their claims can be settled. The store is not listed: a shard it
        already holds is uploaded again under its key (same bytes). Returns how many shards were queued."""
        queued: list[Pending] = []

        def adopt(_ledger: Any) -> None:
            with self._recover_lock():
                self._recover(set(), row_group_rows, queued.append, own=False)

        await self.ledger_async.call(adopt)
        for pending in queued:
            self._enqueue(pending)
        return len(queued)

    def file_owners(self) -> set[str]:
        """The runs named by the sidecars of the files in the outbox: their owners, and the ended runs they
        were taken over from."""
        return outbox_owners(self.dir)

    def _recover(
        self, store_keys: set[str], row_group_rows: int, enqueue: Callable[[Pending], None], own: bool = True
    ) -> None:
        for partial in sorted(self.dir.glob(f"*{PARTIAL_SUFFIX}")):
            if self._take_over(partial, own):
                partial.unlink(missing_ok=True)
        adopted: set[str] = set()  # shards taken over now: their files count as this run's below
        for spool in sorted(self.dir.glob(f"*{SPOOL_SUFFIX}")):
            if not self._take_over(spool, own):
                continue
            adopted.add(spool.stem)
            ready = spool.with_suffix(READY_SUFFIX)
            if ready.exists():  # converted and handed on just before the crash
                spool.unlink()
                continue
            partial = spool.with_suffix(PARTIAL_SUFFIX)
            try:
                entries = spool_to_parquet(spool, partial, row_group_rows)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                if not no_room(exc) and spool.exists():  # not the disk's room: waiting would not help
                    self._set_aside(spool, exc)
                    continue
                # no room to write the shard: the spool waits for a run that has room
                self.on_event("recover_errors", 1)
                logger.error("Cannot turn spool %s into a shard now (%s); it is kept for the next run", spool, exc)
                continue
            except Exception as exc:
                partial.unlink(missing_ok=True)
                self._set_aside(spool, exc)
                continue
            if entries:
                self.submit(partial, self._key_of(spool), entries, enqueue=False)
                self.on_event("spooled_rows_recovered", len(entries))
                logger.warning("Recovered %d spooled rows of an interrupted run into %s", len(entries), ready.name)
            else:
                spool.with_suffix(SIDECAR_SUFFIX).unlink(missing_ok=True)
            spool.unlink(missing_ok=True)
        for ready in sorted(self.dir.glob(f"*{READY_SUFFIX}")):
            if not self._take_over(ready, own or ready.stem in adopted):
                continue
            try:
                key = current_key(read_sidecar(ready.with_suffix(SIDECAR_SUFFIX))["key"])
                entries = entries_of(pq.read_table(ready, columns=list(ENTRY_COLUMNS)))
            except Exception as exc:
                logger.error(
                    "Outbox shard %s is unreadable (%s); moved aside, its items will be crawled again",
                    ready,
                    exc,
                )
                ready.rename(ready.with_suffix(".corrupt"))
                continue
            pending = Pending(ready, key, entries, ready.stat().st_size)
            self.on_event("recovered", 1)
            if key in store_keys:
                # The upload completed but the run died before recording it.
                self._confirmed(pending)
                continue
            # pending: never crawled twice meanwhile (the ended run's claims on these rows become this run's)
            adopt_claims = getattr(self.ledger, "adopt_claims", None)
            if adopt_claims is not None:
                adopt_claims(entries)
            else:
                for sha, item_id, _, url in entries:
                    self.ledger.reserve(sha, item_id, url)
            enqueue(pending)

    # -- closing -------------------------------------------------------------------------------
    async def close(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for pending commits (retrying every second or so), then stop
        and return the keys still waiting; they stay in the outbox for the next run."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        return sorted(self.pending)
