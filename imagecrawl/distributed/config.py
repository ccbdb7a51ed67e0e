"""Settings of the Redis layer, read once into a typed config. No Scrapy imports beyond settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from imagecrawl.errors import ConfigError
from imagecrawl.tuning import tuning


def redis_url(settings: Any) -> str:
    """``IMAGECRAWL_REDIS_URL``, else Scrapy's (scrapy-redis's) ``REDIS_URL``, else ""."""
    return str(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL") or "").strip()


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    prefix: str
    #: the name every worker of one crawl shares (default: the spider's name)
    crawl: str
    lease_seconds: float
    seed_batch: int

    @classmethod
    def from_settings(cls, settings: Any, spider_name: str = "") -> RedisConfig:
        url = redis_url(settings)
        if not url:
            raise ConfigError("no Redis URL: set IMAGECRAWL_REDIS_URL (or REDIS_URL)")
        lease = tuning(settings).redis_lease_seconds
        if lease <= 0:
            raise ConfigError(f"IMAGECRAWL_TUNING['redis_lease_seconds'] must be > 0, got {lease}")
        return cls(
            url=url,
            prefix=str(settings.get("IMAGECRAWL_REDIS_PREFIX")),
            crawl=str(settings.get("IMAGECRAWL_REDIS_CRAWL") or spider_name),
            lease_seconds=lease,
            seed_batch=max(1, tuning(settings).redis_seed_batch),
        )

    @property
    def keys(self) -> CrawlKeys:
        return CrawlKeys(self.prefix, self.crawl)


@dataclass(frozen=True, slots=True)
class CrawlKeys:
    """Redis keys of one crawl's frontier (shared by all its workers)."""

    prefix: str
    crawl: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:crawl:{self.crawl}"

    @property
    def sites(self) -> str:
        """Sorted set: each site with queued requests, scored by when its shared gate next opens
        (milliseconds, Redis's clock)."""
        return f"{self.base}:sites"

    @property
    def queue_prefix(self) -> str:
        """``<queue_prefix><site>``: the site's own queue (sorted set, scored by -priority)."""
        return f"{self.base}:q:"

    def site_queue(self, site: str) -> str:
        return f"{self.queue_prefix}{site}"

    @property
    def queued(self) -> str:
        """Counter: requests in the site queues and in ``delayed``."""
        return f"{self.base}:queued"

    @property
    def order_seq(self) -> str:
        """Counter: the order of queued requests within their priority (shared by all workers)."""
        return f"{self.base}:order"

    @property
    def legacy_queue(self) -> str:
        """The one queue of all sites of earlier versions (read no more; ``seed --reset`` deletes it)."""
        return f"{self.base}:queue"

    @property
    def lookahead(self) -> str:
        """Counter: the sum over sites of min(queued, 8), the read-ahead's measure (as the local frontier's)."""
        return f"{self.base}:lookahead"

    @property
    def delayed(self) -> str:
        """Sorted set: retries waiting out their backoff, scored by when they are due (ms, wall clock)."""
        return f"{self.base}:delayed"

    @property
    def seen(self) -> str:
        return f"{self.base}:seen"

    @property
    def leases(self) -> str:
        return f"{self.base}:leases"

    @property
    def lease_data(self) -> str:
        return f"{self.base}:lease:data"

    @property
    def lease_score(self) -> str:
        return f"{self.base}:lease:score"

    @property
    def lease_owner(self) -> str:
        return f"{self.base}:lease:owner"

    @property
    def lease_site(self) -> str:
        return f"{self.base}:lease:site"

    @property
    def lease_seq(self) -> str:
        return f"{self.base}:lease:seq"

    @property
    def seeds(self) -> str:
        return f"{self.base}:seeds"

    def all(self) -> list[str]:
        """The crawl's fixed keys (the site queues are found by :attr:`queue_prefix`)."""
        return [
            self.sites,
            self.queued,
            self.lookahead,
            self.delayed,
            self.order_seq,
            self.legacy_queue,
            self.seen,
            self.leases,
            self.lease_data,
            self.lease_score,
            self.lease_owner,
            self.lease_site,
            self.lease_seq,
            self.seeds,
        ]


def alive_prefix(prefix: str) -> str:
    """``<prefix>alive:<owner>`` exists while the worker ``owner`` is alive (its heartbeat renews it)."""
    return f"{prefix}:alive:"


def ledger_prefix(prefix: str, store_url: str) -> str:
    """One dedupe ledger per store, as the SQLite ledger lives in the store's state directory."""
    tag = hashlib.sha256(store_url.rstrip("/").encode()).hexdigest()[:16]
    return f"{prefix}:ledger:{tag}:"
