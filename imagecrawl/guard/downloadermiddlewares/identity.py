"""An honest identity: no crawl of someone else's site without a way to reach the operator.

The add-on builds ``USER_AGENT`` as ``imagecrawl/<version> (+<contact>)`` from
``IMAGECRAWL_CONTACT``. This component refuses a crawl of any non-loopback host while that contact
is missing or is neither an http(s) URL nor an e-mail address:

* at start, when a spider's ``start_urls`` name a non-loopback host: an ERROR that says why, the
  spider is closed as soon as it opens (reason ``imagecrawl_no_contact``) and ``scrapy crawl``
  exits 2; nothing is sent;
* a start request (``meta["is_start_request"]``, e.g. from a custom ``start()``) to such a host: the
  same, at run time: dropped before DNS or any connection, spider closed with reason
  ``imagecrawl_no_contact``, ``imagecrawl/exit_code`` = 2 (``scrapy crawl`` exits with it);
* any other request to such a host (a link or redirect found while crawling a loopback site):
  dropped and counted (``imagecrawl/identity/refused``), one WARNING per host; the crawl goes on, so
  a hostile page cannot end it.

"Loopback" is decided on the host name alone, without DNS, so the check never touches the
network: ``localhost``, ``*.localhost`` and loopback IP literals (127.0.0.0/8, ::1).
``IMAGECRAWL_ALLOWED_NETWORKS`` does not exempt a host from this check: a private network you are
allowed to crawl is still someone's site.

It is a downloader middleware (first in the chain) so every request passes it. A request to an IP
literal that the network guard refuses anyway (a redirect to 169.254.169.254) is left to the guard:
it is never sent, so it needs no identity, and it must not end a loopback crawl.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Final, Self
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.settings import BaseSettings
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl.exitcodes import USAGE, set_exit_code
from imagecrawl.guard.downloadermiddlewares.netguard import NetGuardConfig, literal_ip

logger = logging.getLogger(__name__)

_EMAIL_RE: Final = re.compile(r"^(mailto:)?[^@\s<>()]+@[^@\s<>()]+\.[^@\s<>()]+$", re.IGNORECASE)
CLOSE_REASON: Final = "imagecrawl_no_contact"
EXIT_CODE: Final = USAGE


def valid_contact(contact: str) -> bool:
    """An http(s) URL with a host, or an e-mail address (optionally ``mailto:``)."""
    contact = contact.strip()
    if not contact or any(c in contact for c in "\r\n()"):
        return False
    if _EMAIL_RE.match(contact):
        return True
    parts = urlsplit(contact)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@functools.lru_cache(maxsize=4096)  # asked for every request: a crawl has few hosts, each parsed once
def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal_message(host: str, contact: str) -> str:
    why = "is not set" if not contact.strip() else f"({contact!r}) is neither an http(s) URL nor an e-mail"
    return (
        f"Refusing to crawl {host}: IMAGECRAWL_CONTACT {why}. imagecrawl identifies itself as "
        "'imagecrawl/<version> (+<contact>)' so that site operators can reach whoever runs the crawl; "
        "set it, e.g. -s IMAGECRAWL_CONTACT=https://example.org/bot or -s IMAGECRAWL_CONTACT=ops@example.org "
        "(only loopback hosts may be crawled without one)."
    )


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    contact: str = ""
    user_agent: str = ""

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> IdentityConfig:
        return cls(
            contact=str(str(settings.get("IMAGECRAWL_CONTACT"))),
            user_agent=str(settings.get("USER_AGENT") or ""),
        )

    @property
    def has_contact(self) -> bool:
        return valid_contact(self.contact)


class IdentityGuard:
    def __init__(self, crawler: Crawler, config: IdentityConfig) -> None:
        assert crawler.stats is not None
        self.crawler = crawler
        self.stats = crawler.stats
        self.config = config
        self._closing = False
        self._warned: set[str] = set()
        netguard = NetGuardConfig.from_settings(crawler.settings)
        self.netguard: NetGuardConfig | None = netguard if netguard.enabled else None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        if not settings.getbool("IMAGECRAWL_IDENTITY_ENABLED"):
            logger.warning("IMAGECRAWL_IDENTITY_ENABLED is off: crawling without an operator contact")
            raise NotConfigured("IMAGECRAWL_IDENTITY_ENABLED is off")
        config = IdentityConfig.from_settings(settings)
        if not settings.getbool("ROBOTSTXT_OBEY"):
            logger.warning("ROBOTSTXT_OBEY is off: robots.txt is NOT honoured (only for sites you own)")
        guard = cls(crawler, config)
        if not config.has_contact:
            for url in getattr(crawler.spider, "start_urls", None) or ():
                host = urlsplit(str(url)).hostname or ""
                if host and not is_loopback_host(host):
                    # Refuse at start: the spider is closed as soon as it opens, and any request
                    # that would still be scheduled is dropped by process_request.
                    guard._refuse(host)
                    crawler.signals.connect(guard._close_at_open, signal=signals.spider_opened)
                    break
        logger.info("Crawling as User-Agent: %s", config.user_agent)
        return guard

    def _refuse(self, host: str) -> None:
        if self._closing:
            return
        self._closing = True
        logger.error(refusal_message(host, self.config.contact))
        set_exit_code(self.stats, EXIT_CODE)

    def _close_at_open(self) -> None:
        engine = self.crawler.engine
        assert engine is not None
        deferred_from_coro(engine.close_spider_async(reason=CLOSE_REASON))

    def process_request(self, request: Request) -> None:
        if self.config.has_contact:
            return
        host = urlparse_cached(request).hostname or ""
        if not host or is_loopback_host(host) or urlparse_cached(request).scheme not in ("http", "https"):
            return
        if self.netguard is not None:
            ip = literal_ip(host)
            if ip is not None and self.netguard.refusal(ip) is not None:
                return  # never sent: the network guard refuses (and counts) it next
        self.stats.inc_value("imagecrawl/identity/refused")
        if request.meta.get("is_start_request") and not request.meta.get("redirect_times"):
            # The crawl itself targets a non-loopback site: refuse to run it.
            if not self._closing:
                self._refuse(host)
                # Not awaited: closing waits for in-flight requests, this one included.
                self._close_at_open()
        elif host not in self._warned and len(self._warned) < 100:
            # A link or redirect of a loopback crawl to another host: dropped, the crawl goes on
            # (a hostile page must not be able to end it).
            self._warned.add(host)
            logger.warning("Dropped %s: %s", request.url, refusal_message(host, self.config.contact))
        raise IgnoreRequest(f"no IMAGECRAWL_CONTACT for non-loopback host {host}")
