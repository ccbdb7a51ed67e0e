"""The exact-dedupe ledger in Redis, shared by every worker writing into one store. No Scrapy.

Same interface as :class:`imagecrawl.dedupe.sqlite.Ledger`. Committed entries are recorded with the
shard that holds them; a worker *reserves* an image (its sha256, record id and URL) before writing it,
atomically in a Lua script, so two workers can never both reserve one sha256. A reservation belongs to
its worker (``owner``) and counts only while that worker is alive (``<prefix>:alive:<owner>``, renewed by
the worker's heartbeat): a dead worker's reservations are taken over by whoever fetches the image again.

Workers and ``imagecrawl forget`` take turns on the store wherever they run (docs/forget.md): a worker
is listed in ``<ledger prefix>writers`` while it writes (and alive), a forget run holds
``<ledger prefix>forget`` while it rewrites shards (:func:`imagecrawl.distributed.forgetlock.hold`). Each
sets its own key first, then looks for the other's, so one of them always sees the other: a forget run
refuses while a worker writes, a worker waits while a forget run holds the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from imagecrawl.dedupe.base import Entry
from imagecrawl.dedupe.liveness import HOST
from imagecrawl.dedupe.reconcile import reconcile
from imagecrawl.dedupe.sql import url_key
from imagecrawl.dedupe.worker import DirectLedger
from imagecrawl.storage.layout import current_key
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

# KEYS: committed sha, committed ids, reserved sha, reserved ids, reserved urls
# ARGV: sha256, id, url key ("" for none), owner, alive-key prefix, mode ("check" | "reserve")
_RESERVE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'sha256' end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'id' end
local function taken(hash, field)
  local owner = redis.call('HGET', hash, field)
  if not owner then return false end
  -- this worker's own claim: a duplicate when asked, idempotent when claiming again
  if owner == ARGV[4] then return ARGV[6] == 'check' end
  return redis.call('EXISTS', ARGV[5] .. owner) == 1
end
if taken(KEYS[3], ARGV[1]) then return 'sha256' end
if taken(KEYS[4], ARGV[2]) then return 'id' end
if ARGV[6] == 'check' then return false end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[5], ARGV[3], ARGV[4]) end
return false
"""

