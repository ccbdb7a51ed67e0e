"""The known-image middleware on a real SQLite ledger in a temporary store: an image request whose
record id or URL a previous run committed (or this run claimed) is dropped before it is fetched;
pages and new images pass."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from imagecrawl import meta
from imagecrawl.dedupe.downloadermiddlewares import KnownImageMiddleware
from imagecrawl.storage.extensions import crawl_storage
from tests.crawlers import make_crawler

SHARD = "civitai/date=2026-01-01/part-earlier-run-1.parquet"
COMMITTED = [
    ("a" * 64, "civitai:1", 123, "https://img.example/1.png"),
    ("b" * 64, "civitai:2", None, "https://img.example/2.png"),
]


def known(tmp_path: Path, **overrides: Any) -> tuple[Crawler, KnownImageMiddleware]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), **overrides)
    crawler.stats.open_spider()
    return crawler, KnownImageMiddleware.from_crawler(crawler)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store whose ledger an earlier run left with two committed records."""
    earlier = make_crawler(IMAGECRAWL_STORE=str(tmp_path))
    storage = crawl_storage(earlier)
    storage.ledger.commit_shard(SHARD, COMMITTED)
    storage.close()
    return tmp_path


def image(url: str, record_id: str | None = None) -> Request:
    extra = {meta.RECORD_ID: record_id} if record_id else {}
    return Request(url, meta={meta.KIND: "image", **extra})


def skipped(crawler: Crawler) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith("imagecrawl/dedupe/skipped_known")}


def test_committed_record_ids_and_urls_are_not_fetched_again(store: Path) -> None:
    crawler, mw = known(store)
    with pytest.raises(IgnoreRequest, match="record civitai:1"):
        asyncio.run(mw.process_request(image("https://img.example/moved/1.png", "civitai:1")))  # same record, new URL
    with pytest.raises(IgnoreRequest, match="already in the store"):
        asyncio.run(mw.process_request(image("https://img.example/2.png")))  # no id: the URL decides
    with pytest.raises(IgnoreRequest):
        asyncio.run(mw.process_request(image("https://img.example/2.png", "civitai:99")))  # a new id, a known URL
    assert skipped(crawler) == {
        "imagecrawl/dedupe/skipped_known/id": 1,
        "imagecrawl/dedupe/skipped_known/url": 2,
    }


def test_new_images_and_pages_pass(store: Path) -> None:
    crawler, mw = known(store)
    assert asyncio.run(mw.process_request(image("https://img.example/3.png", "civitai:3"))) is None
    assert asyncio.run(mw.process_request(image("https://img.example/4.png"))) is None
    # pages are never skipped, whatever their URL (only images are in the ledger)
    assert asyncio.run(mw.process_request(Request("https://img.example/1.png", meta={meta.KIND: "page"}))) is None
    assert asyncio.run(mw.process_request(Request("https://img.example/1.png"))) is None
    assert skipped(crawler) == {}


def test_an_image_claimed_by_this_run_is_not_fetched_twice(tmp_path: Path) -> None:
    crawler, mw = known(tmp_path)
    ledger = crawl_storage(crawler).ledger
    assert asyncio.run(mw.process_request(image("https://img.example/5.png", "lexica:5"))) is None
    ledger.reserve("c" * 64, "lexica:5", "https://img.example/5.png")  # the dedupe pipeline kept it
    with pytest.raises(IgnoreRequest):
        asyncio.run(mw.process_request(image("https://img.example/5.png", "lexica:5")))
    ledger.release("c" * 64, "lexica:5", "https://img.example/5.png")  # a later pipeline dropped it
    assert asyncio.run(mw.process_request(image("https://img.example/5.png", "lexica:5"))) is None


