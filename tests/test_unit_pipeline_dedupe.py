"""The dedupe pipeline on a real SQLite ledger in a temporary store, with records built from real image
bytes: exact duplicates (same sha256, same id) are dropped with their reason, near-duplicates (the same
picture re-encoded) per IMAGECRAWL_NEAR_POLICY, a record a later pipeline drops is released again, and
records committed by an earlier run or claimed by another crawl of the store are dropped too."""

from __future__ import annotations

import asyncio
import io
import random
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.dedupe.pipelines import DedupePipeline, DuplicateItem
from imagecrawl.exitcodes import unsettled
from imagecrawl.items import PromptImage
from imagecrawl.records import SourceHints, build_record
from imagecrawl.storage.extensions import crawl_storage
from tests.crawlers import make_crawler


def picture(seed: int) -> Image.Image:
    rng = random.Random(seed)
    im = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x, y, r = rng.randrange(96), rng.randrange(96), rng.randrange(8, 30)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return im


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()


def record(source_id: str, body: bytes) -> PromptImage:
    return build_record(
        hints=SourceHints(source="civitai", source_id=source_id, prompt=f"picture {source_id}"),
        image_url=f"https://img.example/{source_id}",
        body=body,
        salt=b"salt",
    )


FOX, OWL = encode(picture(1)), encode(picture(2))
FOX_JPEG = encode(picture(1), "JPEG")


def dedupe(store: Path, **overrides: Any) -> tuple[Crawler, DedupePipeline]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(store), **overrides)
    crawler.stats.open_spider()
    pipeline = DedupePipeline.from_crawler(crawler)
    asyncio.run(pipeline.open_spider())
    return crawler, pipeline


def subtree(crawler: Crawler) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith("imagecrawl/dedupe")}


def test_exact_duplicates_by_sha256_and_by_id(tmp_path: Path) -> None:
    crawler, pipeline = dedupe(tmp_path)
    first = record("1", FOX)
    assert asyncio.run(pipeline.process_item(first)) is first
    with pytest.raises(DuplicateItem, match="duplicate sha256"):
        asyncio.run(pipeline.process_item(record("2", FOX)))  # the same bytes under another id
    with pytest.raises(DuplicateItem, match="duplicate id"):
        asyncio.run(pipeline.process_item(record("1", OWL)))  # the same record id, another image
    owl = record("3", OWL)
    assert asyncio.run(pipeline.process_item(owl)) is owl
    assert subtree(crawler) == {
        "imagecrawl/dedupe/unique": 2,
        "imagecrawl/dedupe/dropped/sha256": 1,
        "imagecrawl/dedupe/dropped/id": 1,
    }


def test_near_duplicates_are_dropped_by_default(tmp_path: Path) -> None:
    crawler, pipeline = dedupe(tmp_path)
    asyncio.run(pipeline.process_item(record("1", FOX)))
    copy = record("2", FOX_JPEG)
    assert copy.image_sha256 != record("1", FOX).image_sha256
    with pytest.raises(DuplicateItem, match="near-duplicate of civitai:1"):
        asyncio.run(pipeline.process_item(copy))
    asyncio.run(pipeline.process_item(record("3", OWL)))  # another picture is no near-duplicate
    assert subtree(crawler) == {"imagecrawl/dedupe/unique": 2, "imagecrawl/dedupe/dropped/near": 1}


def test_near_policy_keep_marks_the_copy(tmp_path: Path) -> None:
    crawler, pipeline = dedupe(tmp_path, IMAGECRAWL_NEAR_POLICY="keep")
    asyncio.run(pipeline.process_item(record("1", FOX)))
    copy = asyncio.run(pipeline.process_item(record("2", FOX_JPEG)))
    assert copy.duplicate_of == "civitai:1"
    assert subtree(crawler) == {"imagecrawl/dedupe/unique": 2, "imagecrawl/dedupe/kept_near": 1}


def test_near_dedupe_off_keeps_reencoded_copies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        crawler, pipeline = dedupe(tmp_path, IMAGECRAWL_NEAR_DEDUPE_ENABLED=False)
    assert "only exact copies are dropped" in caplog.text
    asyncio.run(pipeline.process_item(record("1", FOX)))
    assert asyncio.run(pipeline.process_item(record("2", FOX_JPEG))).duplicate_of is None
    assert subtree(crawler) == {"imagecrawl/dedupe/unique": 2}


