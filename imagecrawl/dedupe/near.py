"""Near-duplicate image index: "is any stored 64-bit perceptual hash within Hamming distance k?". No Scrapy.

The core is an in-memory *multi-index hash* (Norouzi, Punjani & Fleet, "Fast search in Hamming space
with multi-index hashing", CVPR 2012). The 64 bits are split into ``bands`` disjoint bit ranges; if
``hamming(a, b) <= k`` then, by the pigeonhole principle, at least one band of ``a`` and ``b`` differs in at
most ``k // bands`` bits. Each band keeps its values sorted (numpy), a query enumerates every band value
within that radius, binary-searches it, and verifies the candidates with the full 64-bit distance. The
answer is exact: the same as a linear scan, never an approximation.

Recent adds go to a small unsorted *delta* that queries scan linearly; when it fills up it is merged
into the sorted bands (amortised a few microseconds per add). When probing would cost more than a scan
(tiny indexes, or a radius so wide that most band values are probed), the core scans instead.

Ties are broken by insertion order: among the stored hashes at the smallest distance, the one added
first wins, so every backend, every process and a brute-force scan give the same answer.

Backends:

- :class:`MemoryNearIndex`: the core plus a key list; not persistent (tests, pending items).
- :class:`SqliteNearIndex`: a table in a SQLite file, loaded into the core on open. ``add_many`` writes
  one transaction. Other processes' commits to the same file are picked up before the next query
  (``PRAGMA data_version``), so several processes may share the file.
- :class:`~imagecrawl.distributed.near_index.RedisNearIndex`: shared through Redis.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import sqlite3
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import numpy as np

from imagecrawl import defaults
from imagecrawl.dedupe.locking import while_locked

logger = logging.getLogger(__name__)

#: Hamming distance at or below which two pHashes count as the same picture (tuned by
#: ``benchmarks/near_dupes.py``; the trade-off is in docs/near-duplicates.md).
DEFAULT_MAX_DISTANCE: Final = defaults.IMAGECRAWL_NEAR_MAX_DISTANCE
#: 4 bands of 16 bits: the MIH sweet spot (64 / log2(n)) for 10^5..10^7 stored hashes.
DEFAULT_BANDS: Final = 4

_MASK64: Final = (1 << 64) - 1
_MIN_SIGNED: Final = -(1 << 63)
_SCAN_BELOW: Final = 2048  # below this many stored hashes a linear scan is as fast as probing
_OFFSETS_MAX_WIDTH: Final = 20  # bands this narrow get a bucket offset table (2**width + 1 int64)


@runtime_checkable
class NearIndex(Protocol):
    def query(self, phash: int, max_distance: int) -> tuple[str, int] | None:
        """(key of the closest stored hash within ``max_distance``, its distance), or None."""
        ...

    def add(self, key: str, phash: int) -> None: ...

    def add_many(self, items: Iterable[tuple[str, int]]) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def to_unsigned64(phash: int) -> int:
    """The hash as an unsigned 64-bit int; accepts the signed (int64 column) or unsigned form, as a Python
    or numpy integer."""
    phash = operator.index(phash)
    if not _MIN_SIGNED <= phash <= _MASK64:
        raise ValueError(f"not a 64-bit hash: {phash}")
    return phash & _MASK64


def to_signed64(phash: int) -> int:
    value = to_unsigned64(phash)
    return value - (1 << 64) if value >= (1 << 63) else value


def band_layout(bands: int) -> tuple[tuple[int, int], ...]:
    """(shift, width) of each band, most significant first; widths differ by at most one bit."""
    if not 1 <= bands <= 64:
        raise ValueError(f"bands must be in 1..64, got {bands}")
    base, extra = divmod(64, bands)
    widths = [base + 1 if i < extra else base for i in range(bands)]
    layout = []
    shift = 64
    for width in widths:
        shift -= width
        layout.append((shift, width))
    return tuple(layout)


def _band_dtype(width: int) -> type[np.unsignedinteger]:
    for dtype, bits in ((np.uint8, 8), (np.uint16, 16), (np.uint32, 32)):
        if width <= bits:
            return dtype
    return np.uint64


def _probe_count(width: int, radius: int) -> int:
    return sum(math.comb(width, i) for i in range(min(radius, width) + 1))


@lru_cache(maxsize=64)
def _flip_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit XOR mask with at most ``radius`` bits set (uint64)."""
    masks = [0]
    for r in range(1, min(radius, width) + 1):
        for bits in itertools.combinations(range(width), r):
            masks.append(sum(1 << b for b in bits))
    out = np.array(masks, dtype=np.uint64)
    out.setflags(write=False)
    return out


