"""The network guard at connect time: Scrapy's DNS resolver (``TWISTED_DNS_RESOLVER``), refusing every
address the guard refuses.

The guard middleware checks a request's host when the request passes it; the downloader resolves the
name again when it connects, which can be much later (a request waits at the pacing gate through a
Retry-After or a ban). This resolver applies the same rule (:meth:`NetGuardConfig.refusal`) to the
address the connection is actually made to, so a DNS answer that changed in between (DNS rebinding)
cannot reach a refused network: the lookup fails with ``DNSLookupError`` instead. It is built by
Scrapy once per process, from the process's settings (``IMAGECRAWL_NETGUARD_ENABLED``,
``IMAGECRAWL_ALLOWED_NETWORKS``), plus the guard configs of the crawls the process runs (an address
one of them allows, by its own settings, is let through). Pages rendered in the browser resolve in
Chromium, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Self

from scrapy.resolver import CachingThreadedResolver
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IResolverSimple
from zope.interface import implementer

from imagecrawl.guard.downloadermiddlewares.netguard import NetGuardConfig, literal_ip, process_configs

logger = logging.getLogger(__name__)


@implementer(IResolverSimple)
class GuardedResolver(CachingThreadedResolver):
    def __init__(self, reactor: Any, cache_size: int, timeout: float, config: NetGuardConfig) -> None:
        super().__init__(reactor, cache_size, timeout)
        self.config = config

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> Self:
        # built from the process's settings, before any add-on ran: read them with the add-on's defaults
        from imagecrawl.addon import with_defaults

        settings = with_defaults(crawler.settings)
        cache_size = settings.getint("DNSCACHE_SIZE") if settings.getbool("DNSCACHE_ENABLED") else 0
        return cls(reactor, cache_size, settings.getfloat("DNS_TIMEOUT"), NetGuardConfig.from_settings(settings))

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> Deferred[str]:
        d = super().getHostByName(name, timeout)
        if self.config.enabled:
            d.addCallback(self._check, name)
        return d

    def _check(self, address: str, name: str) -> str:
        ip = literal_ip(address)
        reason = self.config.refusal(ip) if ip is not None else "unparsable"
        # a crawl of this process whose own settings allow the address (or switch the guard off)
        if reason and ip is not None and any(not c.enabled or c.refusal(ip) is None for c in process_configs()):
            reason = None
        if reason:
            logger.warning("Refused to connect: %s resolves to %s (%s) at connect time", name, address, reason)
            raise DNSLookupError(f"network guard: {name} is {address} ({reason}) at connect time")
        return address
