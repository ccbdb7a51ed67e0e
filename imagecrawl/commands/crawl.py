"""``scrapy crawl`` that also fails the process when the crawl could not deliver its data.

Scrapy's own command exits non-zero only when a crawler fails to start. A dataset crawl whose shards
could not reach the store (S3 down to the end) must say so with its exit code too: components set the
stat ``imagecrawl/exit_code`` and this command exits with it.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one spider name")
        assert self.crawler_process
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        if self.crawler_process.bootstrap_failed:
            self.exitcode = 1
            return
        code = crawler.stats.get_value("imagecrawl/exit_code") if crawler.stats else None
        if code:
            self.exitcode = int(code)
