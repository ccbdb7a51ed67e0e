"""A forget run's turn on a store that distributed workers write into (docs/forget.md), through Redis:
the workers of other machines hold no lock on this machine's state folder. No Scrapy.

The forget run sets ``<ledger prefix>forget`` (expiring, renewed while it runs: a killed run frees the
store by itself), then looks at the store's writers (:meth:`RedisLedger.register_writer`): a live one
makes it give the key back and refuse. A worker sets its entry first and then looks at the key, so the
two never both go ahead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import redis

from imagecrawl.dedupe.liveness import HOST
from imagecrawl.distributed.config import alive_prefix, ledger_prefix, redis_url
from imagecrawl.distributed.ledger import forget_key, writers_key
from imagecrawl.errors import StoreError

logger = logging.getLogger(__name__)

#: how long the key outlives a forget run that stopped renewing it (killed)
HOLD_SECONDS = 30.0

# KEYS: the forget key; ARGV: this run's token, expiry (ms) -> 1 if renewed
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: the forget key; ARGV: this run's token
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def live_writers(client: redis.Redis, prefix: str, store_url: str) -> list[str]:
    """The workers listed as writing into the store whose alive key still exists; the others are taken
    off the list (they died without closing)."""
    key = writers_key(ledger_prefix(prefix, store_url))
    alive = alive_prefix(prefix)
    found = []
    for raw_owner, raw_where in client.hgetall(key).items():
        owner = raw_owner.decode() if isinstance(raw_owner, bytes) else str(raw_owner)
        where = raw_where.decode() if isinstance(raw_where, bytes) else str(raw_where)
        if client.exists(alive + owner):
            found.append(f"distributed crawl worker {owner} ({where})")
        else:
            client.hdel(key, owner)
    return sorted(found)


@contextlib.contextmanager
def hold(settings: Any, store_url: str, what: str = "imagecrawl forget") -> Iterator[None]:
    """Hold the store against distributed workers for a forget run, or raise :class:`StoreError` (one
    line) when a worker writes into it now or another forget run holds it."""
    prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX"))
    key = forget_key(ledger_prefix(prefix, store_url))
    client = redis.Redis.from_url(redis_url(settings))
    token = f"{what} on host {HOST}, pid {os.getpid()}"
    expiry = int(HOLD_SECONDS * 1000)
    try:
        if not client.set(key, token, px=expiry, nx=True):
            holder = client.get(key)
            raise StoreError(
                f"another forget run holds this store ({holder.decode() if isinstance(holder, bytes) else holder}"
                f", in Redis): run {what} again when it has ended"
            )
        give_back = client.register_script(_GIVE_BACK)
        writers = live_writers(client, prefix, store_url)
        if writers:
            give_back(keys=[key], args=[token])
            raise StoreError(f"{writers[0]} is writing into this store now: run {what} again when it has ended")
        done = threading.Event()
        renew = client.register_script(_RENEW)

        def keep() -> None:
            while not done.wait(HOLD_SECONDS / 3):
                try:
                    renew(keys=[key], args=[token, expiry])
                except redis.RedisError as exc:
                    logger.warning("Cannot renew this forget run's hold on the store in Redis (%s)", exc)

        keeper = threading.Thread(target=keep, name="imagecrawl-forget-hold", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()
            give_back(keys=[key], args=[token])
    finally:
        client.close()
