"""Lexica: ``/api/v1/search?q=<query>``. Arguments: ``q`` (required), ``api_url`` (default
``https://lexica.art``), ``max_items`` (default unlimited). The real API answers one page (up to 50
images) per query; a ``nextCursor`` in the answer is followed when a server sends one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response

from imagecrawl.errors import ConfigError
from imagecrawl.pages import PageError
from imagecrawl.pages import lexica as pages
from imagecrawl.spider import ImageSpider
from imagecrawl.values import is_http_url
from spiders._util import PAGE_META, CursorPagingMixin, MaxItemsMixin, count_error, count_errors, optional_int

logger = logging.getLogger(__name__)


class LexicaSpider(MaxItemsMixin, CursorPagingMixin, ImageSpider):
    name = "lexica"
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "q": "the search query (required)",
        "api_url": "the base URL of the API",
        "max_items": "stop after this many images (default: no limit)",
    }

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
            raise ConfigError("the lexica spider needs a search query: -a q='your words'")
        if not is_http_url(api_url):
            raise ConfigError(f"-a api_url= must be an http(s) URL, got {api_url!r}")
        self.q = str(q).strip()
        self.api_url = api_url.rstrip("/")
        self.max_items = optional_int(max_items, "max_items")
        self.first_url = pages.search_url(self.api_url, self.q)
        self.start_paging(self.first_url)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.max_items == 0:
            return
        yield scrapy.Request(self.first_url, callback=self.parse_page, meta=dict(PAGE_META))

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
            if not self.take_item():
                self.log_max_items_reached(logger)
                return
            yield self.image_request(entry.url, entry.hints)
        request = self.next_page_request(page, response, self.parse_page)
        if request is not None:
            yield request
