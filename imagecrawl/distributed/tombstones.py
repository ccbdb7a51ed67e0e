"""Tombstones shared by the workers of a distributed crawl, through Redis (docs/forget.md). No Scrapy
beyond the crawler handed to :meth:`SharedTombstones.from_crawler`.

One Redis hash per store, ``<prefix>:tombstones:<store tag>`` (field: the image SHA-256, value: the
tombstone as JSON, no content), and a counter ``...:version`` raised by every publish. A worker loads the
store's own tombstones at start (``.imagecrawl/audit/tombstones/``, the source of truth), publishes them, and looks
at the counter every :attr:`SharedTombstones.refresh_seconds` while it runs: a forget run that publishes
(``imagecrawl forget -s IMAGECRAWL_REDIS_URL=...``) reaches running workers without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import redis

from imagecrawl.forget.tombstones import NEAR_DISTANCE, Tombstone, TombstoneIndex, load_index
from imagecrawl.state import state_dir_for

logger = logging.getLogger(__name__)


def tombstones_key(prefix: str, store_url: str) -> str:
    """The Redis hash of one store's tombstones (tagged like its ledger, docs/distributed.md)."""
    tag = hashlib.sha256(store_url.rstrip("/").encode()).hexdigest()[:16]
    return f"{prefix}:tombstones:{tag}"


class SharedTombstones(TombstoneIndex):
    """A :class:`TombstoneIndex` that also holds every tombstone published in Redis, kept fresh."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        near_distance: int = NEAR_DISTANCE,
        refresh_seconds: float = 2.0,
    ) -> None:
        super().__init__((), near_distance)
        self.client = client
        self.key = key
        self.refresh_seconds = refresh_seconds
        self._version: Any = None
        self._checked = 0.0

    # -- Redis -----------------------------------------------------------------------------------
    @staticmethod
    def publish_to(client: redis.Redis, key: str, stones: Iterable[Tombstone]) -> int:
        """HSETNX every tombstone (the first of an image stays), then raise the version; returns how many."""
        batch = list(stones)
        if not batch:
            return 0
        pipe = client.pipeline(transaction=False)
        for t in batch:
            pipe.hsetnx(key, t.sha256, t.to_json())
        pipe.incr(f"{key}:version")
        pipe.execute()
        return len(batch)

    def publish(self, stones: Iterable[Tombstone]) -> None:
        batch = list(stones)
        self.publish_to(self.client, self.key, batch)
        self.add_many(batch)

    def refresh(self, *, force: bool = False) -> None:
        """Load the tombstones published since the last look (at most every ``refresh_seconds``)."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        try:
            version = self.client.get(f"{self.key}:version")
            if version == self._version and not force:
                return
            stones = [Tombstone.from_json(v) for _, v in self.client.hscan_iter(self.key, count=1000)]
        except redis.RedisError as exc:  # keep what we have; Redis trouble is the frontier's to report
            logger.warning("Cannot read the shared tombstones from Redis (%s): using those already loaded", exc)
            return
        before = len(self)
        self.add_many(stones)
        self._version = version
        if len(self) > before and before:
            logger.info("Tombstones: %d more forgotten images from Redis", len(self) - before)

    # -- the checks, fresh ---------------------------------------------------------------------
    def before_fetch(self, record_id: str | None, url: str | None) -> str | None:
        self.refresh()
        return super().before_fetch(record_id, url)

    def refused(self, sha256: str | None, item_id: str | None, url: str | None, phash: int | None) -> str | None:
        self.refresh()
        return super().refused(sha256, item_id, url, phash)

    # -- plugging in -----------------------------------------------------------------------------
    @classmethod
    def from_crawler(cls, crawler: Any) -> SharedTombstones:
        """``IMAGECRAWL_TOMBSTONES_FACTORY`` of distributed crawls (set by the add-on): the store's
        tombstones, published to Redis, plus everything published there."""
        from imagecrawl.distributed.config import redis_url
        from imagecrawl.storage.extensions import crawl_storage

        settings = crawler.settings
        url = str(settings.get("IMAGECRAWL_STORE"))
        near = settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE")
        state = state_dir_for(url, settings.get("IMAGECRAWL_STATE_DIR"))
        local = load_index(state / "ledger.sqlite3", crawl_storage(crawler).store, near)
        client = redis.Redis.from_url(redis_url(settings))
        shared = cls(client, tombstones_key(str(settings.get("IMAGECRAWL_REDIS_PREFIX")), url), near)
        shared.publish(local.stones())
        shared.refresh(force=True)
        return shared

    @classmethod
    def publish_settings(cls, settings: Any, stones: list[Tombstone]) -> int:
        """What ``imagecrawl forget`` calls when a Redis URL is set: publish a forget run's tombstones."""
        from imagecrawl.distributed.config import redis_url

        url = str(settings.get("IMAGECRAWL_STORE"))
        client = redis.Redis.from_url(redis_url(settings))
        try:
            return cls.publish_to(client, tombstones_key(str(settings.get("IMAGECRAWL_REDIS_PREFIX")), url), stones)
        finally:
            client.close()

    @staticmethod
    def author_salt(settings: Any) -> str | None:
        """The author salt the workers of a distributed crawl share (``<prefix>:author_salt``, made by the
        add-on), for ``imagecrawl forget --account``; None if no worker made one yet."""
        from imagecrawl.distributed.config import redis_url

        client = redis.Redis.from_url(redis_url(settings))
        try:
            value = client.get(f"{settings.get('IMAGECRAWL_REDIS_PREFIX')}:author_salt")
        finally:
            client.close()
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
