"""The imagecrawl add-on: settings that depend on other settings, fixed before the crawl starts."""

from __future__ import annotations

import logging

from scrapy.settings import BaseSettings

from imagecrawl import UA_TOKEN, __version__, redact
from imagecrawl.settings_check import check_settings

logger = logging.getLogger(__name__)


def user_agent(contact: str) -> str:
    """The honest User-Agent: product token, version and a way to reach the operator."""
    contact = contact.strip()
    return f"{UA_TOKEN}/{__version__} (+{contact})" if contact else f"{UA_TOKEN}/{__version__}"


def configured_secrets(settings: BaseSettings) -> set[str]:
    """Credential-like values the user set (Scrapy's own defaults, such as FTP_PASSWORD, are no secret)."""
    return redact.secret_values((name, value) for name, value in settings.items() if settings.getpriority(name))


class ImagecrawlAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        # Before Scrapy logs its "Overridden settings" line: secrets never reach a log line.
        redact.install(configured_secrets(settings))
        check_settings(settings)  # unknown IMAGECRAWL_* names, values that do not parse: one line, exit 2
        if settings.getpriority("USER_AGENT") in (None, 0, 10):
            # Only replace Scrapy's own default, never a value the user set.
            settings.set("USER_AGENT", user_agent(settings.get("IMAGECRAWL_CONTACT")), priority="addon")
        if settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            # The pacing gate is the per-site concurrency limit: Scrapy's download slot must not cap (and
            # delay) what the gate let out, nor the policy fetch (robots.txt) its requests wait for.
            wanted = settings.getint("IMAGECRAWL_MAX_CONCURRENCY_PER_SITE") + 1
            if settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") < wanted:
                priority = settings.getpriority("CONCURRENT_REQUESTS_PER_DOMAIN") or 0
                settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", wanted, priority=max(priority, 15))
