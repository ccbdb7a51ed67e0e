"""What this project itself sets. Everything else comes from the imagecrawl add-on (:class:`imagecrawl.Addon`,
defaults in imagecrawl/defaults.py), as it would in any Scrapy project that lists it in ``ADDONS``."""

from __future__ import annotations

# `scrapy crawl -O out.parquet` checks the format against the project's FEED_EXPORTERS while it parses its
# options, before any add-on runs: the project names the add-on's exporters here (one definition, in defaults).
# The DNS resolver is installed for the whole process from the project's settings, before any add-on runs:
# the network guard at connect time (DNS rebinding) has to be named here too.
from imagecrawl.defaults import (
    FEED_EXPORTERS,  # noqa: F401
    TWISTED_DNS_RESOLVER,  # noqa: F401
)

BOT_NAME = "imagecrawl"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
COMMANDS_MODULE = "imagecrawl.commands"

ADDONS = {
    # pacing, bans, opt-outs, the network guard, dedupe, Parquet shards and their defaults (docs/settings.md)
    "imagecrawl.Addon": 100,
    # With IMAGECRAWL_REDIS_URL (or REDIS_URL): shared frontier, dedupe ledger and rate gate (docs/distributed.md)
    "imagecrawl.distributed.addon.DistributedAddon": 110,
}
