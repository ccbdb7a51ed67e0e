"""A crawl that got nothing does not end "finished".

When the spider goes idle without a single response to its own requests (robots.txt and TDMRep
fetches do not count) and without an item, and requests were refused or failed, the crawl closes
with a reason that says which, logs one ERROR line with the counts and a hint, and ``scrapy crawl``
exits 4 (``imagecrawl/exit_code``):

* ``imagecrawl_all_refused``: every request was refused before it was sent (network guard, missing
  contact, robots.txt or another opt-out);
* ``imagecrawl_all_failed``: requests were sent and every one failed (DNS, connection, timeout), or
  some were refused and the rest failed.

A crawl that asked for nothing (``-a max_items=0``) still ends "finished".
"""

from __future__ import annotations

import logging
from typing import Any, Final, Self

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.exitcodes import NOTHING_FETCHED, set_exit_code

logger = logging.getLogger(__name__)

EXIT_CODE: Final = NOTHING_FETCHED
REFUSED: Final = "imagecrawl_all_refused"
FAILED: Final = "imagecrawl_all_failed"
#: stats that count a request refused before it went out, with the hint for the user
REFUSALS: Final = {
    "imagecrawl/netguard/refused": "network guard (allow a range with IMAGECRAWL_ALLOWED_NETWORKS)",
    "imagecrawl/identity/refused": "no contact (set IMAGECRAWL_CONTACT)",
    "imagecrawl/optout/skipped": "robots.txt and opt-outs",
}
FAILURE_PREFIXES: Final = ("imagecrawl/download/errors/", "imagecrawl/netguard/dns_error")


def _own(request: Request) -> bool:
    """A request of the spider (a page or an image), not robots.txt or a TDMRep file."""
    if request.meta.get(meta.TDM_FILE):
        return False
    return not request.url.split("?", 1)[0].endswith("/robots.txt")


def counts(stats: dict[str, Any]) -> tuple[dict[str, int], int]:
    refused = {key: int(stats.get(key, 0)) for key in REFUSALS if stats.get(key)}
    failed = sum(int(v) for k, v in stats.items() if k.startswith(FAILURE_PREFIXES) and isinstance(v, int | float))
    return refused, failed


class CrawlOutcome:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.responses = 0
        crawler.signals.connect(self._response, signal=signals.response_received)
        crawler.signals.connect(self._idle, signal=signals.spider_idle)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def _response(self, response: Response, request: Request) -> None:
        if _own(request):
            self.responses += 1

    def _idle(self) -> None:
        stats = self.crawler.stats
        assert stats is not None
        values = stats.get_stats()
        if self.responses or values.get("item_scraped_count"):
            return
        refused, failed = counts(values)
        if not refused and not failed:
            return
        reason = FAILED if failed else REFUSED
        parts = [f"{n} refused by the {REFUSALS[key]}" for key, n in refused.items()]
        if failed:
            parts.append(f"{failed} failed after their retries (DNS, connection, timeout; see the WARNINGs above)")
        logger.error("Nothing stored: no request got an answer; %s (%s)", "; ".join(parts), reason)
        set_exit_code(stats, EXIT_CODE)
        raise CloseSpider(reason)
