"""Turns a crawl into one worker of a distributed crawl when a Redis URL is set. Nothing otherwise."""

from __future__ import annotations

import importlib.util
import logging
import secrets

from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings
from scrapy.utils.misc import load_object

from imagecrawl.distributed.config import redis_url
from imagecrawl.errors import ConfigError, missing_extra
from imagecrawl.storage.context import check_dedupe_backend
from imagecrawl.tuning import SETTING as TUNING
from imagecrawl.tuning import overrides, tuning

logger = logging.getLogger(__name__)

SCHEDULER = "imagecrawl.distributed.scheduler.RedisScheduler"
DUPEFILTER = "imagecrawl.distributed.scheduler.RedisDupeFilter"
#: what the add-on plugs into the core (imagecrawl.storage.context, the pacing middleware, the browser)
LEDGER_FACTORY = "imagecrawl.distributed.ledger.open_worker_ledger"
GATE_FACTORY = "imagecrawl.distributed.gate.shared_gate"
LIMITER_FACTORY = "imagecrawl.distributed.ratelimit.limiter_for"
#: forgotten rows (docs/forget.md): the store's tombstones, shared and refreshed through Redis
TOMBSTONES_FACTORY = "imagecrawl.distributed.tombstones.SharedTombstones"
#: the shared per-site rate gate for crawls without the pacing middleware, closest to the network
GLOBAL_RATE_MIDDLEWARE = "imagecrawl.distributed.downloadermiddlewares.GlobalRateMiddleware"
#: binds items to the lease of the request they came from, closest to the engine
LEASE_MIDDLEWARE = "imagecrawl.distributed.spidermiddlewares.LeaseSpiderMiddleware"


class DistributedAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        url = redis_url(settings)
        backend = check_dedupe_backend(settings)
        if not url:
            if backend == "redis":
                raise ConfigError("IMAGECRAWL_TUNING['dedupe_backend']=redis needs IMAGECRAWL_REDIS_URL (or REDIS_URL)")
            return
        for module, package in (("redis", "redis"), ("scrapy_redis", "scrapy-redis")):
            if importlib.util.find_spec(module) is None:
                raise missing_extra("IMAGECRAWL_REDIS_URL (or REDIS_URL)", "redis", package)
        settings.set_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", load_object(GLOBAL_RATE_MIDDLEWARE), 960)
        settings.set_in_component_priority_dict("SPIDER_MIDDLEWARES", load_object(LEASE_MIDDLEWARE), 5)
        if backend in ("auto", "redis"):
            _set_default(settings, "IMAGECRAWL_LEDGER_FACTORY", LEDGER_FACTORY)
        _set_default(settings, "IMAGECRAWL_TOMBSTONES_FACTORY", TOMBSTONES_FACTORY)
        if tuning(settings).redis_rate_enabled:
            _set_default(settings, "IMAGECRAWL_SHARED_LIMITER_FACTORY", LIMITER_FACTORY)
            _set_default(settings, "IMAGECRAWL_PACING_GATE_FACTORY", GATE_FACTORY)
        if tuning(settings).redis_frontier_enabled:
            _set_default(settings, "SCHEDULER", SCHEDULER)  # replaces the project's site-aware frontier
            settings.set("DUPEFILTER_CLASS", DUPEFILTER, priority="addon")
            _set_default_tuning(settings, "shard_flush_on_idle", True)
        if not settings.get("IMAGECRAWL_AUTHOR_SALT"):
            # Every worker must hash an author the same way: one salt per Redis prefix, made once.
            import redis

            prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX"))
            client = redis.Redis.from_url(url)
            try:
                key = f"{prefix}:author_salt"
                client.set(key, secrets.token_hex(32), nx=True)
                salt = client.get(key)
            finally:
                client.close()
            if salt:
                text = salt.decode() if isinstance(salt, bytes) else str(salt)
                settings.set(
                    "IMAGECRAWL_AUTHOR_SALT", text, priority=settings.getpriority("IMAGECRAWL_AUTHOR_SALT") or 15
                )


def _set_default(settings: BaseSettings, name: str, value: object) -> None:
    """Replace the project's default (settings.py), never a value given on the command line or by a spider."""
    current = settings.getpriority(name) or 0
    if current > SETTINGS_PRIORITIES["project"]:
        return
    settings.set(name, value, priority=max(current, SETTINGS_PRIORITIES["addon"]))


def _set_default_tuning(settings: BaseSettings, key: str, value: object) -> None:
    """Add ``key`` to ``IMAGECRAWL_TUNING`` unless the user gave it (their other keys stay)."""
    given = overrides(settings)
    if key in given:
        return
    priority = max(settings.getpriority(TUNING) or 0, SETTINGS_PRIORITIES["addon"])
    settings.set(TUNING, {**given, key: value}, priority=priority)