def drop_later(crawler: Crawler, item: PromptImage, exception: DropItem) -> None:
    """A pipeline after dedupe refuses ``item`` (Scrapy sends ``item_dropped``)."""
    asyncio.run(
        crawler.signals.send_catch_log_async(
            signals.item_dropped, item=item, exception=exception, response=None, spider=None
        )
    )


def test_a_record_a_later_pipeline_drops_is_released(tmp_path: Path) -> None:
    crawler, pipeline = dedupe(tmp_path, IMAGECRAWL_NEAR_DEDUPE_ENABLED=False)
    item = record("1", FOX)
    asyncio.run(pipeline.process_item(item))
    drop_later(crawler, record("2", FOX), DuplicateItem("dup"))  # a duplicate's own drop frees nothing
    with pytest.raises(DuplicateItem):
        asyncio.run(pipeline.process_item(record("1", FOX)))
    drop_later(crawler, item, DropItem("refused"))  # any other refusal does
    again = record("1", FOX)
    assert asyncio.run(pipeline.process_item(again)) is again
    assert crawler.stats.get_value("imagecrawl/dedupe/unique") == 2


def test_a_released_record_is_not_a_near_duplicate_of_itself(tmp_path: Path) -> None:
    crawler, pipeline = dedupe(tmp_path)
    item = record("1", FOX)
    asyncio.run(pipeline.process_item(item))
    drop_later(crawler, item, DropItem("refused"))
    again = record("1", FOX)
    assert asyncio.run(pipeline.process_item(again)) is again


def test_records_an_earlier_run_committed_are_dropped(tmp_path: Path) -> None:
    earlier = make_crawler(IMAGECRAWL_STORE=str(tmp_path))
    storage = crawl_storage(earlier)
    fox = record("1", FOX)
    storage.ledger.commit_shard(
        "civitai/date=2026-01-01/part-x-1.parquet", [(fox.image_sha256, fox.id, fox.image_phash, fox.image_url)]
    )
    storage.close()
    crawler, pipeline = dedupe(tmp_path)
    with pytest.raises(DuplicateItem):
        asyncio.run(pipeline.process_item(record("1", FOX)))
    with pytest.raises(DuplicateItem, match="near-duplicate"):
        asyncio.run(pipeline.process_item(record("9", FOX_JPEG)))  # the committed pHash is indexed too
    assert subtree(crawler) == {"imagecrawl/dedupe/dropped/sha256": 1, "imagecrawl/dedupe/dropped/near": 1}


def _later(seconds: float, decision: Any) -> Any:
    async def run() -> None:
        await asyncio.sleep(seconds)
        await decision

    return run()


def _row(item: PromptImage) -> tuple[str, str, None, str]:
    return (item.image_sha256, item.id, None, item.image_url)


def _later(seconds: float, decision: Any) -> Any:
    async def run() -> None:
        await asyncio.sleep(seconds)
        await decision

    return run()


def test_bytes_a_live_crawl_claimed_under_another_record_are_a_duplicate_at_once(tmp_path: Path) -> None:
    """Another crawl of the store that is still going claimed these bytes under its own record: it stores
    that record (or, if it fails, its own JOBDIR stays unclean and its next run fetches it again), so this
    record is a duplicate now, without waiting for that crawl's shard."""
    _, other = dedupe(tmp_path)
    crawler, pipeline = dedupe(tmp_path)
    asyncio.run(other.process_item(record("1", FOX)))
    started = time.monotonic()
    with pytest.raises(DuplicateItem, match="duplicate claimed"):
        asyncio.run(pipeline.process_item(record("7", FOX)))
    assert time.monotonic() - started < 5
    assert subtree(crawler) == {"imagecrawl/dedupe/dropped/claimed": 1}


