"""The embedded ledger's SQL: its schema, the connection, one transaction helper and the lookups and
claims that :class:`~imagecrawl.dedupe.sqlite.Ledger` and its thread
(:class:`~imagecrawl.dedupe.worker.LedgerWorker`) run. Statements only: no state, no Scrapy."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagecrawl.dedupe.locking import while_locked

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS claims (
    sha256 TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    url_hash BLOB,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_url ON claims (url_hash);
CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tombstones (
    sha256 TEXT PRIMARY KEY,
    url_key TEXT,
    id_key TEXT,
    phash INTEGER,
    near INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    forgotten_at TEXT NOT NULL,
    op TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_url ON tombstones (url_key);
CREATE INDEX IF NOT EXISTS tombstones_id ON tombstones (id_key);
CREATE TABLE IF NOT EXISTS tombstone_ops (
    op TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

#: SQLite's words for "this file is not a usable database" (not "busy" or "locked": those wait)
CORRUPT = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


def url_key(url: str) -> bytes:
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the ledger file: autocommit (transactions by :func:`transaction`), WAL."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    while_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
    # WAL + NORMAL survives a killed process; a power loss may drop the last commits, which
    # reconcile() restores from the store itself.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): the one way the ledger writes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def one(db: sqlite3.Connection, sql: str, *args: Any) -> bool:
    return db.execute(sql + " LIMIT 1", args).fetchone() is not None


def duplicate_reason(db: sqlite3.Connection, sha256: str, item_id: str) -> str | None:
    """``"sha256"`` or ``"id"`` if this image or id is committed (claims: :func:`claim_holders`)."""
    if one(db, "SELECT 1 FROM seen WHERE sha256 = ?", sha256):
        return "sha256"
    if one(db, "SELECT 1 FROM ids WHERE id = ?", item_id):
        return "id"
    return None


def has_id(db: sqlite3.Connection, item_id: str) -> bool:
    """Is a record with this id committed?"""
    return one(db, "SELECT 1 FROM ids WHERE id = ?", item_id)


def has_url(db: sqlite3.Connection, key: bytes) -> bool:
    """Was an image from this URL (its :func:`url_key`) committed?"""
    return one(db, "SELECT 1 FROM urls WHERE url_hash = ?", key)


def claim_holders(
    db: sqlite3.Connection, *, sha256: str | None = None, item_id: str | None = None, url_hash: bytes | None = None
) -> set[str]:
    """The owners of the claims on this image, id or URL (any of those given)."""
    parts, args = [], []
    for column, value in (("sha256", sha256), ("id", item_id), ("url_hash", url_hash)):
        if value:
            parts.append(f"SELECT owner FROM claims WHERE {column} = ?")
            args.append(value)
    if not parts:
        return set()
    return {str(row[0]) for row in db.execute(" UNION ".join(parts), args)}


def claim_holders_of_item(db: sqlite3.Connection, item_id: str, url_hash: bytes) -> set[str]:
    """The owners of claims on this very item: this record id from this URL."""
    rows = db.execute("SELECT owner FROM claims WHERE id = ? AND url_hash = ?", (item_id, url_hash))
    return {str(row[0]) for row in rows}


def owner_row(db: sqlite3.Connection, owner: str) -> tuple[str, str, int, float] | None:
    """(owner, host, pid, heartbeat) of a run that holds or held claims, else None (it closed or was purged)."""
    row = db.execute("SELECT owner, host, pid, heartbeat FROM owners WHERE owner = ?", (owner,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]), float(row[3]))


def claim_many(db: sqlite3.Connection, owner: str, claims: list[tuple[str, str, bytes | None]]) -> list[bool]:
    """Claim (sha256, id, url hash) rows for ``owner`` in one transaction; for each, False when a committed
    row or another claim holds its image or id already (a claim of a run that ended is still in the way:
    its row may be in that run's outbox, until a live run adopts it)."""
    out = []
    with transaction(db):
        for sha256, item_id, url_hash in claims:
            if one(db, "SELECT 1 FROM seen WHERE sha256 = ? UNION ALL SELECT 1 FROM ids WHERE id = ?", sha256, item_id):
                out.append(False)
                continue
            try:
                db.execute(
                    "INSERT INTO claims (sha256, id, url_hash, owner) VALUES (?, ?, ?, ?)",
                    (sha256, item_id, url_hash, owner),
                )
            except sqlite3.IntegrityError:
                out.append(False)
            else:
                out.append(True)
    return out
