"""``scrapy crawl recheck``: ``imagecrawl recheck`` as a spider, so Scrapyd can schedule it beside the
crawls (docs/forget.md). It visits every site with rows in ``IMAGECRAWL_STORE`` through the crawl's
middlewares and, at close, forgets the rows of the sites that now refuse AI training (reason ``opt-out
withdrawn``). Argument: ``dry_run`` (``1``: report only)."""

from __future__ import annotations

from imagecrawl.forget.recheck import RecheckSpider


class RecheckCrawl(RecheckSpider):
    name = "recheck"
