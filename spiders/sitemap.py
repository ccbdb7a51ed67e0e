"""Sites described by their sitemaps (:mod:`imagecrawl.pages.sitemap`): robots.txt ``Sitemap:`` lines
(else ``/sitemap.xml``) → sitemap indexes → sitemaps → images, or pages for a gallery profile.

Arguments: ``start_url`` (required: a site root, its robots.txt, or a sitemap/sitemap index URL),
``profile`` (a gallery profile, see :mod:`spiders.gallery`: every page URL of the sitemaps is read as
one of its detail pages; without it only the sitemaps' own ``image:image`` entries are taken),
``source`` (the dataset ``source`` of image-sitemap records, default ``sitemap``; a profile names its
own), ``max_items`` (images / detail pages to request, default unlimited).

Bounds (settings ``IMAGECRAWL_SITEMAP_*``): download size, decompressed size of ``.xml.gz`` files,
entries per file, index depth, sitemap files per crawl; an index that leads back to a sitemap already
seen is cut (``sitemap_loop``). A sitemap that cannot be used is a counted, logged skip
(``imagecrawl/pages/errors/<kind>``). Every request is an ordinary scheduled one: the network guard,
robots.txt, opt-outs and pacing apply to it as to any other spider's.

Incremental (docs/spiders.md#incremental-runs): the watermark of ``sitemap-<source>:<start_url>`` is
the newest page ``lastmod`` of the last complete walk; sitemaps of an index and pages whose ``lastmod``
is at or below it are not fetched again. The walk completes when every sitemap was read.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import scrapy
from scrapy.settings import BaseSettings
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.statscollectors import StatsCollector
from scrapy.utils._compression import _DecompressionMaxSizeExceeded
from scrapy.utils.gz import gunzip
from scrapy.utils.sitemap import sitemap_urls_from_robots
from twisted.python.failure import Failure

from imagecrawl import meta
from imagecrawl.errors import ConfigError
from imagecrawl.incremental import begin_walk
from imagecrawl.pages import PageError
from imagecrawl.pages import sitemap as sitemaps
from imagecrawl.storage.watermarks import normalize_position
from imagecrawl.tuning import tuning
from spiders._util import PAGE_META, count_error, count_errors
from spiders.gallery import GallerySpider

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "sitemap"


@dataclass(frozen=True, slots=True)
class SitemapConfig:
    max_bytes: int
    max_decompressed_bytes: int
    max_urls: int
    max_depth: int
    max_sitemaps: int

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        return cls(
            max_bytes=tuning(settings).sitemap_max_bytes,
            max_decompressed_bytes=tuning(settings).sitemap_max_decompressed_bytes,
            max_urls=max(1, tuning(settings).sitemap_max_urls),
            max_depth=max(0, tuning(settings).sitemap_max_depth),
            max_sitemaps=max(1, tuning(settings).sitemap_max_sitemaps),
        )


def is_discovery_url(url: str) -> bool:
    """A site root or its robots.txt: sitemaps are looked up there, not read from the URL itself."""
    path = urlsplit(url).path
    return path in ("", "/") or path.endswith("/robots.txt")


class SitemapSpider(GallerySpider):
    name = "sitemap"
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "start_url": "a site root (robots.txt Sitemap: lines, else /sitemap.xml) or a sitemap URL (required)",
        "profile": "a gallery profile: the sitemap's pages are read as its detail pages",
        "source": "the source name of image-sitemap records (default: sitemap)",
        "max_items": "stop after this many images (default: no limit)",
    }

    def __init__(
        self,
        start_url: str | None = None,
        profile: str | None = None,
        source: str | None = None,
        max_items: str | int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if not start_url:
            raise ConfigError("the sitemap spider needs a site or sitemap URL: -a start_url=https://example.com/")
        # Without a profile the gallery machinery is idle: the bundled one only fills the attributes.
        super().__init__(profile or "sandbox", start_url, None, max_items, *args, **kwargs)
        self.use_profile = bool(profile)
        if source and not re.fullmatch(r"[a-z0-9_.-]+", source):
            raise ConfigError(f"-a source= must be lower-case [a-z0-9_.-], got {source!r}")
        if source and self.use_profile:
            raise ConfigError("-a source= names image-sitemap records; with -a profile= the profile names it")
        self.source = source or DEFAULT_SOURCE
        self._sitemaps: set[str] = set()
        self._config: SitemapConfig | None = None
        self._outstanding = 0  # sitemap (and robots.txt) requests not answered yet

    @property
    def config(self) -> SitemapConfig:
        if self._config is None:
            self._config = SitemapConfig.from_settings(self.crawler.settings)
        return self._config

    @property
    def stats(self) -> StatsCollector:
        stats = self.crawler.stats
        assert stats is not None
        return stats

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.max_items == 0:
            return
        source = self.profile.source if self.use_profile else self.source
        began = await begin_walk(self.crawler, f"sitemap-{source}", self.start_url)
        if began is not None:
            self.incremental, self.walk = began
        if is_discovery_url(self.start_url):
            self._outstanding += 1
            robots = urljoin(self.start_url, "/robots.txt")
            yield scrapy.Request(robots, callback=self.parse_robots, errback=self.robots_failed, meta=dict(PAGE_META))
            return
        request = self.sitemap_request(self.start_url, 0)
        if request is not None:
            yield request

    def seed_request(self, url: str) -> scrapy.Request:
        """A sitemap pushed with ``imagecrawl seed`` (distributed crawls)."""
        request = self.sitemap_request(url, 0)
        assert request is not None, "the first sitemap of a crawl is always requested"
        return request

    def sitemap_request(self, url: str, depth: int, origin: str = "") -> scrapy.Request | None:
        """The request for one sitemap file, or None (counted) when it was seen before or the budget is spent."""
        if url in self._sitemaps:
            count_error(self, "sitemap_loop", origin or url, f"sitemap {url} was requested before")
            return None
        if len(self._sitemaps) >= self.config.max_sitemaps:
            count_error(
                self, "sitemap_limit", origin or url, f"IMAGECRAWL_TUNING['sitemap_max_sitemaps'] reached: {url}"
            )
            return None
        self._sitemaps.add(url)
        self._outstanding += 1
        return scrapy.Request(
            url,
            callback=self.parse_sitemap,
            errback=self.sitemap_failed,
            cb_kwargs={"depth": depth},
            meta={**PAGE_META, "download_maxsize": self.config.max_bytes},
        )

    def _fallback(self, url: str) -> Iterator[scrapy.Request]:
        request = self.sitemap_request(urljoin(url, "/sitemap.xml"), 0)
        if request is not None:
            yield request
        self._answered()

    def _answered(self) -> None:
        """One sitemap (or robots.txt) request is done; the walk completes with the last one."""
        self._outstanding -= 1
        if self._outstanding == 0 and self.walk is not None and self.budget_left():
            self.walk.finish()

    def parse_robots(self, response: scrapy.http.Response) -> Iterator[scrapy.Request]:
        found = list(dict.fromkeys(sitemap_urls_from_robots(response.body, base_url=response.url)))
        self.stats.inc_value("imagecrawl/pages/sitemap/robots_sitemaps", len(found))
        if not found:
            logger.info("%s names no sitemap; trying /sitemap.xml", response.url)
            yield from self._fallback(response.url)
            return
        for url in found:
            request = self.sitemap_request(url, 0, response.url)
            if request is not None:
                yield request
        self._answered()

    def robots_failed(self, failure: Failure) -> Iterator[scrapy.Request]:
        request = failure.request  # type: ignore[attr-defined]
        logger.info("No robots.txt at %s (%s); trying /sitemap.xml", request.url, failure.value)
        yield from self._fallback(request.url)

    def sitemap_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        # a sitemap over IMAGECRAWL_TUNING['sitemap_max_bytes'] stays so: only other download errors are transient
        transient = request.meta.get(meta.DOWNLOAD_ERROR) not in (None, "maxsize")
        if isinstance(failure.value, HttpError):
            status = failure.value.response.status
            transient = status >= 500 or status == 429
            count_error(self, "sitemap_unavailable", request.url, f"HTTP {status}")
        # Download errors, the network guard, robots.txt and opt-outs counted and logged their own skips.
        if transient and self.walk is not None:
            self.walk.failed = True  # read again next time: the watermark stays
        self._answered()

    def _body(self, response: scrapy.http.Response) -> bytes | None:
        body = response.body
        if not sitemaps.is_gzip(body):
            return body
        try:
            return gunzip(body, max_size=self.config.max_decompressed_bytes)
        except _DecompressionMaxSizeExceeded:
            count_error(
                self,
                "sitemap_too_large",
                response,
                f"decompresses past {self.config.max_decompressed_bytes} bytes "
                "(IMAGECRAWL_TUNING['sitemap_max_decompressed_bytes'])",
            )
        except (OSError, EOFError, struct.error) as exc:
            count_error(self, "bad_sitemap", response, f"broken gzip: {exc}")
        return None

    def parse_sitemap(self, response: scrapy.http.Response, depth: int) -> Iterator[scrapy.Request]:
        yield from self._read_sitemap(response, depth)
        self._answered()

    def _read_sitemap(self, response: scrapy.http.Response, depth: int) -> Iterator[scrapy.Request]:
        body = self._body(response)
        if body is None:
            return
        try:
            parsed = sitemaps.parse_sitemap(body, response.url, self.config.max_urls)
        except PageError as exc:
            count_error(self, exc.kind, response, str(exc))
            return
        count_errors(self, parsed.errors, response)
        if parsed.truncated:
            self.stats.inc_value("imagecrawl/pages/sitemap/truncated")
            logger.warning("%s has more than %d entries; the rest are left", response.url, self.config.max_urls)
        if parsed.kind == "sitemapindex":
            self.stats.inc_value("imagecrawl/pages/sitemap/indexes")
            yield from self._follow_index(parsed, response, depth)
            return
        self.stats.inc_value("imagecrawl/pages/sitemap/sitemaps")
        yield from self._pages(parsed, response)

    def _follow_index(
        self, parsed: sitemaps.ParsedSitemap, response: scrapy.http.Response, depth: int
    ) -> Iterator[scrapy.Request]:
        if parsed.sitemaps and depth >= self.config.max_depth:
            count_error(
                self, "sitemap_depth", response, f"index deeper than {depth} (IMAGECRAWL_TUNING['sitemap_max_depth'])"
            )
            return
        walk = self.walk
        for ref in parsed.sitemaps:
            if walk is not None and not walk.full and walk.below(normalize_position(ref.lastmod)):
                self.stats.inc_value("imagecrawl/incremental/skipped_sitemaps")
                continue
            request = self.sitemap_request(ref.loc, depth + 1, response.url)
            if request is not None:
                yield request

    def _pages(self, parsed: sitemaps.ParsedSitemap, response: scrapy.http.Response) -> Iterator[scrapy.Request]:
        inc, walk = self.incremental, self.walk
        for page in parsed.pages:
            self.stats.inc_value("imagecrawl/pages/sitemap/pages")
            if inc is not None and walk is not None:
                position = normalize_position(page.lastmod)
                if not walk.full and walk.below(position):
                    self.stats.inc_value("imagecrawl/incremental/skipped_pages")
                    continue
                walk.see(position, known=False)
            if self.use_profile:
                if page.loc in self._details:
                    continue
                if not self.take_item():
                    break
                self._details.add(page.loc)
                yield self.detail_request(page.loc)
                continue
            for entry in sitemaps.image_entries(page, self.source):
                if not self.take_item():
                    break
                self.stats.inc_value("imagecrawl/pages/sitemap/images")
                if inc is None or walk is None:
                    yield self.image_request(entry.url, entry.hints)
                else:
                    yield self.image_request(
                        entry.url, entry.hints, meta=inc.image_meta(walk), errback=self.image_failed
                    )
            if not self.budget_left():
                break
        if not self.budget_left():
            self.log_max_items_reached(logger, "; not reading more sitemap entries")