class MihCore:
    """Exact Hamming-radius search over (handle, 64-bit hash) pairs. Handles must increase with insertion
    order (they break ties). Not thread-safe: backends lock around it."""

    def __init__(self, bands: int = DEFAULT_BANDS) -> None:
        self.layout = band_layout(bands)
        self.bands = bands
        self._hashes = np.empty(0, dtype=np.uint64)  # merged part, in insertion order
        self._handles = np.empty(0, dtype=np.int64)
        self._bucket_hashes: list[np.ndarray] = []
        self._bucket_pos: list[np.ndarray] = []
        self._offsets: list[np.ndarray | None] = []
        self._sorted: list[np.ndarray | None] = []
        self._delta_h = np.empty(1024, dtype=np.uint64)
        self._delta_k = np.empty(1024, dtype=np.int64)
        self._delta_n = 0
        self._build()

    def __len__(self) -> int:
        return len(self._hashes) + self._delta_n

    # -- adding ---------------------------------------------------------------------------------
    def add(self, handle: int, phash: int) -> None:
        if self._delta_n == len(self._delta_h):
            self._merge()
        self._delta_h[self._delta_n] = to_unsigned64(phash)
        self._delta_k[self._delta_n] = handle
        self._delta_n += 1

    def add_arrays(self, handles: np.ndarray, hashes: np.ndarray) -> None:
        """Bulk add (``hashes`` as uint64, or int64 reinterpreted). Goes to the delta if it fits, else
        everything is merged into the bands at once (one sort per band, however many rows)."""
        count = len(handles)
        if count == 0:
            return
        hashes = np.asarray(hashes).view(np.uint64)
        end = self._delta_n + count
        if end <= len(self._delta_h):
            self._delta_h[self._delta_n : end] = hashes
            self._delta_k[self._delta_n : end] = handles
            self._delta_n = end
        else:
            self._merge(np.asarray(handles, dtype=np.int64), hashes)

    def _merge(self, handles: np.ndarray | None = None, hashes: np.ndarray | None = None) -> None:
        parts_h = [self._hashes, self._delta_h[: self._delta_n]]
        parts_k = [self._handles, self._delta_k[: self._delta_n]]
        if hashes is not None and handles is not None:
            parts_h.append(hashes)
            parts_k.append(handles)
        self._hashes = np.concatenate(parts_h)
        self._handles = np.concatenate(parts_k)
        self._delta_n = 0
        # Delta capacity grows with the index: scanning it stays cheap, merging it stays rare.
        cap = int(min(32768, max(1024, len(self._hashes) // 32)))
        if cap != len(self._delta_h):
            self._delta_h = np.empty(cap, dtype=np.uint64)
            self._delta_k = np.empty(cap, dtype=np.int64)
        self._build()

    def _build(self) -> None:
        """Per band: the hashes sorted by band value (so a bucket is a contiguous run), their positions
        in insertion order, and either a bucket offset table (narrow bands) or the sorted band values."""
        self._bucket_hashes, self._bucket_pos, self._offsets, self._sorted = [], [], [], []
        for shift, width in self.layout:
            vals = ((self._hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(_band_dtype(width))
            order = np.argsort(vals, kind="stable")
            self._bucket_hashes.append(self._hashes[order])
            self._bucket_pos.append(order.astype(np.int32 if len(vals) < 2**31 else np.int64))
            if width <= _OFFSETS_MAX_WIDTH:
                counts = np.bincount(vals, minlength=1 << width)
                offsets = np.zeros((1 << width) + 1, dtype=np.int64)
                np.cumsum(counts, out=offsets[1:])
                self._offsets.append(offsets)
                self._sorted.append(None)
            else:
                self._offsets.append(None)
                self._sorted.append(vals[order])

    # -- querying -------------------------------------------------------------------------------
    def query(self, phash: int, max_distance: int) -> tuple[int, int] | None:
        """(handle, distance) of the closest stored hash within ``max_distance`` (first added on ties)."""
        if max_distance < 0:
            return None
        q = np.uint64(to_unsigned64(phash))
        best: tuple[int, int] | None = None
        n = len(self._hashes)
        if n:
            if self._probing_pays(n, max_distance):
                best = self._probe(q, max_distance)
            else:
                best = _closest(self._hashes, self._handles, q, max_distance)
        if self._delta_n:
            other = _closest(self._delta_h[: self._delta_n], self._delta_k[: self._delta_n], q, max_distance)
            if other is not None and (best is None or (other[1], other[0]) < (best[1], best[0])):
                best = other
        return best

    def query_all(self, phash: int, max_distance: int) -> list[tuple[int, int]]:
        """Every stored (handle, distance) within ``max_distance``, closest first (then first added). A
        full scan: for the rare caller whose closest hit does not count (see the Redis ledger)."""
        if max_distance < 0:
            return []
        q = np.uint64(to_unsigned64(phash))
        hits: list[tuple[int, int]] = []
        for hashes, handles in (
            (self._hashes, self._handles),
            (self._delta_h[: self._delta_n], self._delta_k[: self._delta_n]),
        ):
            if len(hashes) == 0:
                continue
            dist = np.bitwise_count(hashes ^ q)
            within = np.flatnonzero(dist <= max_distance)
            hits += [(int(handles[i]), int(dist[i])) for i in within]
        return sorted(hits, key=lambda hit: (hit[1], hit[0]))

    def _probing_pays(self, n: int, max_distance: int) -> bool:
        if n < _SCAN_BELOW or max_distance >= 64:
            return False
        radius = max_distance // self.bands
        cost = 0.0
        for _, width in self.layout:
            probes = _probe_count(width, radius)
            # a binary search per probe, plus the expected bucket sizes for uniform hashes
            cost += probes * (2 + math.log2(n)) + probes * n / 2.0**width
        return cost < n / 4

    def _probe(self, q: np.uint64, k: int) -> tuple[int, int] | None:
        radius = k // self.bands
        qi = int(q)
        best_d = k + 1
        best_pos: np.ndarray | None = None
        for band, (shift, width) in enumerate(self.layout):
            probes = _flip_masks(width, radius) ^ np.uint64((qi >> shift) & ((1 << width) - 1))
            offsets = self._offsets[band]
            if offsets is not None:
                probes = probes.astype(np.intp)
                lo, hi = offsets[probes], offsets[probes + 1]
            else:
                sorted_vals = self._sorted[band]
                assert sorted_vals is not None
                probes = probes.astype(sorted_vals.dtype)
                lo = np.searchsorted(sorted_vals, probes, side="left")
                hi = np.searchsorted(sorted_vals, probes, side="right")
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            # positions lo[i] .. hi[i] - 1 of every probed bucket, as one flat array
            idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
            dist = np.bitwise_count(self._bucket_hashes[band][idx] ^ q)
            d = int(dist.min())
            if d < best_d:
                best_d, best_pos = d, self._bucket_pos[band][idx[dist == d]]
            elif d == best_d and best_pos is not None:
                best_pos = np.concatenate([best_pos, self._bucket_pos[band][idx[dist == d]]])
        if best_pos is None:
            return None
        handles = self._handles[best_pos]
        return int(handles.min()), best_d


def _closest(hashes: np.ndarray, handles: np.ndarray, q: np.uint64, k: int) -> tuple[int, int] | None:
    if len(hashes) == 0:
        return None
    dist = np.bitwise_count(hashes ^ q)
    best = int(dist.min())
    if best > k:  # the usual answer: one pass over the distances, no index arrays
        return None
    at_min = np.flatnonzero(dist == best)
    i = at_min[np.argmin(handles[at_min])]
    return int(handles[i]), best


class MemoryNearIndex:
    """The core with keys kept in a list. Not persistent; first add of a key wins."""

    def __init__(self, *, bands: int = DEFAULT_BANDS) -> None:
        self._core = MihCore(bands)
        self._keys: list[str] = []
        self._seen: set[str] = set()

    def query(self, phash: int, max_distance: int) -> tuple[str, int] | None:
        hit = self._core.query(phash, max_distance)
        return None if hit is None else (self._keys[hit[0]], hit[1])

    def add(self, key: str, phash: int) -> None:
        self.add_many([(key, phash)])

    def add_many(self, items: Iterable[tuple[str, int]]) -> None:
        for key, phash in items:
            value = to_unsigned64(phash)
            if key in self._seen:
                continue
            self._seen.add(key)
            self._keys.append(key)
            self._core.add(len(self._keys) - 1, value)

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS near_phash (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    phash INTEGER NOT NULL
);
"""


class SqliteNearIndex:
    """Persistent near-duplicate index: table ``near_phash`` in the SQLite file ``path``.

    The table may live in the same file as the dedupe ledger. Adds are idempotent per key (the first
    hash stored for a key wins). Safe to share the file between processes: each one picks up the
    others' commits before its next query.
    """

    def __init__(self, path: Path, *, bands: int = DEFAULT_BANDS, fresh_seconds: float = 0.0) -> None:
        """``fresh_seconds``: other connections' commits are looked for at most this often (0: before
        every query); this connection's own adds are visible at once."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fresh_seconds = fresh_seconds
        self._checked_at = -math.inf
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        while_locked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-32768")  # 32 MiB: keeps the key index hot at 10^6 rows
        while_locked(lambda: self._db.executescript(_SCHEMA))
        self._core = MihCore(bands)
        self._loaded_upto = 0  # highest seq in the core
        self._count = 0
        self._data_version = -1
        self._catch_up()
        logger.info("Near-duplicate index %s: %d hashes loaded (%d bands)", path, self._count, bands)

    def _catch_up(self) -> None:
        """Load every row committed since the last load (by this or any other connection)."""
        self._data_version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        cur = self._db.execute("SELECT seq, phash FROM near_phash WHERE seq > ? ORDER BY seq", (self._loaded_upto,))
        chunks = []
        while rows := cur.fetchmany(65536):
            chunks.append(np.array(rows, dtype=np.int64))
        if chunks:
            arr = np.concatenate(chunks)
            self._core.add_arrays(arr[:, 0], arr[:, 1].view(np.uint64))
            self._loaded_upto = int(arr[-1, 0])
            self._count += len(arr)

    def _fresh(self) -> None:
        if self.fresh_seconds > 0:
            now = time.monotonic()
            if now - self._checked_at < self.fresh_seconds:
                return
            self._checked_at = now
        if int(self._db.execute("PRAGMA data_version").fetchone()[0]) != self._data_version:
            self._catch_up()

    def query(self, phash: int, max_distance: int) -> tuple[str, int] | None:
        with self._lock:
            self._fresh()
            hit = self._core.query(phash, max_distance)
            if hit is None:
                return None
            row = self._db.execute("SELECT key FROM near_phash WHERE seq = ?", (hit[0],)).fetchone()
            return str(row[0]), hit[1]

    def add(self, key: str, phash: int) -> None:
        self.add_many([(key, phash)])

    def add_many(self, items: Iterable[tuple[str, int]]) -> None:
        """Persist ``items`` in one transaction, then make them (and anyone else's) visible to queries."""
        rows = [(key, to_signed64(phash)) for key, phash in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO near_phash (key, phash) VALUES (?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._catch_up()

    def __len__(self) -> int:
        with self._lock:
            self._fresh()
            return self._count

    @staticmethod
    def remove_keys(path: Path, keys: Iterable[str]) -> int:
        """Take ``keys`` out of the index file at ``path`` without loading it (the rows of a forget run,
        docs/forget.md; no crawl has the file open then). Returns how many were there."""
        batch = [(key,) for key in keys]
        if not path.exists() or not batch:
            return 0
        db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            while_locked(lambda: db.executescript(_SCHEMA))
            db.execute("BEGIN IMMEDIATE")
            removed = db.executemany("DELETE FROM near_phash WHERE key = ?", batch).rowcount
            db.execute("COMMIT")
            return removed
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()