# KEYS: reserved sha, reserved ids, reserved urls; ARGV: owner, sha256, id, url key
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[2]) end
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[3]) end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[3], ARGV[4]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[4]) end
return 1
"""

# KEYS: committed set/hash, reserved hash; ARGV: field, owner, alive prefix -> 1 if known
_KNOWN = """
if redis.call(ARGV[4], KEYS[1], ARGV[1]) == 1 then return 1 end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if not owner then return 0 end
if owner == ARGV[2] then return 1 end
return redis.call('EXISTS', ARGV[3] .. owner)
"""


class RedisLedger:
    """Exact dedupe for many workers. ``owner`` identifies this worker's reservations."""

    def __init__(
        self, client: redis.Redis, prefix: str, owner: str, alive_prefix: str, alive_seconds: float = 30.0
    ) -> None:
        self.redis = client
        self.owner = owner
        self._worker: DirectLedger | None = None
        self.alive_prefix = alive_prefix
        self.alive_ms = max(1, int(alive_seconds * 1000))
        self._last_beat = 0.0
        p = prefix
        self.k_sha, self.k_id, self.k_url, self.k_shards = p + "sha", p + "id", p + "url", p + "shards"
        self.k_res_sha, self.k_res_id, self.k_res_url = p + "res:sha", p + "res:id", p + "res:url"
        self.k_writers, self.k_forget = writers_key(p), forget_key(p)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._known = client.register_script(_KNOWN)
        #: called with the record ids of every shard committed by this process
        self.commit_listeners: list[Callable[[list[str]], None]] = []
        #: the shared near-duplicate index (a RedisNearIndex), see :meth:`enable_near`
        self.near: Any = None

    # -- liveness -----------------------------------------------------------------------------
    def heartbeat(self, *, force: bool = False) -> None:
        """This worker's claims count while ``<alive prefix><owner>`` exists (the frontier's heartbeat
        renews it too, always for less time than a lease, see :mod:`.worker`)."""
        now = time.monotonic()
        if not force and now - self._last_beat < self.alive_ms / 4000:
            return
        self._last_beat = now
        self.redis.set(self.alive_prefix + self.owner, b"1", px=self.alive_ms)

    def owner_alive(self, owner: str) -> bool:
        return owner == self.owner or bool(self.redis.exists(self.alive_prefix + owner))

    # -- lookups -------------------------------------------------------------------------------
    def _check(self, sha256: str, item_id: str, url: str | None, mode: str) -> str | None:
        keys = [self.k_sha, self.k_id, self.k_res_sha, self.k_res_id, self.k_res_url]
        ukey = url_key(url).hex() if url else ""
        reason = self._reserve(keys=keys, args=[sha256, item_id, ukey, self.owner, self.alive_prefix, mode])
        if not reason:
            return None
        return reason.decode() if isinstance(reason, bytes) else str(reason)

    def duplicate_reason(self, sha256: str, item_id: str) -> str | None:
        """``"sha256"`` or ``"id"`` if committed, or reserved by this or another live worker."""
        return self._check(sha256, item_id, None, "check")

    def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        """Claim atomically for this worker; False when committed or claimed by another live worker.

        The image's pHash enters the shared near-duplicate index at once (not at commit): from then on
        every worker's near copy of it is refused."""
        if self._check(sha256, item_id, url, "reserve") is not None:
            return False
        if phash is not None and self.near is not None:
            self.near.add(item_id, int(phash))
        return True

    # -- near duplicates -----------------------------------------------------------------------
    def enable_near(self, index: Any) -> None:
        """Answer near-duplicate queries from ``index``, shared by every worker (a RedisNearIndex)."""
        self.near = index

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """(id, distance) of the closest image within ``max_distance`` that is committed or claimed by a
        live worker. The index keeps images accepted by a worker that then died without committing them:
        such a hit does not count (the dead worker's record comes back through its lease)."""
        if self.near is None or phash is None or max_distance < 0:
            return None
        hit = self.near.query(int(phash), max_distance)
        if hit is None:
            return None
        if self.has_id(str(hit[0])):
            return str(hit[0]), int(hit[1])
        # The closest is a dead worker's claim (often this very image, fetched again after its lease came
        # back): a farther hit that is committed or claimed by a live worker still counts. Without this,
        # the first copy of a group redone after a kill was kept beside the one a survivor stored.
        query_all = getattr(self.near, "query_all", None)
        if query_all is None:
            return None
        for key, distance in query_all(int(phash), max_distance):
            if key != hit[0] and self.has_id(str(key)):
                return str(key), int(distance)
        return None

    def release(self, sha256: str, item_id: str, url: str | None = None) -> None:
        ukey = url_key(url).hex() if url else ""
        self._release(keys=[self.k_res_sha, self.k_res_id, self.k_res_url], args=[self.owner, sha256, item_id, ukey])

    def has_id(self, item_id: str) -> bool:
        return bool(
            self._known(keys=[self.k_id, self.k_res_id], args=[item_id, self.owner, self.alive_prefix, "HEXISTS"])
        )

    def has_url(self, url: str) -> bool:
        ukey = url_key(url).hex()
        return bool(
            self._known(keys=[self.k_url, self.k_res_url], args=[ukey, self.owner, self.alive_prefix, "SISMEMBER"])
        )

    def known_shards(self) -> set[str]:
        # keys of the first store layout ("source=<source>/...") name the shards the store holds now
        return {current_key(k.decode() if isinstance(k, bytes) else str(k)) for k in self.redis.hkeys(self.k_shards)}

    def count(self) -> int:
        return int(self.redis.hlen(self.k_sha))

    # -- commits -------------------------------------------------------------------------------
    def commit_shard(self, key: str, entries: Iterable[Entry]) -> None:
        rows = list(entries)
        pipe = self.redis.pipeline(transaction=True)
        for sha, item_id, _phash, url in rows:
            pipe.hsetnx(self.k_sha, sha, item_id)
            pipe.hsetnx(self.k_id, item_id, sha)
            if url:
                pipe.sadd(self.k_url, url_key(url).hex())
        pipe.hset(self.k_shards, key, len(rows))
        pipe.execute()
        for sha, item_id, _phash, url in rows:
            self.release(sha, item_id, url)
        if self.near is not None:
            self.near.add_many((item_id, int(phash)) for _, item_id, phash, _ in rows if phash is not None)
        ids = [item_id for _, item_id, _, _ in rows]
        for listener in self.commit_listeners:
            listener(ids)

    def reconcile(self, store: Any) -> int:
        """Index every shard in ``store`` the ledger does not know yet; returns how many."""
        return reconcile(self, store)

    def worker(self) -> DirectLedger:
        """The async interface: asked in place (a Redis round trip; no file to wait for)."""
        if self._worker is None:
            self._worker = DirectLedger(self)
        return self._worker

    def register_writer(self, *, poll_seconds: float = 0.5) -> None:
        """List this worker as writing into the store; wait (one WARNING line) while a forget run holds it."""
        warned = False
        while True:
            self.redis.hset(self.k_writers, self.owner, f"host {HOST}, pid {os.getpid()}")
            holder = self.redis.get(self.k_forget)
            if holder is None:
                if warned:
                    logger.warning("The forget run on this store has ended: the crawl starts")
                return
            self.redis.hdel(self.k_writers, self.owner)
            if not warned:
                logger.warning(
                    "A forget run is rewriting this store (%s, in Redis): the crawl waits for it to end",
                    holder.decode() if isinstance(holder, bytes) else holder,
                )
                warned = True
            self.heartbeat()
            time.sleep(poll_seconds)

    def close(self) -> None:
        try:
            self.redis.hdel(self.k_writers, self.owner)
        except redis.RedisError as exc:  # the entry lapses with the worker's alive key anyway
            logger.warning("Cannot take this worker off the store's writers in Redis (%s)", exc)
        self.redis.close()


