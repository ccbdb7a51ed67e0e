"""Near-duplicate index shared through Redis, for several crawler processes. No Scrapy.

Redis holds the truth as an append-only log; every process keeps a replica of it in an in-memory
multi-index (:class:`~imagecrawl.dedupe.near.MihCore`) and answers queries locally:

- ``{ns}:log``  list, one entry per add batch, in global insertion order: newline-separated lines of
  16 hex digits of the unsigned hash followed by the key (text, so clients with
  ``decode_responses=True`` work too; keys cannot contain a newline);
- ``{ns}:keys`` hash, key -> hex hash: makes adds idempotent per key (the first hash for a key wins).

``add_many`` is one EVALSHA per 1000 items (a Lua script: HSETNX each key, RPUSH the new ones as one
log entry, so concurrent writers never interleave half a batch and a load parses few, large entries).
``query`` is one round trip (``LRANGE log <seen> -1``, empty when nothing is new) followed by a local
search, so a hash added by any worker is visible to every worker's next query, and Redis does no
per-query work beyond a list tail read. The price: each process holds the whole index in memory (about
200 bytes a hash, keys included) and reads the log once at start (a few seconds per million hashes).

The keys share the hash tag ``{namespace}``, so the index also works on Redis Cluster. The log must
never be truncated; to reset an index, delete both keys while no worker runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from imagecrawl.dedupe.near import DEFAULT_BANDS, MihCore, to_unsigned64

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

_BATCH: Final = 1000
_LOAD_CHUNK: Final = 100  # log entries per LRANGE; an entry holds up to _BATCH hashes

_ADD_SCRIPT: Final = """
local fresh = {}
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], string.sub(ARGV[i + 1], 1, 16)) == 1 then
    fresh[#fresh + 1] = ARGV[i + 1]
  end
end
if #fresh > 0 then
  redis.call('RPUSH', KEYS[2], table.concat(fresh, '\\n'))
end
return #fresh
"""


class RedisNearIndex:
    """Near-duplicate index in Redis under ``namespace``; see the module docstring for the layout."""

    def __init__(self, client: redis.Redis, *, namespace: str = "imagecrawl:near", bands: int = DEFAULT_BANDS) -> None:
        self.client = client
        self.namespace = namespace
        self._keys_key = f"{{{namespace}}}:keys"
        self._log_key = f"{{{namespace}}}:log"
        self._add_script: Any = client.register_script(_ADD_SCRIPT)
        self._lock = threading.RLock()
        self._core = MihCore(bands)
        self._keys: list[str] = []
        self._seen_entries = 0  # log entries (batches) applied to the replica
        self._catch_up()
        logger.info("Near-duplicate index in Redis %s: %d hashes loaded (%d bands)", namespace, len(self._keys), bands)

    def _catch_up(self) -> None:
        """Apply every log entry this process has not seen yet (one round trip when there are none)."""
        hashes: list[int] = []
        keys: list[str] = []
        seen = self._seen_entries
        while True:
            entries = self.client.lrange(self._log_key, seen, seen + _LOAD_CHUNK - 1)
            for entry in entries:
                for line in (entry.decode() if isinstance(entry, bytes) else str(entry)).split("\n"):
                    hashes.append(int(line[:16], 16))
                    keys.append(line[16:])
            seen += len(entries)
            if len(entries) < _LOAD_CHUNK:
                break
        if hashes:
            start = len(self._keys)
            handles = np.arange(start, start + len(hashes), dtype=np.int64)
            self._core.add_arrays(handles, np.array(hashes, dtype=np.uint64))
            self._keys += keys
        self._seen_entries = seen

    def query(self, phash: int, max_distance: int) -> tuple[str, int] | None:
        value = to_unsigned64(phash)
        with self._lock:
            self._catch_up()
            hit = self._core.query(value, max_distance)
            return None if hit is None else (self._keys[hit[0]], hit[1])

    def query_all(self, phash: int, max_distance: int) -> list[tuple[str, int]]:
        """Every (key, distance) within ``max_distance``, closest first (a full scan of the replica)."""
        value = to_unsigned64(phash)
        with self._lock:
            self._catch_up()
            return [(self._keys[h], d) for h, d in self._core.query_all(value, max_distance)]

    def add(self, key: str, phash: int) -> None:
        self.add_many([(key, phash)])

    def add_many(self, items: Iterable[tuple[str, int]]) -> None:
        """Store ``items`` (idempotent per key), then catch up so this process sees them at once."""
        args: list[str] = []
        for key, phash in items:
            if "\n" in key:
                raise ValueError(f"near-index keys cannot contain a newline: {key!r}")
            args += [key, f"{to_unsigned64(phash):016x}{key}"]
        with self._lock:
            for i in range(0, len(args), 2 * _BATCH):
                self._add_script(keys=[self._keys_key, self._log_key], args=args[i : i + 2 * _BATCH])
            self._catch_up()

    def __len__(self) -> int:
        with self._lock:
            self._catch_up()
            return len(self._keys)

    def close(self) -> None:
        """Drops the local replica; the Redis client belongs to the caller and stays open."""
        with self._lock:
            self._core = MihCore(self._core.bands)
            self._keys = []
            self._seen_entries = 0
