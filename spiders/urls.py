"""A list of image URLs (img2dataset-style input), streamed and optionally sharded.

Arguments: ``input`` (required: a .parquet/.csv/.tsv/.jsonl/.txt file), ``input_format`` (overrides
the extension), ``url_col`` (default ``url``), ``caption_col`` (default ``caption``; ``""`` = none),
``shard=I/N`` (rows with ``row_index % N == I``), ``max_items`` (default unlimited).

Records: ``source="urls"``, no ``source_id`` (the record id becomes ``sha256:<image sha256>``), the
caption as ``prompt`` with ``metadata_source="input"``, ``params = {"input_row": <row index>}`` and, with
``save_additional_columns=a,b``, ``params["input_columns"] = {"a": ..., "b": ...}`` (img2dataset's habit).

Every input row that gives no image (a bad URL, a failed download, an HTTP error, an unusable image, a
row dropped by a pipeline or by the duplicate filter, or still in flight when the crawl ended) gets one
JSON line in ``<store>/.imagecrawl/failures/<run>.jsonl`` (:mod:`imagecrawl.storage.faillog`), written
when the spider closes.
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
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.asyncio import sleep
from twisted.python.failure import Failure

from imagecrawl import meta
from imagecrawl.errors import ConfigError
from imagecrawl.items import PromptImage
from imagecrawl.pages.urllist import UrlList
from imagecrawl.records import SourceHints
from imagecrawl.spider import ImageSpider
from imagecrawl.storage import layout
from imagecrawl.storage.extensions import crawl_storage
from imagecrawl.storage.faillog import FailureLog
from spiders._util import MaxItemsMixin, optional_int

logger = logging.getLogger(__name__)

SOURCE = "urls"
#: the most start requests let into the scheduler at a time
LAZY_BATCH = 256
POLL_SECONDS = 0.05


class UrlsSpider(MaxItemsMixin, ImageSpider):
    name = "urls"
    #: its image requests come from start(), none from a callback (no page opt-out filter to run)
    requests_from_pages = False
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "input": "a Parquet, CSV or JSONL file of image URLs (required)",
        "url_col": "the column holding the URL",
        "caption_col": "the column holding the caption (the prompt)",
        "shard": "I/N: every N-th row from row I, so N processes share one list",
        "input_format": "parquet, csv or jsonl (default: from the file name)",
        "max_items": "stop after this many images (default: no limit)",
        "save_additional_columns": "col1,col2: input columns kept in params.input_columns and failure records",
    }

    def __init__(
        self,
        input: str | None = None,
        url_col: str = "url",
        caption_col: str | None = "caption",
        shard: str | None = None,
        input_format: str | None = None,
        max_items: str | int | None = None,
        save_additional_columns: str | None = None,
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
            extra_cols=tuple(dict.fromkeys(c.strip() for c in (save_additional_columns or "").split(",") if c.strip())),
            on_skip_row=self._skipped_row,
        )
        self.urllist.check()
        self.max_items = optional_int(max_items, "max_items")
        #: input row -> (url, extra columns) of the image requests not settled yet
        self._pending: dict[int, tuple[str, dict[str, Any] | None]] = {}
        self._failures: FailureLog | None = None

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> UrlsSpider:
        spider: UrlsSpider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(spider._item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(spider._request_dropped, signal=signals.request_dropped)
        crawler.signals.connect(spider._write_failures, signal=signals.spider_closed)
        return spider

    # -- failure records ------------------------------------------------------------------------------

    def _failure_log(self) -> FailureLog:
        if self._failures is None:
            storage = crawl_storage(self.crawler)
            spool = storage.state_dir / "failures" / f"{storage.run_id}.jsonl"
            self._failures = FailureLog(spool, storage.run_id)
        return self._failures

    def _fail(self, row: Any, stage: str, error: str, status: int | None = None) -> None:
        if not isinstance(row, int) or row not in self._pending:
            return
        url, extra = self._pending.pop(row)
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value(f"imagecrawl/urls/failed/{stage}")
        self._failure_log().add(row, url, stage=stage, error=error, status=status, extra=extra)

    def _skipped_row(self, kind: str, index: int, raw_url: Any) -> None:
        self._pending[index] = (raw_url, None)
        self._fail(index, "input", f"input row skipped: {kind}")

    def _item_scraped(self, item: Any, response: Response, spider: scrapy.Spider) -> None:
        self._pending.pop(response.meta.get(meta.INPUT_ROW), None)  # type: ignore[arg-type]

    def _item_dropped(self, item: Any, response: Response, exception: BaseException, spider: scrapy.Spider) -> None:
        self._fail(response.meta.get(meta.INPUT_ROW), "pipeline", f"dropped: {exception}", response.status)

    def _request_dropped(self, request: scrapy.Request, spider: scrapy.Spider) -> None:
        self._fail(request.meta.get(meta.INPUT_ROW), "scheduler", "dropped by the scheduler (a URL already requested)")

    def row_failed(self, failure: Failure) -> None:
        """Errback of the image requests (a method, so JOBDIR can save them)."""
        request = getattr(failure, "request", None)
        row = request.meta.get(meta.INPUT_ROW) if request is not None else None
        value = failure.value
        if isinstance(value, HttpError):
            status = value.response.status
            self._fail(row, "http", f"HTTP {status}", status)
        elif isinstance(value, IgnoreRequest):
            kind = request.meta.get(meta.DOWNLOAD_ERROR) if request is not None else None
            self._fail(row, "download" if kind else "refused", str(value) or type(value).__name__)
        else:
            self._fail(row, "download", f"{type(value).__name__}: {value}")

    async def parse_image(self, response: Response, hints: dict[str, Any]) -> AsyncIterator[PromptImage]:
        produced = False
        async for record in super().parse_image(response, hints):
            produced = True
            yield record
        if not produced:
            self._fail(
                response.meta.get(meta.INPUT_ROW),
                "image",
                "no usable image (not decodable, too large, or opted out inside the file; see the log)",
                response.status,
            )

    def _write_failures(self, spider: scrapy.Spider, reason: str) -> None:
        """Record the rows still in flight, then copy this run's failure records into the store."""
        for row in sorted(self._pending):
            self._fail(row, "unfinished", f"the crawl ended ({reason}) before this row gave an image")
        if self._failures is None and self.requested == 0 and not self.urllist.skipped:
            return  # the crawl never read the list (it failed to start): nothing to account for
        try:
            log = self._failure_log()
            spool = log.finish()
            storage = crawl_storage(self.crawler)
            key = f"{layout.FAILURES_DIR}/{storage.run_id}.jsonl"
            storage.store.put_bytes(key, spool.read_bytes(), "application/x-ndjson")
            spool.unlink()
        except Exception as exc:  # the records stay in the spool; the crawl's own result stands
            logger.error("Could not write the failure records of this run to the store: %s", exc)
            return
        logger.info("%d input rows gave no image: %s in %s", log.count, key, storage.store.url)

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
            params: dict[str, Any] = {"input_row": row.row_index}
            if row.extra is not None:
                params["input_columns"] = row.extra
            hints = SourceHints(source=SOURCE, prompt=row.caption, origin="input", params=params)
            await self._room()
            self._pending[row.row_index] = (row.url, row.extra)
            yield self.image_request(row.url, hints, meta={meta.INPUT_ROW: row.row_index}, errback=self.row_failed)
        logger.info(
            "Input %s read: %d rows requested; skipped %s",
            self.urllist.path,
            self.requested,
            dict(self.urllist.skipped) or "none",
        )
