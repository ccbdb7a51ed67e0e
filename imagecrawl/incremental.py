"""Incremental runs: the crawl's walks of newest-first listings and their watermarks
(:mod:`imagecrawl.storage.watermarks`), one :class:`Incremental` per crawl in the crawl context.

A spider calls :func:`begin_walk` for each listing it pages newest first (None when
``IMAGECRAWL_INCREMENTAL_ENABLED`` is off), reports every item to :meth:`Incremental.see`, asks
``walk.keep_paging()`` before the next page and calls ``walk.finish()`` when the walk is done (end of
the listing or a stop). Image requests carry ``meta["imagecrawl_walk"]`` and the errback
:meth:`imagecrawl.spider.ImageSpider.image_failed` (a spider method, so JOBDIR can save the request),
which calls :meth:`Incremental.image_failed`: a download given up after its retries leaves the walk
incomplete.

Crash-safe: a walk's new watermark is saved only when the crawl finished normally, the walk completed
without a failed download, and the Parquet pipeline reported every row committed (its commit hook in
:attr:`imagecrawl.storage.extensions.StorageOwner.commit_hooks`). A crawl that dies keeps the old marks,
and its walks' ``started`` field tells the next run not to trust a run of known items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from imagecrawl import meta, redact
from imagecrawl.exitcodes import unsettled
from imagecrawl.storage.context import crawl_context
from imagecrawl.storage.extensions import storage_owner
from imagecrawl.storage.watermarks import Mark, Walk, WatermarkBook, utc_now
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)


class Incremental:
    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.full = settings.getbool("IMAGECRAWL_INCREMENTAL_FULL_WALK")
        self.known_run = max(0, tuning(settings).incremental_known_run)
        self.walks: dict[str, Walk] = {}
        self.committed = False
        owner = storage_owner(crawler)
        self.storage = owner.storage
        self.book = WatermarkBook(self.storage.store, self.storage.state_dir)
        owner.commit_hooks.append(self._all_committed)
        crawler.signals.connect(self._closed, signal=signals.spider_closed)

    async def begin(self, source: str, query: str) -> Walk:
        key = redact.mask(f"{source}:{query}")  # the state file never holds a URL's credentials
        if key in self.walks:
            return self.walks[key]
        marks = await asyncio.to_thread(self.book.load)
        previous = marks.get(key)
        walk = Walk(key, previous, known_run=self.known_run, full=self.full)
        self.walks[key] = walk
        started = Mark(previous.position, previous.walked_at, self.storage.run_id) if previous else None
        try:
            await asyncio.to_thread(self.book.update, {key: started or Mark(started=self.storage.run_id)})
        except OSError as exc:
            # Unmarked, a crash of this walk would go unnoticed by the next run: walk in full instead.
            logger.warning("Cannot record the start of walk %s (%s): it walks in full", key, exc)
            walk.full = True
        if previous is not None and previous.position:
            logger.info("Incremental walk %s: stopping at %s (the last complete walk's newest)", key, previous.position)
        elif walk.trusted and self.known_run and not self.full:
            logger.info("Incremental walk %s: stopping after %d known items in a row", key, self.known_run)
        return walk

    async def known_many(self, walk: Walk, items: Sequence[tuple[str | None, str | None]]) -> list[bool]:
        """For each (record id, image URL): is it in the store, or claimed by this run on its way there? (Another
        run's claim is not known: that row may still be lost with it.) One round trip to the ledger's thread
        for a whole page; all False when the walk does not trust the store."""
        if not walk.trusted or not items:
            return [False] * len(items)

        def ask(ledger: Any) -> list[bool]:
            return [bool((rid and ledger.has_id(rid)) or (url and ledger.has_url(url))) for rid, url in items]

        return await self.storage.ledger_async.call(ask)

    def see(self, walk: Walk, position: str | None, known: bool = False) -> None:
        """One listed item, ``known`` as :meth:`known_many` said."""
        walk.see(position, known if walk.trusted else False)

    def stop(self, walk: Walk) -> bool:
        """``not walk.keep_paging()``, counted and logged; the walk is then finished."""
        if walk.keep_paging():
            return False
        walk.finish()
        self.stats.inc_value(f"imagecrawl/incremental/stopped/{walk.stopped_by}")
        logger.info("Incremental walk %s: stopped paging (%s) after %d items", walk.key, walk.stopped_by, walk.seen)
        return True

    def image_meta(self, walk: Walk | None) -> dict[str, Any]:
        return {} if walk is None else {meta.WALK: walk.key}

    def image_failed(self, failure: Failure) -> None:
        """Errback of image requests: a failed download keeps its walk's watermark where it was."""
        request = getattr(failure, "request", None)
        key = request.meta.get(meta.WALK) if request is not None else None
        walk = self.walks.get(key) if key else None
        if walk is None or request is None:
            return
        value = failure.value
        transient = isinstance(value, HttpError) and (value.response.status >= 500 or value.response.status == 429)
        # an image over DOWNLOAD_MAXSIZE stays so; timeouts, resets and the like may not
        if request.meta.get(meta.DOWNLOAD_ERROR) not in (None, "maxsize") or transient:
            if not walk.failed:
                logger.warning("Incremental walk %s keeps its watermark: %s failed", walk.key, request.url)
            walk.failed = True

    def _all_committed(self) -> None:
        self.committed = True

    def _closed(self, reason: str) -> None:
        done = {key: walk for key, walk in self.walks.items() if walk.complete and not walk.failed}
        left = sorted(set(self.walks) - set(done))
        if left:
            self.stats.inc_value("imagecrawl/incremental/incomplete", len(left))
            logger.info("Incremental walks not completed (their watermarks stay): %s", ", ".join(left))
        if not done:
            return
        if reason != "finished" or not self.committed or unsettled(self.stats):
            why = (
                f"the crawl ended with {reason!r}"
                if reason != "finished"
                else "not every row was committed"
                if not self.committed
                else "images claimed by another run were left undecided"
            )
            logger.warning("Watermarks not moved: %s; the next run walks these listings again", why)
            return
        changes = {key: Mark(walk.newest or walk.watermark, utc_now(), None) for key, walk in done.items()}
        try:
            self.book.update(changes)
        except Exception as exc:  # the rows are safe; the next run just walks further
            logger.warning("Cannot save the watermarks (%s); the next run walks these listings again", exc)
            return
        self.stats.inc_value("imagecrawl/incremental/saved", len(changes))
        for key, mark in sorted(changes.items()):
            logger.info("Watermark of %s saved: %s", key, mark.position or "(no position: a completed walk)")


async def begin_walk(crawler: Crawler, source: str, query: str) -> tuple[Incremental, Walk] | None:
    """The crawl's :class:`Incremental` and a walk of ``<source>:<query>``; None when incremental runs are off."""
    settings = crawler.settings
    if not settings.getbool("IMAGECRAWL_INCREMENTAL_ENABLED"):
        return None
    if str(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL") or "").strip():
        # One walk's pages and images spread over the workers: no single process knows when it is done.
        logger.info("Incremental runs are off in distributed crawls: %s:%s walks in full", source, query)
        return None
    incremental = crawl_context(crawler).get(Incremental, lambda: Incremental(crawler))
    return incremental, await incremental.begin(source, query)
