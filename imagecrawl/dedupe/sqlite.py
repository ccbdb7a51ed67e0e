"""The embedded dedupe ledger: which images and ids are in the store, or claimed on their way there.

*Committed* rows are recorded in the same transaction as the shard's name, so the ledger and the store
agree; a shard that reached the store but not the ledger (a crash between the two) is found by
:meth:`Ledger.reconcile`, which indexes every shard the ledger does not know yet.

*Claims* are what running crawls hold between deciding to keep an item and committing its shard. They
live in the same SQLite file, so several processes writing into one store (``-a shard=I/N``) never both
keep one image: a claim is an INSERT that fails when another process got there first. A claim belongs to
an owner (a run). Claims of a dead owner are void: on this host, an owner whose process is gone; on
another host sharing the file, one whose heartbeat is older than ``stale_seconds``. No Scrapy imports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from imagecrawl.dedupe import sql
from imagecrawl.dedupe.base import Entry, TombstoneRow
from imagecrawl.dedupe.liveness import HOST, LIVE_OWNERS, owner_is_alive
from imagecrawl.dedupe.locking import while_locked
from imagecrawl.dedupe.near import MemoryNearIndex, NearIndex
from imagecrawl.dedupe.reconcile import reconcile
from imagecrawl.dedupe.worker import LedgerWorker
from imagecrawl.storage.layout import LEGACY_SOURCE_PREFIX as LEGACY

logger = logging.getLogger(__name__)

#: the names other modules import from here
__all__ = ["Entry", "Ledger", "open_ledger", "reconcile"]


def open_ledger(path: Path, *, owner: str = "", stale_seconds: float = 120.0) -> Ledger:
    """The ledger at ``path``; a corrupt one is set aside (``<name>.corrupt-<time>``, with its WAL) with
    one log line and a new one started, which the first dedupe step fills from the store
    (:func:`reconcile`), as it fills a deleted one."""
    try:
        return Ledger(path, owner=owner, stale_seconds=stale_seconds)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") not in sql.CORRUPT:
            raise
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                os.replace(extra, aside.with_name(aside.name + suffix))
        logger.error(
            "Dedupe ledger %s is corrupt (%s): set aside as %s; a new one is rebuilt from the store", path, exc, aside
        )
        return Ledger(path, owner=owner, stale_seconds=stale_seconds)


#: the outbox folder beside the ledger file (the state folder's ``outbox``, imagecrawl.storage.outbox)
OUTBOX = "outbox"


def outbox_owners(directory: Path) -> set[str]:
    """The runs named by the sidecars (``*.json``: key, owner, and ``from``: the ended runs a file was taken
    over from) of the files in an outbox folder: their rows may be in those files."""
    owners: set[str] = set()
    for sidecar in directory.glob("*.json"):
        try:
            data = json.loads(sidecar.read_text())
            named = [data.get("owner"), *data.get("from", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        owners.update(str(owner) for owner in named if owner)
    return owners


class Ledger:
    def __init__(self, path: Path, *, owner: str = "", stale_seconds: float = 120.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.owner = owner or f"ledger-{id(self)}-{time.time_ns()}"
        self.stale_seconds = stale_seconds
        self.db = sql.connect(path)
        while_locked(lambda: self.db.executescript(sql.SCHEMA))
        while_locked(self._migrate_shard_keys)
        self._worker: LedgerWorker | None = None
        # this owner's claims, also kept in memory: the hot path asks about its own items most
        self._own_sha: dict[str, str] = {}
        self._own_ids: dict[str, str] = {}
        self._own_urls: set[bytes] = set()
        self._own_phash: dict[str, int] = {}
        self.near: NearIndex | None = None
        self._pending_near = MemoryNearIndex()
        #: a released claim is still in the (append-only) pending index: rebuild it before the next query
        self._pending_stale = False
        self._last_beat = 0.0
        #: ended runs whose claims were met in the way (:meth:`claimed_elsewhere`), for a live run to adopt
        self.orphans: set[str] = set()
        LIVE_OWNERS.add(self.owner)
        with sql.transaction(self.db):
            # an ended run that left files in the outbox beside the ledger keeps its claims until a run
            # adopts those files (its rows may be in them)
            self._purge_stale(outbox_owners(path.parent / OUTBOX))
        self.heartbeat(force=True)

    def _migrate_shard_keys(self) -> None:
        """Shard keys of the first store layout (``source=<source>/...``) as the store holds them now
        (``<source>/...``, :mod:`imagecrawl.storage.layout`); one transaction, nothing to do once done."""
        if not sql.one(self.db, "SELECT 1 FROM shards WHERE key LIKE 'source=%'"):
            return
        with sql.transaction(self.db):
            n = len(LEGACY)
            self.db.execute(f"UPDATE OR IGNORE shards SET key = substr(key, {n + 1}) WHERE key LIKE '{LEGACY}%'")
            self.db.execute(f"DELETE FROM shards WHERE key LIKE '{LEGACY}%'")
            self.db.execute(f"UPDATE seen SET shard = substr(shard, {n + 1}) WHERE shard LIKE '{LEGACY}%'")
        logger.info("Dedupe ledger %s: shard keys moved to the current store layout", self.path)

    # -- owners --------------------------------------------------------------------------------
    def heartbeat(self, *, force: bool = False) -> None:
        """Keep this owner's claims alive (cheap to call often: writes at most every few seconds)."""
        now = time.time()
        if not force and now - self._last_beat < self.stale_seconds / 10:
            return
        self._last_beat = now
        self.db.execute(
            "INSERT INTO owners (owner, host, pid, heartbeat) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat",
            (self.owner, HOST, os.getpid(), now),
        )

    def _owner_is_alive(self, owner: str, host: str, pid: int, heartbeat: float) -> bool:
        return owner_is_alive(owner, host, pid, heartbeat, self.stale_seconds)

    def owner_alive(self, owner: str, db: sqlite3.Connection | None = None) -> bool:
        """Whether ``owner`` is a run that is still going (its files in a shared outbox are its own):
        the rule that voids claims (process gone on this host, heartbeat stale on another). ``db``: the
        connection to ask on (the worker thread's own), else the ledger's."""
        if owner == self.owner:
            return True
        row = sql.owner_row(self.db if db is None else db, owner)
        return row is not None and self._owner_is_alive(*row)

    def claimed_elsewhere(
        self,
        db: sqlite3.Connection,
        *,
        sha256: str | None = None,
        item_id: str | None = None,
        url_hash: bytes | None = None,
    ) -> str | None:
        """Does another run hold a claim on this image, id or URL? ``"claimed"``: a run that is still going
        (it stores the row, or, if it fails, its own JOBDIR is left unclean and its next run fetches it
        again). ``"orphaned"``: only runs that ended without committing or releasing it: the row may be in
        their outbox (complete spool batches) or lost with them, so it is neither stored again nor counted
        as stored until a live run adopts their outbox (:meth:`take_orphans`, then :meth:`release_dead`).
        None: no other run's claim."""
        holders = sql.claim_holders(db, sha256=sha256, item_id=item_id, url_hash=url_hash)
        state = None
        for o in holders:
            if o == self.owner:
                continue
            if self.owner_alive(o, db):
                return "claimed"
            self.orphans.add(o)
            state = "orphaned"
        return state

    def take_orphans(self) -> set[str]:
        """The ended runs whose claims :meth:`claimed_elsewhere` met since the last call."""
        found, self.orphans = self.orphans, set()
        return found

    def adopt_claims(self, entries: Iterable[Entry]) -> None:
        """Claim rows of an ended run's outbox that this run recovered and will commit: the ended run's claims
        on them become this run's, in one transaction (a live run's claim is left alone)."""
        rows = list(entries)
        with sql.transaction(self.db):
            for sha256, item_id, _, url in rows:
                url_hash = sql.url_key(url) if url else None
                for holder in sql.claim_holders(self.db, sha256=sha256, item_id=item_id):
                    if holder != self.owner and not self.owner_alive(holder):
                        self.db.execute(
                            "DELETE FROM claims WHERE (sha256 = ? OR id = ?) AND owner = ?", (sha256, item_id, holder)
                        )
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO claims (sha256, id, url_hash, owner) VALUES (?, ?, ?, ?)",
                    (sha256, item_id, url_hash, self.owner),
                )
                if cur.rowcount:
                    self.remember_claim(sha256, item_id, url_hash, None)

    def release_dead(self, keep: Iterable[str] = ()) -> int:
        """Delete the claims of runs that ended, but those in ``keep`` (ended runs that still have files in
        the outbox: their rows may be there), after their outbox was adopted: what it held is claimed by
        the adopting run now, the rest was lost with them and is fetched again. Returns how many."""
        with sql.transaction(self.db):
            return self._purge_stale(set(keep))

    def live_owners(self) -> list[tuple[str, str, int]]:
        """(owner, host, pid) of every other run still going by the rule of :meth:`owner_alive`: crawls
        writing into the store now (what a forget run must not race)."""
        rows = self.db.execute("SELECT owner, host, pid, heartbeat FROM owners WHERE owner != ?", (self.owner,))
        return [
            (owner, host, pid)
            for owner, host, pid, beat in rows.fetchall()
            if self._owner_is_alive(owner, host, pid, beat)
        ]

    def _purge_stale(self, keep: set[str] | frozenset[str] = frozenset()) -> int:
        owners = self.db.execute("SELECT owner, host, pid, heartbeat FROM owners").fetchall()
        dead = [row[0] for row in owners if row[0] not in keep and not self._owner_is_alive(*row)]
        self.db.executemany("DELETE FROM owners WHERE owner = ?", [(o,) for o in dead])
        # a run in ``keep`` may have closed (its owners row gone) with its claims kept for its outbox files
        kept = sorted(keep)
        cur = self.db.execute(
            "DELETE FROM claims WHERE owner NOT IN (SELECT owner FROM owners)"
            f" AND owner NOT IN ({','.join('?' * len(kept))})",
            kept,
        )
        if cur.rowcount:
            logger.info("Dedupe ledger: released %d claims of crawls that stopped without committing", cur.rowcount)
        return int(cur.rowcount or 0)

    # -- lookups -------------------------------------------------------------------------------
    # Each check has a memory part (this owner's claims, on the caller's thread) and an SQL part that
    # takes the connection to use, so :class:`~imagecrawl.dedupe.worker.LedgerWorker` can run the SQL
    # on a thread and connection of its own, in batches.
    def own_reason(self, sha256: str, item_id: str) -> str | None:
        """``"sha256"`` or ``"id"`` if this owner claimed this image or id (memory only)."""
        if sha256 in self._own_sha:
            return "sha256"
        if item_id in self._own_ids:
            return "id"
        return None

    def owns_id(self, item_id: str) -> bool:
        return item_id in self._own_ids

    def owns_url(self, url: str) -> bool:
        return sql.url_key(url) in self._own_urls

    def duplicate_reason(self, sha256: str, item_id: str, url: str | None = None) -> str | None:
        """``"sha256"`` or ``"id"`` if this image or id is committed or claimed by this run; else another
        run's claim on it (:meth:`others_reason`); else None."""
        url_hash = sql.url_key(url) if url else None
        return self.own_reason(sha256, item_id) or self.others_reason(self.db, sha256, item_id, url_hash)

    def others_reason(
        self, db: sqlite3.Connection, sha256: str, item_id: str, url_hash: bytes | None = None
    ) -> str | None:
        """The SQL part of :meth:`duplicate_reason`: ``"sha256"``/``"id"`` if committed; else another run's
        claim: ``"pending"`` when a live run claimed this very item (this record from this URL: both fetched
        it, and its row may still be lost with that run), ``"claimed"`` when a live run claimed these bytes
        or this id otherwise (it stores its own record: a duplicate now), ``"orphaned"`` when only ended
        runs hold the claim; else None."""
        reason = sql.duplicate_reason(db, sha256, item_id) or self.claimed_elsewhere(db, sha256=sha256, item_id=item_id)
        if reason == "claimed" and url_hash is not None:
            same = sql.claim_holders_of_item(db, item_id, url_hash)
            if any(o != self.owner and self.owner_alive(o, db) for o in same):
                return "pending"
        return reason

    def has_id(self, item_id: str) -> bool:
        """Is a record with this id committed, or claimed by this run? (Another run's claim is not: that row
        may still be lost with it.)"""
        return self.owns_id(item_id) or sql.has_id(self.db, item_id)

    def has_url(self, url: str) -> bool:
        """Was an image from this URL committed, or claimed by this run?"""
        return self.owns_url(url) or sql.has_url(self.db, sql.url_key(url))

    def worker(self) -> LedgerWorker:
        """This ledger's async interface (:class:`~imagecrawl.dedupe.base.AsyncLedger`): every statement on
        one thread of its own, lookups and claims in batches; closed with the ledger."""
        if self._worker is None:
            self._worker = LedgerWorker(self, sql.connect(self.path))
        return self._worker

    # -- claims --------------------------------------------------------------------------------
    def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        """Claim an image for this owner; False when another claim or a committed row holds it already."""
        if self._own_sha.get(sha256) == item_id:
            return True
        url_hash = sql.url_key(url) if url else None
        if not sql.claim_many(self.db, self.owner, [(sha256, item_id, url_hash)])[0]:
            return False
        self.remember_claim(sha256, item_id, url_hash, phash)
        return True

    def remember_claim(self, sha256: str, item_id: str, url_hash: bytes | None, phash: int | None) -> None:
        """Record a claim this owner made (memory: the hot path asks about its own items most)."""
        self._own_sha[sha256] = item_id
        self._own_ids[item_id] = sha256
        if url_hash:
            self._own_urls.add(url_hash)
        if phash is not None and self.near is not None and self._own_phash.get(item_id) != phash:
            self._own_phash[item_id] = phash
            self._pending_near.add(item_id, phash)
        self.heartbeat()

    def note_pending(self, item_id: str, phash: int | None) -> None:
        """An item between its near-duplicate check and its claim: later items are compared with it."""
        if phash is not None and self.near is not None:
            self._own_phash[item_id] = phash
            self._pending_near.add(item_id, phash)

    def drop_pending(self, item_id: str) -> None:
        """The claim of a :meth:`note_pending` item failed: it is no longer compared with."""
        if self._own_phash.pop(item_id, None) is not None:
            self._pending_stale = True

    def release(self, sha256: str, item_id: str, url: str | None = None) -> None:
        if self._own_sha.get(sha256) != item_id:
            return
        self.db.execute("DELETE FROM claims WHERE sha256 = ? AND owner = ?", (sha256, self.owner))
        self._pending_stale = self._pending_stale or item_id in self._own_phash
        self._forget(sha256, item_id, url)

    def _forget(self, sha256: str, item_id: str, url: str | None) -> None:
        self._own_sha.pop(sha256, None)
        self._own_ids.pop(item_id, None)
        self._own_phash.pop(item_id, None)
        if url:
            self._own_urls.discard(sql.url_key(url))

    # -- near duplicates -----------------------------------------------------------------------
    def enable_near(self, index: NearIndex) -> None:
        """Answer near-duplicate queries from ``index`` (committed rows) plus this owner's claims. The
        index is derived data: rows committed while it missed them (a crash between the two commits) are
        added back from the ledger, idempotently."""
        self.near = index
        with_phash = int(self.db.execute("SELECT count(*) FROM seen WHERE phash IS NOT NULL").fetchone()[0])
        if len(index) < with_phash:
            index.add_many(self.phashes())
            logger.info("Near-duplicate index topped up from the ledger (%d hashes)", with_phash)

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """(id, distance) of the closest committed or claimed image within ``max_distance``, else None."""
        if self.near is None or phash is None or max_distance < 0:
            return None
        if self._pending_stale:
            self._rebuild_pending_near()
        hits = [h for h in (self.near.query(phash, max_distance), self._pending_near.query(phash, max_distance)) if h]
        return min(hits, key=lambda hit: hit[1]) if hits else None

    def _rebuild_pending_near(self) -> None:
        """The in-memory index of this owner's claims cannot delete: it is rebuilt from them when a released
        claim is still in it (before the next query) or when committed rows dominate it."""
        fresh = MemoryNearIndex()
        fresh.add_many(self._own_phash.items())
        self._pending_near, self._pending_stale = fresh, False

    def known_shards(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM shards")}

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def phashes(self) -> Iterator[tuple[str, int]]:
        """(id, phash) of every committed row that has a perceptual hash."""
        yield from self.db.execute("SELECT id, phash FROM seen WHERE phash IS NOT NULL")

    # -- commits -------------------------------------------------------------------------------
    def commit_shard(self, key: str, entries: Iterable[Entry]) -> None:
        rows = list(entries)
        with sql.transaction(self.db):
            self.db.executemany(
                "INSERT OR IGNORE INTO seen (sha256, id, phash, shard) VALUES (?, ?, ?, ?)",
                [(sha, item_id, phash, key) for sha, item_id, phash, _ in rows],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO ids (id, sha256) VALUES (?, ?)",
                [(item_id, sha) for sha, item_id, _, _ in rows],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO urls (url_hash) VALUES (?)",
                [(sql.url_key(url),) for _, _, _, url in rows if url],
            )
            self.db.executemany("DELETE FROM claims WHERE sha256 = ?", [(sha,) for sha, _, _, _ in rows])
            self.db.execute(
                "INSERT OR REPLACE INTO shards (key, rows, committed_at) VALUES (?, ?, ?)",
                (key, len(rows), time.time()),
            )
        if self.near is not None:
            self.near.add_many((item_id, phash) for _, item_id, phash, _ in rows if phash is not None)
        for sha, item_id, _, url in rows:
            self._forget(sha, item_id, url)
        if len(self._pending_near) > max(10_000, 2 * len(self._own_phash)):
            self._rebuild_pending_near()

    def reconcile(self, store: Any) -> int:
        """Index every shard in ``store`` that the ledger does not know yet; returns how many."""
        return reconcile(self, store)

    # -- forgotten rows (docs/forget.md) -------------------------------------------------------------
    def ids_of(self, sha256s: Iterable[str]) -> list[str]:
        """The record ids of these committed images (those the ledger holds)."""
        hashes = list(sha256s)
        ids: list[str] = []
        for start in range(0, len(hashes), 500):
            batch = hashes[start : start + 500]
            marks = ",".join("?" * len(batch))
            ids += [str(row[0]) for row in self.db.execute(f"SELECT id FROM seen WHERE sha256 IN ({marks})", batch)]
        return ids

    def forget_rows(self, sha256s: Iterable[str], url_keys: Iterable[bytes], shards: Mapping[str, int | None]) -> None:
        """Take forgotten rows out of the ledger in one transaction: their images, ids and URLs;
        ``shards`` maps each rewritten shard to the rows it holds now (None: the shard was deleted)."""
        hashes = [(sha,) for sha in sha256s]
        with sql.transaction(self.db):
            self.db.executemany("DELETE FROM seen WHERE sha256 = ?", hashes)
            self.db.executemany("DELETE FROM ids WHERE sha256 = ?", hashes)
            self.db.executemany("DELETE FROM urls WHERE url_hash = ?", [(key,) for key in url_keys])
            for key, left in shards.items():
                if left is None:
                    self.db.execute("DELETE FROM shards WHERE key = ?", (key,))
                else:
                    self.db.execute("UPDATE shards SET rows = ? WHERE key = ?", (left, key))

    def add_tombstones(self, op: str, rows: Iterable[TombstoneRow]) -> int:
        """Record the tombstones of the forget run ``op`` (idempotent: an image's first tombstone stays)."""
        batch = list(rows)
        with sql.transaction(self.db):
            self.db.executemany("INSERT OR IGNORE INTO tombstones VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            self.db.execute("INSERT OR IGNORE INTO tombstone_ops (op) VALUES (?)", (op,))
        return len(batch)

    def tombstone_rows(self) -> Iterator[TombstoneRow]:
        yield from self.db.execute(
            "SELECT sha256, url_key, id_key, phash, near, reason, forgotten_at, op FROM tombstones"
        )

    def tombstone_ops(self) -> set[str]:
        """The forget runs whose tombstones the ledger holds."""
        return {row[0] for row in self.db.execute("SELECT op FROM tombstone_ops")}

    def close(self) -> None:
        """End this owner. Its remaining claims are given up, unless its rows may still be in its files in the
        outbox beside the ledger (a store that did not take them, a spool a full disk stopped): then they
        stay, as a killed run's do, until a run adopts those files (:meth:`release_dead`)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        LIVE_OWNERS.discard(self.owner)
        keep = self.owner in outbox_owners(self.path.parent / OUTBOX)
        with contextlib.suppress(sqlite3.Error), sql.transaction(self.db):
            if not keep:
                self.db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            self.db.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
        self.db.close()
