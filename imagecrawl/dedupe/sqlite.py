"""The embedded dedupe ledger: which images and ids are already committed to the store. No Scrapy.

Only *committed* shards are recorded here, in the same transaction as the shard's name, so the ledger
and the store agree. A shard that reached the store but not the ledger (a crash between the two) is
found by :meth:`Ledger.reconcile`, which indexes every shard the ledger does not know yet.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    sha256 TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    phash INTEGER,
    shard TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ids (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS urls (
    url_hash BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    key TEXT PRIMARY KEY,
    rows INTEGER NOT NULL,
    committed_at REAL NOT NULL
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_SECONDS = 120.0

Entry = tuple[str, str, int | None, str | None]  # (sha256, id, phash, image_url)


def url_key(url: str) -> bytes:
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()


ENTRY_COLUMNS = ("image_sha256", "id", "image_phash", "image_url")


def entries_of(table: Any) -> list[Entry]:
    """Ledger entries from a pyarrow Table holding :data:`ENTRY_COLUMNS`."""
    cols = table.to_pydict()
    return list(zip(*(cols[name] for name in ENTRY_COLUMNS), strict=True))


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Several crawl processes may share one ledger (``-a shard=I/N``): a writer waits for another's
        # shard commit (seconds under load; measured up to 7 s on 2 busy cores) instead of failing with
        # "database is locked" at sqlite3's default 5 s.
        self.db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._pending_sha: dict[str, str] = {}
        self._pending_ids: dict[str, str] = {}
        self._pending_urls: set[bytes] = set()

    # -- lookups -------------------------------------------------------------------------------
    def duplicate_reason(self, sha256: str, item_id: str) -> str | None:
        """``"sha256"`` or ``"id"`` if this image or id is committed or pending, else None."""
        if sha256 in self._pending_sha:
            return "sha256"
        if item_id in self._pending_ids:
            return "id"
        row = self.db.execute("SELECT 1 FROM seen WHERE sha256 = ?", (sha256,)).fetchone()
        if row is not None:
            return "sha256"
        row = self.db.execute("SELECT 1 FROM ids WHERE id = ?", (item_id,)).fetchone()
        return "id" if row is not None else None

    def has_id(self, item_id: str) -> bool:
        """Is a record with this id committed or pending? (asked before downloading its image)"""
        if item_id in self._pending_ids:
            return True
        return self.db.execute("SELECT 1 FROM ids WHERE id = ?", (item_id,)).fetchone() is not None

    def has_url(self, url: str) -> bool:
        """Was an image from this URL committed or pending?"""
        key = url_key(url)
        if key in self._pending_urls:
            return True
        return self.db.execute("SELECT 1 FROM urls WHERE url_hash = ?", (key,)).fetchone() is not None

    def reserve(self, sha256: str, item_id: str, url: str | None = None) -> None:
        self._pending_sha[sha256] = item_id
        self._pending_ids[item_id] = sha256
        if url:
            self._pending_urls.add(url_key(url))

    def release(self, sha256: str, item_id: str, url: str | None = None) -> None:
        self._pending_sha.pop(sha256, None)
        self._pending_ids.pop(item_id, None)
        if url:
            self._pending_urls.discard(url_key(url))

    def known_shards(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM shards")}

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM seen").fetchone()[0])

    # -- commits -------------------------------------------------------------------------------
    def commit_shard(self, key: str, entries: Iterable[Entry]) -> None:
        rows = list(entries)
        with self._transaction():
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
                [(url_key(url),) for _, _, _, url in rows if url],
            )
            self.db.execute(
                "INSERT OR REPLACE INTO shards (key, rows, committed_at) VALUES (?, ?, ?)",
                (key, len(rows), time.time()),
            )
        for sha, item_id, _, url in rows:
            self.release(sha, item_id, url)

    def reconcile(self, store: Any) -> int:
        """Index every shard in ``store`` that the ledger does not know yet; returns how many."""
        known = self.known_shards()
        added = 0
        for shard in store.list_shards():
            if shard.key in known:
                continue
            try:
                with store.open(shard.key) as fh:
                    table = pq.read_table(fh, columns=list(ENTRY_COLUMNS))
            except Exception as exc:
                logger.error("Cannot read shard %s while reconciling the dedupe ledger: %s", shard.key, exc)
                continue
            self.commit_shard(shard.key, entries_of(table))
            added += 1
            logger.info("Dedupe ledger: indexed shard %s (%d rows) found in the store", shard.key, table.num_rows)
        return added

    def _transaction(self) -> Any:
        db = self.db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *_: Any) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def close(self) -> None:
        self.db.close()
