"""A list of image URLs (img2dataset-style input), streamed and optionally sharded.

Arguments: ``input`` (required: a .parquet/.csv/.tsv/.jsonl/.txt file), ``input_format`` (overrides
the extension), ``url_col`` (default ``url``), ``caption_col`` (default ``caption``; ``""`` = none),
``shard=I/N`` (rows with ``row_index % N == I``), ``max_items`` (default unlimited).

Records: ``source="urls"``, no ``source_id`` (the record id becomes ``sha256:<image sha256>``), the
caption as ``prompt`` with ``metadata_source="input"``, ``params = {"input_row": <row index>}``.
The list is read lazily inside ``start()``. Scrapy 2.19 itself drains ``start()`` into the scheduler as
fast as it can (it does not stop when the downloader is full: measured, a 2000-row list put 1984
requests in the scheduler), so the spider throttles itself. With the project's frontier it hands out
rows while the frontier ``wants_more()`` (its read-ahead: the sites' next requests are few; a site
holding a long run of the list does not stop the reading, its requests wait on disk). With another
scheduler it hands out a row only while the scheduler holds fewer than ``LAZY_BATCH`` requests
(polling ``len(engine.scheduler)`` every 50 ms while full). A scheduler without ``__len__`` falls back
to Scrapy's documented pattern (wait for ``scheduler_empty``
when the engine needs to back out), which stalls up to the engine's 5 s heartbeat. Repeated URLs are
dropped by Scrapy's duplicate filter.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy import signals
from scrapy.utils.asyncio import sleep

from imagecrawl.errors import ConfigError
from imagecrawl.pages.urllist import UrlList
from imagecrawl.records import SourceHints
from imagecrawl.spider import ImageSpider
from spiders._util import MaxItemsMixin, optional_int

logger = logging.getLogger(__name__)

SOURCE = "urls"
#: the most start requests let into the scheduler at a time
LAZY_BATCH = 256
POLL_SECONDS = 0.05


class UrlsSpider(MaxItemsMixin, ImageSpider):
    name = "urls"
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "input": "a Parquet, CSV or JSONL file of image URLs (required)",
        "url_col": "the column holding the URL",
        "caption_col": "the column holding the caption (the prompt)",
        "shard": "I/N: every N-th row from row I, so N processes share one list",
        "input_format": "parquet, csv or jsonl (default: from the file name)",
        "max_items": "stop after this many images (default: no limit)",
    }

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
            raise ConfigError("the urls spider needs an input file: -a input=urls.parquet")
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

    def _skip(self, kind: str) -> None:
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value(f"imagecrawl/pages/errors/{kind}")
        if self.urllist.skipped[kind] <= 5:  # the first few of each kind, not a million lines
            logger.warning("Skipping an input row (%s) in %s", kind, self.urllist.path)

    async def _room(self) -> None:
        """Wait until the scheduler has room for one more start request (see the module docstring)."""
        try:
            engine = self.crawler.engine
        except RuntimeError:  # not crawling (start() driven by hand, as in tests)
            return
        scheduler = engine.scheduler if engine is not None else None
        if engine is None or scheduler is None:
            return
        wants_more = getattr(scheduler, "wants_more", None)
        if callable(wants_more):
            while not wants_more() and engine.scheduler is scheduler:
                await sleep(POLL_SECONDS)
            return
        if not hasattr(scheduler, "__len__"):
            if engine.needs_backout():
                await self.crawler.signals.wait_for(signals.scheduler_empty)
            return
        while len(scheduler) >= LAZY_BATCH and engine.scheduler is scheduler:
            await sleep(POLL_SECONDS)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        stats = self.crawler.stats
        assert stats is not None
        for row in self.urllist:
            if not self.take_item():
                self.log_max_items_reached(logger)
                break
            stats.inc_value("imagecrawl/pages/urls/rows")
            hints = SourceHints(
                source=SOURCE,
                prompt=row.caption,
                origin="input",
                params={"input_row": row.row_index},
            )
            await self._room()
            yield self.image_request(row.url, hints)
        logger.info(
            "Input %s read: %d rows requested; skipped %s",
            self.urllist.path,
            self.requested,
            dict(self.urllist.skipped) or "none",
        )
