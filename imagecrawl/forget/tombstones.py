"""Tombstones: what was forgotten, kept so that no later crawl brings it back. No content: the image's
SHA-256, keys (BLAKE2b) of its URL and record id, its perceptual hash only if it was selected by image
(its near-duplicates are refused too), the reason and the date. Pure: no Scrapy.

They live in their own table, ``tombstones``, in the store's ledger file (``<state>/ledger.sqlite3``), and
a copy of each forget run's tombstones lives in the store itself (``.imagecrawl/audit/tombstones/<op>.jsonl``), so a
ledger rebuilt from the store, or the state folder of another machine writing into the same S3 store,
gets them back (:func:`sync_from_store`). The crawl asks :class:`TombstoneIndex` (loaded once into
memory: a few dozen bytes a row) before an image is fetched and before an item is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imagecrawl import defaults
from imagecrawl.dedupe.base import TombstoneRow
from imagecrawl.dedupe.sqlite import Ledger, open_ledger
from imagecrawl.media import hamming
from imagecrawl.storage import layout

logger = logging.getLogger(__name__)
#: a forgotten image's near-duplicates are refused within the near-dedupe distance (IMAGECRAWL_NEAR_MAX_DISTANCE)
NEAR_DISTANCE = defaults.IMAGECRAWL_NEAR_MAX_DISTANCE

#: the store folder of forget's records (tombstones and the audit log), where readers do not look
AUDIT_DIR = layout.AUDIT_DIR
TOMBSTONES_DIR = f"{AUDIT_DIR}/tombstones"


def key_of(text: str) -> str:
    """The key a tombstone keeps for a URL or a record id: not the text itself."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Tombstone:
    sha256: str
    url_key: str | None
    id_key: str | None
    phash: int | None  # only when selected by image: its near-duplicates are refused too
    near: bool
    reason: str
    forgotten_at: str  # ISO 8601, UTC
    op: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def row(self) -> TombstoneRow:
        """As the ledger keeps it."""
        return (
            self.sha256,
            self.url_key,
            self.id_key,
            self.phash,
            int(self.near),
            self.reason,
            self.forgotten_at,
            self.op,
        )

    @classmethod
    def from_json(cls, line: str) -> Tombstone:
        data = json.loads(line)
        return cls(**{name: data.get(name) for name in cls.__slots__})


def tombstone_for(row: dict[str, Any], *, near: bool, reason: str, when: str, op: str) -> Tombstone:
    """The tombstone of one forgotten row (``id``, ``image_url``, ``image_sha256``, ``image_phash``)."""
    url, item_id, phash = row.get("image_url"), row.get("id"), row.get("image_phash")
    return Tombstone(
        sha256=str(row["image_sha256"]),
        url_key=key_of(url) if url else None,
        id_key=key_of(item_id) if item_id else None,
        phash=int(phash) if near and phash is not None else None,
        near=near and phash is not None,
        reason=reason,
        forgotten_at=when,
        op=op,
    )


class TombstoneTable:
    """The tombstones the dedupe ledger keeps (its ``tombstones`` table, through the ledger's methods), as
    :class:`Tombstone` objects."""

    def __init__(self, ledger: Ledger, *, owned: bool = False) -> None:
        self.ledger = ledger
        self.path = ledger.path
        self._owned = owned

    @classmethod
    def at(cls, path: Path) -> TombstoneTable:
        """The tombstones of the ledger file ``path``, opened for this table alone (closed with it)."""
        return cls(open_ledger(path, owner=f"tombstones-{os.getpid()}-{secrets.token_hex(3)}"), owned=True)

    def add(self, op: str, stones: Iterable[Tombstone]) -> int:
        """Record ``op``'s tombstones (idempotent: the first tombstone of an image stays)."""
        return self.ledger.add_tombstones(op, (t.row() for t in stones))

    def ops(self) -> set[str]:
        return self.ledger.tombstone_ops()

    def count(self) -> int:
        return sum(1 for _ in self.ledger.tombstone_rows())

    def __iter__(self) -> Iterator[Tombstone]:
        for row in self.ledger.tombstone_rows():
            yield Tombstone(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])

    def close(self) -> None:
        if self._owned:
            self.ledger.close()


