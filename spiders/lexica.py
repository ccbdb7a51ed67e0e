"""Lexica: ``/api/v1/search?q=<query>``. Arguments: ``q`` (required), ``api_url`` (default
``https://lexica.art``), ``max_items`` (default unlimited). The real API answers one page (up to 50
images) per query; a ``nextCursor`` in the answer is followed when a server sends one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response

from imagecrawl.pages import PageError, is_http_url
from imagecrawl.pages import lexica as pages
from imagecrawl.pages.civitai import with_cursor
from imagecrawl.spider import ImageSpider
from spiders._util import PAGE_META, count_error, count_errors, optional_int

logger = logging.getLogger(__name__)


class LexicaSpider(ImageSpider):
    name = "lexica"

    def __init__(
        self,
        q: str | None = None,
        api_url: str = pages.DEFAULT_API_URL,
        max_items: str | int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if q is None or not str(q).strip():
            raise ValueError("the lexica spider needs a search query: -a q='your words'")
        if not is_http_url(api_url):
            raise ValueError(f"-a api_url= must be an http(s) URL, got {api_url!r}")
        self.q = str(q).strip()
        self.api_url = api_url.rstrip("/")
        self.max_items = optional_int(max_items, "max_items")
        self.requested = 0
        self._cursors: set[str] = set()

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.max_items == 0:
            return
        url = pages.search_url(self.api_url, self.q)
        yield scrapy.Request(url, callback=self.parse_page, meta=dict(PAGE_META))

    def parse_page(self, response: Response) -> Iterator[scrapy.Request]:
        stats = self.crawler.stats
        assert stats is not None
        try:
            page = pages.parse_search(response.body, self.api_url)
        except PageError as exc:
            count_error(self, exc.kind, response, str(exc))
            return
        stats.inc_value("imagecrawl/pages/lexica/pages")
        count_errors(self, page.errors, response)
        for entry in page.entries:
            if self.max_items is not None and self.requested >= self.max_items:
                logger.info("max_items=%d reached", self.max_items)
                return
            self.requested += 1
            yield self.image_request(entry.url, entry.hints)
        if page.next_cursor is not None:
            if page.next_cursor in self._cursors:
                count_error(self, "repeated_cursor", response, f"cursor {page.next_cursor!r} seen before")
                return
            self._cursors.add(page.next_cursor)
            url = with_cursor(response.url, page.next_cursor)
            yield scrapy.Request(url, callback=self.parse_page, meta=dict(PAGE_META))
