"""Network guard: never fetch from loopback, private, link-local, CGNAT, multicast or cloud
metadata addresses unless ``IMAGECRAWL_ALLOWED_NETWORKS`` allows the range.

The check runs in ``process_request`` on the *resolved* addresses of the request's host (every
address the name resolves to must be allowed: the connector may pick any of them), so a redirect to
``http://169.254.169.254/`` or to a name that resolves to ``10.0.0.1`` is refused before any
connection. Redirects are covered because Scrapy re-schedules them as new requests through the
whole downloader middleware chain. Resolution uses the event loop's ``getaddrinfo`` (through a
small per-crawl cache) and is injectable for tests (``NetGuardMiddleware(resolver=...)``).

Known limit: the downloader resolves the name again when it connects; a DNS server that answers
differently within seconds (DNS rebinding) could slip past. Proxies are not checked (the proxy is
the user's own choice).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.settings import BaseSettings
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl.errors import ConfigError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack; AWS IPv6; Alibaba).
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
#: Explicit ranges, on top of what ``ipaddress`` calls non-global.
_BLOCKED_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local, includes fd00:ec2::254
        "fe80::/10",
        "ff00::/8",  # multicast
        "64:ff9b:1::/48",
    )
)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a short stats key), or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return blocked_reason(mapped)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link_local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "cgnat"
    if ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if ip.is_private or any(ip in net for net in _BLOCKED_NETWORKS) or not ip.is_global:
        return "private"
    return None


def parse_networks(value: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """``"127.0.0.0/8, ::1"`` or a list → networks; raises ValueError naming the bad entry."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[IPNetwork] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"IMAGECRAWL_ALLOWED_NETWORKS: {item!r} is not a network ({exc})") from exc
    return tuple(out)


@dataclass(frozen=True, slots=True)
class NetGuardConfig:
    enabled: bool = True
    allowed: tuple[IPNetwork, ...] = ()
    cache_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> NetGuardConfig:
        return cls(
            enabled=settings.getbool("IMAGECRAWL_NETGUARD_ENABLED"),
            allowed=parse_networks(settings.get("IMAGECRAWL_ALLOWED_NETWORKS")),
            cache_seconds=settings.getfloat("IMAGECRAWL_NETGUARD_DNS_CACHE_SECONDS"),
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """The reason ``ip`` is refused under this config, or None when it may be fetched."""
        reason = blocked_reason(ip)
        if reason is None:
            return None
        for net in self.allowed:
            if ip.version == net.version and ip in net:
                # A metadata endpoint needs an allow entry of its own, not a broad range.
                if reason == "metadata" and net.num_addresses > 1:
                    continue
                return None
        return reason


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class NetGuardMiddleware:
    def __init__(self, crawler: Crawler, config: NetGuardConfig, resolver: Resolver | None = None) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.config = config
        self.resolver: Resolver = resolver or system_resolver
        self._cache: dict[str, tuple[float, list[str]]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = NetGuardConfig.from_settings(crawler.settings)
        if not config.enabled:
            logger.warning(
                "IMAGECRAWL_NETGUARD_ENABLED is off: requests to private, loopback and cloud "
                "metadata addresses are NOT refused"
            )
            raise NotConfigured("IMAGECRAWL_NETGUARD_ENABLED is off")
        if config.allowed:
            logger.info("Network guard allows %s", ", ".join(map(str, config.allowed)))
        return cls(crawler, config)

    async def _resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        hit = self._cache.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        addresses = await self.resolver(host, port)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[host] = (now + self.config.cache_seconds, addresses)
        return addresses

    def _refuse(self, request: Request, host: str, ip: str, reason: str) -> None:
        self.stats.inc_value(f"imagecrawl/netguard/refused/{reason}")
        self.stats.inc_value("imagecrawl/netguard/refused")
        logger.warning(
            "Refused %s: %s resolves to %s (%s); allow the range with IMAGECRAWL_ALLOWED_NETWORKS",
            request.url,
            host,
            ip,
            reason,
        )
        raise IgnoreRequest(f"network guard: {host} is {ip} ({reason})")

    async def process_request(self, request: Request) -> None:
        parts = urlparse_cached(request)
        if parts.scheme not in ("http", "https"):
            return
        host = parts.hostname or ""
        if not host:
            return
        ip = literal_ip(host)
        if ip is not None:
            reason = self.config.refusal(ip)
            if reason:
                self._refuse(request, host, str(ip), reason)
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host.rstrip(".").lower(), port)
        except OSError as exc:
            # The download would fail the same way; let the downloader report it.
            self.stats.inc_value("imagecrawl/netguard/dns_error")
            logger.debug("Network guard could not resolve %s: %s", host, exc)
            return
        for address in addresses:
            resolved = literal_ip(address)
            if resolved is None:
                continue
            reason = self.config.refusal(resolved)
            if reason:
                self._refuse(request, host, address, reason)
