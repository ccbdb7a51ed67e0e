"""The downloader half of the JOBDIR guard (:mod:`imagecrawl.jobdir.extensions`): a request given up only
because the crawl is closing is scheduled again, so JOBDIR keeps it for the next run."""

from __future__ import annotations

import logging
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl.jobdir.extensions import CrawlClosing, jobdir_of, keep_for_next_run

logger = logging.getLogger(__name__)


class KeepOnCloseMiddleware:
    """Downloader middleware: a request that raised :class:`CrawlClosing` is scheduled again (JOBDIR only)."""

    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not jobdir_of(crawler):
            raise NotConfigured  # no JOBDIR: nothing outlives the crawl
        return cls(crawler)

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if not isinstance(exception, CrawlClosing):
            return None
        self.stats.inc_value("imagecrawl/jobdir/kept_on_close")
        logger.debug("Keeping %s in JOBDIR for the next run (%s)", request.url, exception)
        return keep_for_next_run(request)
