"""HTML galleries described by a profile (``imagecrawl/profiles/*.toml``, see
:mod:`imagecrawl.pages.gallery`): listing pages → detail pages → one image each.

Arguments: ``profile`` (required: a TOML path or a bundled profile name), ``start_url``
(overrides the profile's), ``max_pages`` (listing pages to visit, default unlimited), ``max_items``
(detail pages to request, default unlimited; each gives at most one image).

A profile with ``[listing] newest_first = true`` walks incrementally (docs/spiders.md#incremental-runs):
once the last walk of the same listing completed, paging stops after
``IMAGECRAWL_TUNING['incremental_known_run']`` detail pages in a row whose records the store holds.

``source_id`` is derived from the detail URL (see :func:`imagecrawl.pages.gallery.detail_id`): group 1
of the profile's ``detail.id_pattern``, else the URL's last path segment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import scrapy
from scrapy.crawler import Crawler
from scrapy.http import Response, TextResponse
from scrapy.utils.response import get_base_url

from imagecrawl import browser
from imagecrawl.browser import BrowserConfig
from imagecrawl.errors import ConfigError
from imagecrawl.incremental import Incremental, begin_walk
from imagecrawl.pages import PageError
from imagecrawl.pages import gallery as pages
from imagecrawl.spider import ImageSpider
from imagecrawl.storage.watermarks import Walk
from imagecrawl.values import is_http_url
from spiders._util import PAGE_META, MaxItemsMixin, count_error, optional_int

logger = logging.getLogger(__name__)

#: Detail pages outrank listing pages (and images outrank both): finish started items first.
DETAIL_PRIORITY = 5


class GallerySpider(MaxItemsMixin, ImageSpider):
    name = "gallery"
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "profile": "a site profile: a TOML path or a bundled profile name",
        "start_url": "the first listing page (default: the profile's start_url)",
        "max_pages": "stop after this many listing pages",
        "max_items": "stop after this many images (default: no limit)",
    }

    def __init__(
        self,
        profile: str = "",
        start_url: str | None = None,
        max_pages: str | int | None = None,
        max_items: str | int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not profile:
            raise ConfigError(
                "the gallery spider needs -a profile= (a TOML file describing the site, or a bundled profile: "
                f"{', '.join(pages.bundled_profiles())})"
            )
        self.profile = pages.load_profile(profile)
        url = start_url or self.profile.start_url
        if not url:
            raise ConfigError(f"profile {self.profile.path} has no start_url: pass -a start_url=")
        if not is_http_url(url):
            raise ConfigError(f"-a start_url= must be an http(s) URL, got {url!r}")
        self.start_url = url
        self.max_pages = optional_int(max_pages, "max_pages")
        self.max_items = optional_int(max_items, "max_items")
        self.pages_requested = 0
        self._details: set[str] = set()
        self.incremental: Incremental | None = None
        self.walk: Walk | None = None

    browser: BrowserConfig | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        if spider.profile.render == "browser":
            spider.browser = browser.configure(crawler)  # before the settings freeze
        return spider

    def _meta(self, listing: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = dict(PAGE_META)
        if self.profile.render == "browser":
            assert self.browser is not None, "render = browser needs from_crawler"
            items = self.profile.item_links
            xpath = browser.selector_xpath(items.kind, items.expr)
            meta.update(browser.listing_meta(self.browser, xpath) if listing else browser.page_meta())
        return meta

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.max_pages == 0 or self.max_items == 0:
            return
        if self.profile.newest_first:
            began = await begin_walk(self.crawler, self.profile.source, self.start_url)
            if began is not None:
                self.incremental, self.walk = began
        self.pages_requested += 1
        yield scrapy.Request(self.start_url, callback=self.parse_listing, meta=self._meta(listing=True))

    def seed_request(self, url: str) -> scrapy.Request:
        """A listing page pushed with ``imagecrawl seed`` (distributed crawls)."""
        return scrapy.Request(url, callback=self.parse_listing, meta=self._meta(listing=True))

    def _unhealthy(self, healthy: bool | None, response: Response) -> None:
        if healthy is False:
            count_error(self, "unhealthy", response, "the profile's healthy_marker is missing")

    async def parse_listing(self, response: Response) -> AsyncIterator[scrapy.Request]:
        if not isinstance(response, TextResponse):
            count_error(self, "not_html", response, "listing page is not text")
            return
        stats = self.crawler.stats
        assert stats is not None
        # the base: a rendered page reached by a redirect carries its own URL as <base> (imagecrawl.browser)
        listing = pages.parse_listing(response.text, get_base_url(response), self.profile)
        stats.inc_value("imagecrawl/pages/gallery/listings")
        self._unhealthy(listing.healthy, response)
        if not listing.detail_urls:
            count_error(self, "missing_element", response, "no detail links on the listing page")
        inc, walk = self.incremental, self.walk
        fresh = [url for url in dict.fromkeys(listing.detail_urls) if url not in self._details]
        known: dict[str, bool] = {}
        if inc is not None and walk is not None:
            ids = [(f"{self.profile.source}:{pages.detail_id(url, self.profile)}", None) for url in fresh]
            known = dict(zip(fresh, await inc.known_many(walk, ids), strict=True))
        for url in fresh:
            if not self.take_item():
                break
            self._details.add(url)
            yield self.detail_request(url)
            if inc is not None and walk is not None:
                inc.see(walk, None, known[url])
        if not self.budget_left():
            self.log_max_items_reached(logger, "; not following more listing pages")
            return
        if inc is not None and walk is not None and inc.stop(walk):
            return
        if listing.next_url is None:
            if walk is not None:
                walk.finish()
            return
        if self.max_pages is not None and self.pages_requested >= self.max_pages:
            logger.info("max_pages=%d reached", self.max_pages)
            return
        self.pages_requested += 1
        yield scrapy.Request(listing.next_url, callback=self.parse_listing, meta=self._meta(listing=True))

    def detail_request(self, url: str) -> scrapy.Request:
        """A detail page; in an incremental walk, one that fails keeps the walk's watermark."""
        inc, walk = self.incremental, self.walk
        if inc is None or walk is None:
            return scrapy.Request(url, callback=self.parse_detail, meta=self._meta(), priority=DETAIL_PRIORITY)
        return scrapy.Request(
            url,
            callback=self.parse_detail,
            errback=self.image_failed,
            meta={**self._meta(), **inc.image_meta(walk)},
            priority=DETAIL_PRIORITY,
        )

    def parse_detail(self, response: Response) -> Iterator[scrapy.Request]:
        if not isinstance(response, TextResponse):
            count_error(self, "not_html", response, "detail page is not text")
            return
        try:
            entry, healthy = pages.parse_detail(response.text, response.url, self.profile)
        except PageError as exc:
            count_error(self, exc.kind, response, str(exc))
            return
        self._unhealthy(healthy, response)
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("imagecrawl/pages/gallery/details")
        inc, walk = self.incremental, self.walk
        if inc is None or walk is None:
            yield self.image_request(entry.url, entry.hints)
        else:
            yield self.image_request(entry.url, entry.hints, meta=inc.image_meta(walk), errback=self.image_failed)
