"""The crawl's side of forgetting: the tombstones a crawl refuses (loaded once per crawl through the
crawl context), and the stats of what it refused. A thin Scrapy shell over
:mod:`imagecrawl.forget.tombstones`."""

from __future__ import annotations

import logging

from scrapy.crawler import Crawler
from scrapy.utils.misc import load_object

from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.forget.tombstones import TombstoneIndex, TombstoneTable, index_of, load_index
from imagecrawl.state import state_dir_for
from imagecrawl.storage.context import crawl_context
from imagecrawl.storage.extensions import crawl_storage

logger = logging.getLogger(__name__)

#: ``imagecrawl/forget/refused/<why>``: sha256, id, url, near
REFUSED_STAT = "imagecrawl/forget/refused"


def tombstones(crawler: Crawler) -> TombstoneIndex:
    """The crawl's tombstones (loaded on first use: the ledger's, plus those the store keeps)."""
    context = crawl_context(crawler)

    def make() -> TombstoneIndex:
        settings = crawler.settings
        factory = settings.get("IMAGECRAWL_TOMBSTONES_FACTORY")
        if factory:
            index: TombstoneIndex = load_object(factory).from_crawler(crawler)
        else:
            storage = crawl_storage(crawler)
            near = settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE")
            if isinstance(storage.ledger, Ledger):  # the crawl's own ledger keeps them
                index = index_of(TombstoneTable(storage.ledger), storage.store, near)
            else:
                state = state_dir_for(str(settings.get("IMAGECRAWL_STORE")), settings.get("IMAGECRAWL_STATE_DIR"))
                index = load_index(state / "ledger.sqlite3", storage.store, near)
        if len(index):
            logger.info("Tombstones: %d forgotten images are refused by this crawl", len(index))
        return index

    return context.get(TombstoneIndex, make)


def count_refused(crawler: Crawler, why: str) -> None:
    assert crawler.stats is not None
    crawler.stats.inc_value(f"imagecrawl/forget/refused/{why}")
