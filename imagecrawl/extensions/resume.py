"""Make ``-s JOBDIR=DIR`` safe after an unclean death (kill -9, power loss).

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
import shutil
from pathlib import Path
from typing import Self

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

logger = logging.getLogger(__name__)

MARKER = "imagecrawl.running"
SCHEDULER_STATE = ("requests.queue", "requests.seen", "frontier.sqlite3")


class ResumeGuard:
    def __init__(self, crawler: Crawler, jobdir: Path) -> None:
        self.crawler = crawler
        self.jobdir = jobdir
        self.marker = jobdir / MARKER
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.unclean = self.marker.exists()
        if self.unclean:
            self._discard_scheduler_state()
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
        if self.unclean:
            self.stats.set_value("imagecrawl/resume/unclean_restart", 1)

    def spider_closed(self, reason: str) -> None:
        # Any close that ran this far (finished, Ctrl-C, SIGTERM, CLOSESPIDER_*) persisted the queue.
        self.marker.unlink(missing_ok=True)
