"""A generic test spider (``scrapy runspider tests/sitespider.py -a start=URL``) for the opt-out and
hostile sandbox pages: it follows links under the start URL's path, requests every ``<img>`` as an
image, and reads JSON pages of the shape ``{"items": [{"url", "prompt"}], "next": url}``.

It counts what it cannot parse as ``imagecrawl/pages/errors/<kind>``, as the real site adapters do.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.http import Response, TextResponse

from imagecrawl.optout.downloadermiddlewares.robots import crawl_delays
from imagecrawl.records import SourceHints
from imagecrawl.spider import ImageSpider

MAX_IMAGES_PER_PAGE = 100
MAX_LINKS_PER_PAGE = 1000
_HREF_RE = re.compile(r"""<a\b[^>]*?\bhref=["']([^"'>]*)["']""", re.IGNORECASE)
_IMG_RE = re.compile(r"""<img\b[^>]*?\bsrc=["']([^"'>]*)["']""", re.IGNORECASE)


class SiteSpider(ImageSpider):
    name = "site"

    def __init__(self, start: str = "", late: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_url = start
        # late=1: no start_urls; the first request comes from start() (checked at run time).
        self.start_urls = [] if late else [start]
        self.prefix = urlsplit(start).path

    async def start(self) -> AsyncIterator[Any]:
        for url in self.start_urls or [self.start_url]:
            yield scrapy.Request(url, callback=self.parse)

    def closed(self, reason: str) -> None:
        # Lets tests see what robots.txt handed to pacing (the registry lives in this process).
        assert self.crawler.stats is not None
        self.crawler.stats.set_value("test/crawl_delays", crawl_delays(self.crawler).as_dict())

    def _count(self, kind: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"imagecrawl/pages/errors/{kind}")

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        if not isinstance(response, TextResponse):
            self._count("not_text")
            return
        ctype = (response.headers.get(b"Content-Type") or b"").decode("latin-1")
        if "json" in ctype:
            yield from self.parse_json(response)
            return
        # Bounded scanning, not a full DOM: an lxml tree of a 100k-image page blocks the reactor for
        # seconds (and every download in flight times out meanwhile).
        text = response.text
        for m in islice(_HREF_RE.finditer(text), MAX_LINKS_PER_PAGE):
            url = response.urljoin(html.unescape(m.group(1)))
            if urlsplit(url).path.startswith(self.prefix):
                yield scrapy.Request(url, callback=self.parse)
        images = [html.unescape(m.group(1)) for m in islice(_IMG_RE.finditer(text), MAX_IMAGES_PER_PAGE + 1)]
        if len(images) > MAX_IMAGES_PER_PAGE:
            self._count("too_many_images")
            images = images[:MAX_IMAGES_PER_PAGE]
        for src in images:
            url = response.urljoin(src)
            yield self.image_request(url, SourceHints(source="site", page_url=response.url, origin="html"))

    def parse_json(self, response: TextResponse) -> Iterator[Any]:
        try:
            data = json.loads(response.text)  # lenient decoding: invalid UTF-8 becomes U+FFFD
        except (ValueError, RecursionError):
            self._count("invalid_json")
            return
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            self._count("wrong_shape")
            return
        seen = response.meta.get("seen_pages", 0)
        for item in data["items"][:MAX_IMAGES_PER_PAGE]:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                self._count("wrong_shape")
                continue
            prompt = item.get("prompt") if isinstance(item.get("prompt"), str) else None
            hints = SourceHints(source="site", page_url=response.url, prompt=prompt, origin="api")
            yield self.image_request(response.urljoin(item["url"]), hints)
        nxt = data.get("next")
        if isinstance(nxt, str):
            if seen >= 50:
                self._count("cursor_loop")
                return
            yield scrapy.Request(
                response.urljoin(nxt), callback=self.parse, meta={"seen_pages": seen + 1}, dont_filter=False
            )
