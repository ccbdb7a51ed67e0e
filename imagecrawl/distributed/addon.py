"""Turns a crawl into one worker of a distributed crawl when a Redis URL is set. Nothing otherwise."""

from __future__ import annotations

import logging
import secrets

from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings

from imagecrawl.distributed.config import DEFAULT_PREFIX, redis_url

logger = logging.getLogger(__name__)

SCHEDULER = "imagecrawl.distributed.frontier.RedisScheduler"
DUPEFILTER = "imagecrawl.distributed.frontier.RedisDupeFilter"


class DistributedAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        url = redis_url(settings)
        if not url:
            return
        if settings.getbool("IMAGECRAWL_REDIS_FRONTIER_ENABLED", True):
            settings.set("SCHEDULER", SCHEDULER, priority="addon")
            settings.set("DUPEFILTER_CLASS", DUPEFILTER, priority="addon")
            _set_default(settings, "IMAGECRAWL_SHARD_FLUSH_ON_IDLE", True)
        if not settings.get("IMAGECRAWL_AUTHOR_SALT"):
            # Every worker must hash an author the same way: one salt per Redis prefix, made once.
            import redis

            prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX") or DEFAULT_PREFIX)
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
