"""``scrapy crawl recheck``: ``imagecrawl recheck`` as a spider, so Scrapyd can schedule it beside the
crawls (docs/forget.md). It visits every site with rows in ``IMAGECRAWL_STORE`` through the crawl's
middlewares and, at close, forgets the rows of the sites that now refuse AI training (reason ``opt-out
withdrawn``)."""

from __future__ import annotations

from typing import Any

from imagecrawl.errors import unknown_name
from imagecrawl.forget.recheck import RecheckSpider
from imagecrawl.spider import spider_arguments


class RecheckCrawl(RecheckSpider):
    """Re-reads the AI opt-outs of every site in the store; forgets the rows of those that now refuse."""

    name = "recheck"
    argument_help = {"dry_run": "1: report what would be forgotten, forget nothing"}

    def __init__(self, dry_run: str | bool = False, **kwargs: Any) -> None:
        for key in kwargs:
            if key != "name" and not key.startswith("_"):  # Scrapyd's _job passes
                raise unknown_name("-a argument of the recheck spider", key, spider_arguments(type(self)))
        super().__init__(dry_run=dry_run, **kwargs)
