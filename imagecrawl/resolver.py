"""The old import path of the network guard's DNS resolver, kept so that a project whose settings name
``TWISTED_DNS_RESOLVER = "imagecrawl.resolver.GuardedResolver"`` keeps working: Scrapy installs the resolver
before any add-on runs, so the add-on cannot stop the crawl with a one-line error first. It logs a WARNING
naming the new path, :class:`imagecrawl.guard.resolver.GuardedResolver` (CHANGELOG.md)."""

from __future__ import annotations

from imagecrawl.guard.resolver import GuardedResolver

__all__ = ["GuardedResolver"]