def test_an_image_another_crawl_claimed_waits_in_the_frontier_until_that_crawl_decides(tmp_path: Path) -> None:
    """Another crawl writing into the same store holds the claim: its row is on its way but could still be
    lost with that crawl, so the request is neither fetched nor dropped: it goes back to the frontier, due
    later (1, 2, 4 ... s), past the duplicate filter, until that crawl commits the row (then it is skipped)
    or gives it up (then it is fetched)."""
    crawler, mw = known(tmp_path)
    _, other_mw = known(tmp_path)
    other = other_mw.storage.ledger
    assert other.owner != mw.storage.ledger.owner
    other.reserve("c" * 64, "lexica:5", "https://img.example/5.png")
    other.reserve("d" * 64, "lexica:6", "https://img.example/6.png")

    first = image("https://img.example/5.png", "lexica:5")
    before = time.time()
    again = asyncio.run(mw.process_request(first))
    assert isinstance(again, Request) and again.url == first.url and again.dont_filter
    assert again.meta[meta.CLAIM_WAIT][1] == 1 and before <= again.meta[meta.CLAIM_WAIT][0] <= time.time()
    assert 1.0 <= again.meta[meta.NOT_BEFORE] - before <= 1.0 + (time.time() - before)
    later = asyncio.run(mw.process_request(again))
    assert isinstance(later, Request) and later.meta[meta.CLAIM_WAIT][1] == 2
    assert later.meta[meta.CLAIM_WAIT][0] == again.meta[meta.CLAIM_WAIT][0]  # the wait counts from the first time
    assert later.meta[meta.NOT_BEFORE] - time.time() > 1.5  # the pause doubles
    # asked by URL alone, the claim is found too
    assert isinstance(asyncio.run(mw.process_request(image("https://img.example/6.png"))), Request)

    other.commit_shard("k", [("c" * 64, "lexica:5", None, "https://img.example/5.png")])
    with pytest.raises(IgnoreRequest, match="already in the store"):
        asyncio.run(mw.process_request(later))
    other.release("d" * 64, "lexica:6", "https://img.example/6.png")
    assert asyncio.run(mw.process_request(image("https://img.example/6.png", "lexica:6"))) is None
    stats = crawler.stats.get_stats()
    assert stats["imagecrawl/dedupe/claim_wait/images"] == 2
    assert stats["imagecrawl/dedupe/claim_wait/requeued"] == 3
    assert "imagecrawl/dedupe/claim_wait/fetched" not in stats


def test_an_image_claimed_for_too_long_is_fetched_and_the_pipeline_decides(tmp_path: Path) -> None:
    crawler, mw = known(tmp_path, IMAGECRAWL_TUNING={"claim_wait_seconds": 30})
    _, other_mw = known(tmp_path)
    other_mw.storage.ledger.reserve("c" * 64, "lexica:5", "https://img.example/5.png")
    waited = image("https://img.example/5.png", "lexica:5")
    waited.meta[meta.CLAIM_WAIT] = [time.time() - 31, 9]
    assert asyncio.run(mw.process_request(waited)) is None
    assert crawler.stats.get_value("imagecrawl/dedupe/claim_wait/fetched") == 1
    waited.meta[meta.CLAIM_WAIT] = [time.time() - 20, 9]
    assert isinstance(asyncio.run(mw.process_request(waited)), Request)


def test_the_ledger_is_the_crawls_one(tmp_path: Path) -> None:
    crawler, mw = known(tmp_path)
    storage = crawl_storage(crawler)
    assert mw.storage is storage
    assert storage.state_dir == tmp_path / ".imagecrawl" / "state"
    assert (tmp_path / ".imagecrawl" / "state" / "ledger.sqlite3").exists()


def test_switched_off(tmp_path: Path) -> None:
    with pytest.raises(NotConfigured, match="IMAGECRAWL_SKIP_KNOWN_IMAGES"):
        KnownImageMiddleware.from_crawler(
            make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_SKIP_KNOWN_IMAGES=False)
        )
    assert not (tmp_path / ".imagecrawl" / "state").exists()  # nothing opened
