"""``-s JOBDIR=DIR`` loses nothing: every scheduled request can be saved, and none is dropped at a stop.

Scrapy keeps the requests of a crawl with a JOBDIR in disk queues: each is turned into a dict
(``Request.to_dict``: its callback and errback must be methods of the spider) and
pickled. A request that cannot be is kept in memory only, counted as ``scheduler/unserializable`` and
lost at the next stop, while its fingerprint stays in ``requests.seen``: the resumed crawl never asks for
it again. Two parts close that gap, whatever scheduler the crawl uses:

* :func:`serialization_problem` tells whether a request survives the disk queue (a scheduler may call it
  itself); :class:`JobdirGuard` (an extension) calls it on every request the engine schedules (the
  ``request_scheduled`` signal) and logs each one that does not at ERROR, counted as
  ``imagecrawl/jobdir/unserializable``;
* a component that gives up a request only because the crawl is closing (the pacing gate, while the
  request waits for its turn) raises :class:`CrawlClosing`; :class:`KeepOnCloseMiddleware` turns it
  back into a scheduled request (``dont_filter``: its fingerprint is in ``requests.seen`` already), which
  the scheduler writes to JOBDIR before it closes, so the next run sends it
  (``imagecrawl/jobdir/kept_on_close``; the middleware is in :mod:`imagecrawl.jobdir.downloadermiddlewares`).

:class:`ResumeGuard`: make ``-s JOBDIR=DIR`` safe after an unclean death (kill -9, power loss).

Scrapy's JOBDIR resumes correctly only after a clean stop: after a kill it holds requests marked as seen
that were never completed. This extension keeps a ``imagecrawl.running`` marker in JOBDIR while a crawl
runs; if a new crawl finds the marker, the previous one died, so the scheduler's queue and seen-set are
discarded before the scheduler opens and the crawl walks its pages again. Nothing is lost: images whose
records reached the store are skipped before download (``KnownImageMiddleware``), everything else is
fetched again, and exact dedupe drops the rest.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Self

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.request import request_from_dict

from imagecrawl import meta
from imagecrawl.exitcodes import exit_code, unsettled

logger = logging.getLogger(__name__)

#: the pickle protocol of Scrapy's disk queues (``scrapy.squeues``)
PICKLE_PROTOCOL = 4
#: unserializable requests logged one by one; the rest are counted, and summed up at the end
MAX_LOGGED = 10
#: pacing keys of an attempt that did not go out: the next run takes a fresh slot at the gate
_ATTEMPT_KEYS = (meta.SENT_AT, meta.PACING_GRANTED, meta.RETRY_AFTER)


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def serialization_problem(request: Request, spider: Spider | None) -> str | None:
    """Why ``request`` cannot be kept in a JOBDIR disk queue, or None when it can.

    The request goes the whole way a disk queue takes it (``Request.to_dict``, pickle, unpickle,
    ``request_from_dict``) and must come back with the same callback, errback, URL and meta keys."""
    try:
        data = request.to_dict(spider=spider)
    except ValueError as exc:  # a callback or errback that is not a method of the spider
        return str(exc)
    try:
        blob = pickle.dumps(data, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        keys = [key for key, value in request.meta.items() if not _picklable(value)]
        kwargs = [key for key, value in request.cb_kwargs.items() if not _picklable(value)]
        where = f"meta {keys}" if keys else f"cb_kwargs {kwargs}" if kwargs else "its attributes"
        return f"{where} cannot be pickled ({exc})"
    try:
        back = request_from_dict(pickle.loads(blob), spider=spider)
    except (ValueError, AttributeError, TypeError, pickle.UnpicklingError) as exc:
        return f"it cannot be read back ({exc})"
    for what in ("callback", "errback"):
        if _name(getattr(back, what)) != _name(getattr(request, what)):
            return f"its {what} {_name(getattr(request, what))} comes back as {_name(getattr(back, what))}"
    if back.url != request.url or set(back.meta) != set(request.meta):
        return "its URL or meta keys do not come back"
    return None


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


class CrawlClosing(IgnoreRequest):
    """A request given up only because the crawl is closing: with a JOBDIR it is kept for the next run."""

    def __init__(self, detail: str = "the crawl is closing") -> None:
        super().__init__(detail)


def keep_for_next_run(request: Request) -> Request:
    """A copy of ``request`` for the scheduler to keep: past the duplicate filter, without the pacing
    state of the attempt that did not go out."""
    kept = request.replace(dont_filter=True)
    for key in _ATTEMPT_KEYS:
        kept.meta.pop(key, None)
    return kept


def jobdir_of(crawler: Crawler) -> str:
    return str(crawler.settings.get("JOBDIR") or "")


class JobdirGuard:
    """With a JOBDIR: every request the engine schedules is checked by :func:`serialization_problem`;
    one that cannot be saved is an ERROR (the first ``MAX_LOGGED``, then a sum at the end)."""

    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.crawler = crawler
        self.stats = crawler.stats
        self.count = 0
        crawler.signals.connect(self.request_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not jobdir_of(crawler):
            raise NotConfigured  # no JOBDIR: requests are not saved (and nothing to warn about)
        return cls(crawler)

    def request_scheduled(self, request: Request, spider: Spider | None = None) -> None:
        problem = serialization_problem(request, spider or self.crawler.spider)
        if problem is None:
            return
        self.count += 1
        self.stats.inc_value("imagecrawl/jobdir/unserializable")
        if self.count <= MAX_LOGGED:
            logger.error(
                "Request %s cannot be saved in JOBDIR: %s. It is kept in memory only and lost if the crawl stops",
                request.url,
                problem,
            )

    def spider_closed(self) -> None:
        if self.count > MAX_LOGGED:
            logger.error(
                "%d requests of this crawl could not be saved in JOBDIR (the first %d are logged above)",
                self.count,
                MAX_LOGGED,
            )


MARKER = "imagecrawl.running"
SCHEDULER_STATE = ("requests.queue", "requests.seen", "frontier.sqlite3")
#: Scrapy's SpiderState extension's file in JOBDIR
SPIDER_STATE = "spider.state"


class ResumeGuard:
    def __init__(self, crawler: Crawler, jobdir: Path) -> None:
        self.crawler = crawler
        self.jobdir = jobdir
        self.marker = jobdir / MARKER
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.unclean = self.marker.exists()
        self.opened = False
        if self.unclean:
            self._discard_scheduler_state()
        self._check_spider_state(jobdir / SPIDER_STATE)
        jobdir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        jobdir = crawler.settings.get("JOBDIR")
        if not jobdir:
            raise NotConfigured  # no JOBDIR: nothing to guard
        return cls(crawler, Path(jobdir))

    def _check_spider_state(self, path: Path) -> None:
        """Scrapy's ``spider.state`` (the SpiderState extension) cut short by a full disk or a kill would fail
        every later run in this JOBDIR (``EOFError`` in ``spider_opened``, and the crawl does nothing): one
        that cannot be read is set aside (``spider.state.corrupt``) with one WARNING, and the run starts
        with an empty state."""
        if not path.exists():
            return
        try:
            with path.open("rb") as fh:
                pickle.load(fh)
        except Exception as exc:
            aside = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, aside)
            except OSError as move_exc:
                logger.error(
                    "JOBDIR %s: %s is unreadable (%r) and cannot be set aside: %s",
                    self.jobdir,
                    path.name,
                    exc,
                    move_exc,
                )
                return
            self.stats.inc_value("imagecrawl/resume/spider_state_discarded")
            logger.warning(
                "JOBDIR %s: %s is unreadable (%r, cut short by a full disk or a kill): set aside as %s; the spider "
                "starts with an empty state",
                self.jobdir,
                path.name,
                exc,
                aside.name,
            )

    def _discard_scheduler_state(self) -> None:
        logger.warning(
            "JOBDIR %s belongs to a crawl that did not stop cleanly: its request queue cannot be trusted, "
            "so the crawl starts its walk again (images already in the store are not downloaded again)",
            self.jobdir,
        )
        for name in SCHEDULER_STATE:
            path = self.jobdir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def spider_opened(self) -> None:
        self.opened = True
        if self.unclean:
            self.stats.set_value("imagecrawl/resume/unclean_restart", 1)

    def spider_closed(self, reason: str) -> None:
        # A close that ran this far (finished, Ctrl-C, SIGTERM, CLOSESPIDER_*) persisted the queue. But a crawl
        # that never opened, or that recorded a failure (a full disk that refused the spool: the images it had
        # fetched are not stored, though their requests count as done in requests.seen), is not a clean stop:
        # the marker stays, so the next run discards the queue and seen-set and walks again (what the store
        # already holds is not downloaded again).
        # So is a crawl that left an image undecided (another run writing into the same store held its claim
        # and neither stored it nor gave it up in time): its request counts as done too.
        why = self._unclean_because()
        if why:
            logger.warning("JOBDIR %s is kept as unclean (%s): the next run walks again", self.jobdir, why)
            self.stats.set_value("imagecrawl/resume/kept_unclean", 1)
            return
        self.marker.unlink(missing_ok=True)

    def _unclean_because(self) -> str:
        if not self.opened:
            return "the crawl did not start"
        if exit_code(self.stats):
            return f"exit status {exit_code(self.stats)}"
        if unsettled(self.stats):
            return f"{unsettled(self.stats)} images left undecided, claimed by another run"
        return ""