def test_a_record_a_live_crawl_claimed_waits_for_that_crawl_to_decide(tmp_path: Path) -> None:
    """The same record, claimed by another crawl still going (both fetched it): its row is not stored yet and
    could still be lost with that crawl, so the item waits; dropped once that crawl commits it, kept once
    it gives it up, and after ``claim_wait_item_seconds`` without a decision dropped as unsettled."""
    _, other = dedupe(tmp_path)
    crawler, pipeline = dedupe(tmp_path, IMAGECRAWL_TUNING={"claim_wait_item_seconds": 3.0})
    bodies = {"1": FOX, "2": OWL, "3": encode(picture(3))}
    for source_id, body in bodies.items():
        asyncio.run(other.process_item(record(source_id, body)))
    fox, owl, hen = (record(source_id, body) for source_id, body in bodies.items())

    async def scenario() -> list[Any]:
        committed = _later(0.6, other.worker.commit_shard("k", [_row(fox)]))
        released = _later(0.6, other.worker.release(*_row(owl)[:2], owl.image_url))
        started = time.monotonic()
        results = await asyncio.gather(
            pipeline.process_item(fox), pipeline.process_item(owl), committed, released, return_exceptions=True
        )
        return [*results[:2], time.monotonic() - started]

    dropped, kept, waited = asyncio.run(scenario())
    assert isinstance(dropped, DuplicateItem) and "duplicate sha256" in str(dropped)
    assert kept is owl
    assert waited >= 0.6  # neither was decided before the other crawl decided
    assert subtree(crawler) == {
        "imagecrawl/dedupe/claim_wait/items": 2,
        "imagecrawl/dedupe/dropped/sha256": 1,
        "imagecrawl/dedupe/unique": 1,
    }
    with pytest.raises(DuplicateItem, match="duplicate unsettled"):
        asyncio.run(pipeline.process_item(hen))  # the other crawl neither commits nor gives it up
    assert unsettled(crawler.stats) == 1


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="IMAGECRAWL_NEAR_POLICY"):
        DedupePipeline.from_crawler(make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_NEAR_POLICY="merge"))
    with pytest.raises(NotConfigured, match="IMAGECRAWL_DEDUPE_ENABLED"):
        DedupePipeline.from_crawler(make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_DEDUPE_ENABLED=False))


def test_items_in_flight_together_are_claimed_in_one_batch_and_still_deduped(tmp_path: Path) -> None:
    """Many items at once (Scrapy's CONCURRENT_ITEMS): their lookups and claims go to the ledger's own
    thread in a few batches, not one transaction each, and an item equal to, or a near-duplicate of,
    one still in flight is dropped for the right reason."""
    crawler, pipeline = dedupe(tmp_path)
    worker = pipeline.worker
    assert worker is not None
    pictures = [encode(picture(100 + n)) for n in range(40)]
    items = [record(str(n), body) for n, body in enumerate(pictures)]
    same_bytes = record("same-bytes", pictures[0])
    same_id = record("1", OWL)
    near_copy = record("near", encode(picture(100), "JPEG"))

    async def run_all() -> list[Any]:
        coros = [pipeline.process_item(it) for it in [*items, same_bytes, same_id, near_copy]]
        return await asyncio.gather(*coros, return_exceptions=True)

    results = asyncio.run(run_all())
    assert results[:40] == items
    assert [type(r) for r in results[40:]] == [DuplicateItem] * 3
    stats = subtree(crawler)
    assert stats["imagecrawl/dedupe/unique"] == 40
    assert stats["imagecrawl/dedupe/dropped/sha256"] == 1
    assert stats["imagecrawl/dedupe/dropped/id"] == 1
    assert stats["imagecrawl/dedupe/dropped/near"] == 1
    assert worker.jobs == 81  # a lookup and a claim per kept item, and the near copy's lookup
    assert worker.batches <= 4  # all in flight at once: a lookup batch and a claim batch, not 80 round trips
    ledger = crawl_storage(crawler).ledger
    assert all(ledger.duplicate_reason(it.image_sha256, it.id) == "sha256" for it in items)


def test_two_crawls_racing_for_one_image_keep_it_once(tmp_path: Path) -> None:
    crawler_a, pipeline = dedupe(tmp_path)
    crawler_b, other = dedupe(tmp_path)  # a second crawl writing into the same store

    async def race() -> tuple[Any, Any]:
        # both look the record up before either has claimed it; the ledger decides who keeps it, and the
        # other waits until the winner's row is stored
        tasks = {
            asyncio.ensure_future(pipeline.process_item(record("1", FOX))): pipeline,
            asyncio.ensure_future(other.process_item(record("1", FOX))): other,
        }
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        [winner], [loser] = done, pending
        await asyncio.sleep(0.3)
        assert not loser.done()
        item = winner.result()
        await tasks[winner].worker.commit_shard("k", [_row(item)])
        return item, await asyncio.gather(loser, return_exceptions=True)

    kept, [dropped] = asyncio.run(race())
    assert isinstance(kept, PromptImage) and isinstance(dropped, DuplicateItem)
    assert "duplicate sha256" in str(dropped)
    stats = [subtree(crawler_a), subtree(crawler_b)]
    assert sorted(s.get("imagecrawl/dedupe/unique", 0) for s in stats) == [0, 1]
    assert sorted(s.get("imagecrawl/dedupe/dropped/sha256", 0) for s in stats) == [0, 1]