def store_key(op: str) -> str:
    return f"{TOMBSTONES_DIR}/{op}.jsonl"


def put_in_store(store: Any, op: str, stones: list[Tombstone]) -> None:
    body = "".join(t.to_json() + "\n" for t in stones).encode()
    store.put_bytes(store_key(op), body, "application/x-ndjson")


def sync_from_store(store: Any, table: TombstoneTable) -> int:
    """Load the tombstones of every forget run the store records and ``table`` does not know yet (a new
    or rebuilt ledger, another machine's state folder); returns how many runs were loaded."""
    known = table.ops()
    loaded = 0
    for key in store.list_keys(TOMBSTONES_DIR + "/"):
        op = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
        if not key.endswith(".jsonl") or op in known:
            continue
        with store.open(key) as fh:
            lines = fh.read().decode().splitlines()
        table.add(op, (Tombstone.from_json(line) for line in lines if line.strip()))
        loaded += 1
    if loaded:
        logger.info("Tombstones: loaded %d forget run(s) from the store into %s", loaded, table.path)
    return loaded


class TombstoneIndex:
    """In-memory view of the tombstones, for the crawl's hot path: is this image, URL or record id
    forgotten, or is it a near-duplicate of an image forgotten by image? Thread-safe; :meth:`refresh`
    picks up tombstones added since (another process's forget, or Redis in a distributed crawl)."""

    def __init__(self, stones: Iterable[Tombstone] = (), near_distance: int = NEAR_DISTANCE) -> None:
        self.near_distance = near_distance
        self._lock = threading.Lock()
        self._sha: dict[str, str] = {}
        self._url: dict[str, str] = {}
        self._id: dict[str, str] = {}
        self._near: list[tuple[int, str]] = []
        self._stones: list[Tombstone] = []
        self.add_many(stones)

    def __len__(self) -> int:
        return len(self._sha)

    def add_many(self, stones: Iterable[Tombstone]) -> None:
        with self._lock:
            for t in stones:
                if t.sha256 in self._sha:
                    continue
                self._sha[t.sha256] = t.reason
                self._stones.append(t)
                if t.url_key:
                    self._url[t.url_key] = t.reason
                if t.id_key:
                    self._id[t.id_key] = t.reason
                if t.near and t.phash is not None:
                    self._near.append((int(t.phash), t.reason))

    def stones(self) -> list[Tombstone]:
        with self._lock:
            return list(self._stones)

    def before_fetch(self, record_id: str | None, url: str | None) -> str | None:
        """``"id"`` or ``"url"`` if a request for this image would fetch a forgotten one."""
        if record_id and key_of(record_id) in self._id:
            return "id"
        if url and key_of(url) in self._url:
            return "url"
        return None

    def refused(self, sha256: str | None, item_id: str | None, url: str | None, phash: int | None) -> str | None:
        """Why an item must not be kept: ``"sha256"``, ``"id"``, ``"url"`` or ``"near"``; None if it may."""
        if sha256 and sha256 in self._sha:
            return "sha256"
        before = self.before_fetch(item_id, url)
        if before:
            return before
        if phash is not None and self._near:
            with self._lock:
                near = list(self._near)
            if any(hamming(phash, h) <= self.near_distance for h, _ in near):
                return "near"
        return None


def load_index(ledger_path: Path, store: Any | None = None, near_distance: int = NEAR_DISTANCE) -> TombstoneIndex:
    """The tombstones of a store, synced from the store's copy first when ``store`` is given."""
    table = TombstoneTable.at(ledger_path)
    try:
        return index_of(table, store, near_distance)
    finally:
        table.close()


def index_of(table: TombstoneTable, store: Any | None = None, near_distance: int = NEAR_DISTANCE) -> TombstoneIndex:
    """The tombstones of ``table`` (synced from the store's copy first when ``store`` is given), in memory."""
    if store is not None:
        try:
            sync_from_store(store, table)
        except Exception as exc:  # the store may be down: the ledger's own tombstones still hold
            logger.warning("Cannot read the tombstones kept in the store %s (%s)", getattr(store, "url", ""), exc)
    return TombstoneIndex(table, near_distance)
