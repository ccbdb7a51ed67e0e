"""A list of image URLs (img2dataset-style input), streamed and optionally sharded.

Arguments: ``input`` (required: a .parquet/.csv/.tsv/.jsonl/.txt file), ``input_format`` (overrides
the extension), ``url_col`` (default ``url``), ``caption_col`` (default ``caption``; ``""`` = none),
``shard=I/N`` (rows with ``row_index % N == I``), ``max_items`` (default unlimited).

Records: ``source="urls"``, no ``source_id`` (the record id becomes ``sha256:<image sha256>``), the
caption as ``prompt`` with ``metadata_source="input"``, ``params = {"input_row": <row index>}``.
The list is read lazily inside ``start()``: Scrapy pulls start requests as it has room, so a long
list never sits in memory. Repeated URLs are dropped by Scrapy's duplicate filter.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import scrapy

from imagecrawl.pages.urllist import UrlList
from imagecrawl.records import SourceHints
from imagecrawl.spider import ImageSpider
from spiders._util import optional_int

logger = logging.getLogger(__name__)

SOURCE = "urls"


class UrlsSpider(ImageSpider):
    name = "urls"

    def __init__(
        self,
        input: str | None = None,
        url_col: str = "url",
        caption_col: str | None = "caption",
        shard: str | None = None,
        input_format: str | None = None,
        max_items: str | int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not input:
            raise ValueError("the urls spider needs an input file: -a input=urls.parquet")
        self.urllist = UrlList(
            input,
            url_col=url_col or "url",
            caption_col=caption_col or None,
            shard=shard,
            input_format=input_format or None,
            on_skip=self._skip,
        )
        self.urllist.check()
        self.max_items = optional_int(max_items, "max_items")
        self.requested = 0

    def _skip(self, kind: str) -> None:
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value(f"imagecrawl/pages/errors/{kind}")
        if self.urllist.skipped[kind] <= 5:  # the first few of each kind, not a million lines
            logger.warning("Skipping an input row (%s) in %s", kind, self.urllist.path)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        stats = self.crawler.stats
        assert stats is not None
        for row in self.urllist:
            if self.max_items is not None and self.requested >= self.max_items:
                logger.info("max_items=%d reached", self.max_items)
                break
            self.requested += 1
            stats.inc_value("imagecrawl/pages/urls/rows")
            hints = SourceHints(
                source=SOURCE,
                prompt=row.caption,
                origin="input",
                params={"input_row": row.row_index},
            )
            yield self.image_request(row.url, hints)
        logger.info(
            "Input %s read: %d rows requested; skipped %s",
            self.urllist.path,
            self.requested,
            dict(self.urllist.skipped) or "none",
        )