def writers_key(ledger_prefix: str) -> str:
    """The hash of the workers writing into a store now (owner -> host and pid)."""
    return ledger_prefix + "writers"


def forget_key(ledger_prefix: str) -> str:
    """Held (with an expiry, renewed) while ``imagecrawl forget`` rewrites the store's shards."""
    return ledger_prefix + "forget"


def open_worker_ledger(settings: Any, store_url: str, state_dir: Path, owner: str) -> tuple[RedisLedger, Path]:
    """The :class:`imagecrawl.storage.context.LedgerFactory` of distributed crawls (set by the add-on).

    Workers on one machine share the state folder: each keeps its own outbox. A dead worker's
    unfinished shards are not committed later: its leases expire and other workers redo them."""
    return open_redis_ledger(settings, store_url, owner), state_dir / "workers" / owner


def open_redis_ledger(settings: Any, store_url: str, owner: str) -> RedisLedger:
    """The shared ledger of the store ``store_url`` (keys ``<prefix>:ledger:<store tag>:*``)."""
    from imagecrawl.distributed.config import alive_prefix, ledger_prefix, redis_url

    prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX"))
    client = redis.Redis.from_url(redis_url(settings), health_check_interval=30)
    # alive for half a lease, like the frontier's heartbeat: a dead worker's claims lapse before its leases
    lease = tuning(settings).redis_lease_seconds
    ledger = RedisLedger(client, ledger_prefix(prefix, store_url), owner, alive_prefix(prefix), lease / 2)
    ledger.heartbeat(force=True)
    ledger.register_writer()  # waits while `imagecrawl forget` rewrites this store
    if settings.getbool("IMAGECRAWL_NEAR_DEDUPE_ENABLED"):
        from imagecrawl.distributed.near_index import RedisNearIndex

        namespace = ledger_prefix(prefix, store_url).replace(":ledger:", ":near:").rstrip(":")
        ledger.enable_near(RedisNearIndex(redis.Redis.from_url(redis_url(settings)), namespace=namespace))
    logger.info("Dedupe ledger in Redis (%s*) for store %s", ledger_prefix(prefix, store_url), store_url)
    return ledger
