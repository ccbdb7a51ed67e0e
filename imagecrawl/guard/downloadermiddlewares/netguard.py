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
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, NoReturn, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.settings import BaseSettings
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl import defaults
from imagecrawl.errors import ConfigError
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack; AWS IPv6; Alibaba).
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")  # + Azure's wire server
)
#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64 well-known and local-use)
_NAT64: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
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
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
        "ff00::/8",  # multicast
        "64:ff9b:1::/48",
    )
)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible
    (``::a.b.c.d``), 6to4 (``2002:``) or NAT64 (``64:ff9b::/96``); None for any other address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a short stats key), or None if it is."""
    v4 = embedded_ipv4(ip)
    if v4 is not None:
        return blocked_reason(v4)
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
    enabled: bool = defaults.IMAGECRAWL_NETGUARD_ENABLED
    allowed: tuple[IPNetwork, ...] = ()
    cache_seconds: float = DEFAULTS.netguard_dns_cache_seconds

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> NetGuardConfig:
        return cls(
            enabled=settings.getbool("IMAGECRAWL_NETGUARD_ENABLED"),
            allowed=parse_networks(settings.get("IMAGECRAWL_ALLOWED_NETWORKS")),
            cache_seconds=tuning(settings).netguard_dns_cache_seconds,
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """The reason ``ip`` is refused under this config, or None when it may be fetched. An IPv6
        form of an IPv4 address is judged as that IPv4 address, by the IPv4 allow entries only."""
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            return self.refusal(v4)
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


#: the guard configs of the crawls this process runs; the connect-time resolver (built once per process,
#: see imagecrawl/guard/resolver.py) lets an address through that one of them allows
_PROCESS_CONFIGS: list[NetGuardConfig] = []


def process_configs() -> tuple[NetGuardConfig, ...]:
    return tuple(_PROCESS_CONFIGS)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@functools.lru_cache(maxsize=4096)  # asked for every request: a crawl has few hosts, each parsed once
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
        _PROCESS_CONFIGS.append(config)
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

    def _refuse(self, request: Request, host: str, ip: str, reason: str) -> NoReturn:
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

    def _dns_failed(self, request: Request, host: str, detail: str) -> NoReturn:
        """A name that does not resolve: a DNS failure (counted once, under ``dns_error``), not a refusal
        by the guard's rules; the request is not sent."""
        self.stats.inc_value("imagecrawl/netguard/dns_error")
        logger.warning("DNS lookup failed for %s (%s): %s not requested", host, detail, request.url)
        raise IgnoreRequest(f"dns_error: {host} does not resolve ({detail})")

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
        except (OSError, UnicodeError) as exc:
            # Fail closed: an address the guard never saw is not let through to the downloader's own lookup.
            self._dns_failed(request, host, str(exc))
        if not addresses:
            self._dns_failed(request, host, "no address")
        for address in addresses:
            resolved = literal_ip(address)
            if resolved is None:
                self._refuse(request, host, address, "unparsable")
            reason = self.config.refusal(resolved)
            if reason:
                self._refuse(request, host, address, reason)
