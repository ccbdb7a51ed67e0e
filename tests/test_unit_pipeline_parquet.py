"""The Parquet pipeline on a local store in a temporary folder, driven in one asyncio loop (open, items,
close) as the engine drives it: shards appear under the Hive layout only once committed, pyarrow reads
back exactly the rows written (schema, order, image bytes), shards roll at IMAGECRAWL_SHARD_MAX_ROWS,
and the commit reaches the dedupe ledger, so the next crawl of the store drops what this one stored."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl.dedupe.pipelines import DedupePipeline, DuplicateItem
from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.items import PromptImage
from imagecrawl.records import SourceHints, build_record
from imagecrawl.schema import COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from imagecrawl.storage.extensions import crawl_storage
from imagecrawl.storage.pipelines import ParquetPipeline
from tests.crawlers import make_crawler, stop_engine

DAY = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def png(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16 + n, 12), (n * 40 % 256, 90, 200)).save(out, "PNG")
    return out.getvalue()


def record(source: str, n: int) -> PromptImage:
    return build_record(
        hints=SourceHints(source=source, source_id=str(n), prompt=f"prompt {n}", seed=n, cfg_scale=7.0),
        image_url=f"https://img.example/{source}/{n}.png",
        body=png(n),
        salt=b"salt",
        now=DAY,
    )


def parquet(store: Path, **overrides: Any) -> tuple[Crawler, ParquetPipeline]:
    crawler = make_crawler(IMAGECRAWL_STORE=str(store), **overrides)
    crawler.stats.open_spider()
    return crawler, ParquetPipeline.from_crawler(crawler)


def run(pipeline: ParquetPipeline, items: list[PromptImage], check_before_close: Any = None) -> None:
    async def crawl() -> None:
        await pipeline.open_spider()
        for item in items:
            assert await pipeline.process_item(item) is item
        if check_before_close is not None:
            check_before_close()
        await pipeline.close_spider()

    asyncio.run(crawl())
    stop_engine(pipeline.crawler)


def shards(store: Path) -> list[Path]:
    return sorted(store.glob("*/date=*/*.parquet"))


def subtree(crawler: Crawler, *prefixes: str) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith(prefixes)}


def test_rows_are_written_committed_and_read_back(tmp_path: Path) -> None:
    crawler, pipeline = parquet(tmp_path)
    items = [record("civitai", 1), record("civitai", 2), record("lexica", 3)]
    run(pipeline, items, check_before_close=lambda: assert_nothing_visible(tmp_path))
    files = shards(tmp_path)
    run_id = pipeline.storage.run_id
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"civitai/date=2026-03-04/part-{run_id}-00001.parquet",
        f"lexica/date=2026-03-04/part-{run_id}-00002.parquet",
    ]
    civitai = pq.read_table(files[0])
    assert civitai.schema.names == list(COLUMNS) and COLUMNS[-1] == "image"
    assert civitai.schema.metadata[SCHEMA_VERSION_KEY] == SCHEMA_VERSION.encode()
    rows = civitai.to_pylist()
    assert [r["id"] for r in rows] == ["civitai:1", "civitai:2"]
    for row, item in zip(rows, items, strict=False):
        assert row["image"]["bytes"] == item.image["bytes"]  # type: ignore[index]
        assert (row["prompt"], row["seed"], row["width"], row["image_sha256"]) == (
            item.prompt,
            item.seed,
            item.width,
            item.image_sha256,
        )
        assert row["crawled_at"] == DAY
    assert pq.read_table(files[1]).column("id").to_pylist() == ["lexica:3"]
    assert subtree(crawler, "imagecrawl/parquet", "imagecrawl/store", "imagecrawl/exit_code") == {
        "imagecrawl/parquet/rows": 3,
        "imagecrawl/parquet/shards_written": 2,
        "imagecrawl/store/shards_committed": 2,
        "imagecrawl/store/rows_committed": 3,
        "imagecrawl/store/outbox_pending": 0,
    }
    outbox = tmp_path / ".imagecrawl" / "state" / "outbox"
    assert [p.name for p in outbox.iterdir() if p.name != ".recover.lock"] == []  # everything handed over


def assert_nothing_visible(store: Path) -> None:
    """Before close nothing partial is visible under the store's root."""
    assert shards(store) == []


def test_shards_roll_at_max_rows(tmp_path: Path) -> None:
    crawler, pipeline = parquet(tmp_path, IMAGECRAWL_SHARD_MAX_ROWS=2)
    run(pipeline, [record("civitai", n) for n in range(5)])
    files = shards(tmp_path)
    assert [pq.read_metadata(f).num_rows for f in files] == [2, 2, 1]
    ids = [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    assert ids == [f"civitai:{n}" for n in range(5)]
    assert crawler.stats.get_value("imagecrawl/parquet/shards_written") == 3


def test_a_crawl_without_items_writes_nothing(tmp_path: Path) -> None:
    crawler, pipeline = parquet(tmp_path)
    run(pipeline, [])
    assert shards(tmp_path) == []
    assert subtree(crawler, "imagecrawl/parquet", "imagecrawl/store") == {"imagecrawl/store/outbox_pending": 0}


def test_committed_rows_reach_the_ledger_and_the_next_crawl_drops_them(tmp_path: Path) -> None:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path))
    crawler.stats.open_spider()
    dedupe, pipeline = DedupePipeline.from_crawler(crawler), ParquetPipeline.from_crawler(crawler)
    asyncio.run(dedupe.open_spider())
    items = [asyncio.run(dedupe.process_item(record("civitai", n))) for n in (1, 2)]
    run(pipeline, items)
    ledger = Ledger(tmp_path / ".imagecrawl" / "state" / "ledger.sqlite3")
    assert ledger.count() == 2 and ledger.has_id("civitai:1") and ledger.has_url("https://img.example/civitai/2.png")
    assert len(ledger.known_shards()) == 1
    ledger.close()

    later = make_crawler(IMAGECRAWL_STORE=str(tmp_path))
    later.stats.open_spider()
    again = DedupePipeline.from_crawler(later)
    asyncio.run(again.open_spider())
    with pytest.raises(DuplicateItem):
        asyncio.run(again.process_item(record("civitai", 1)))
    assert asyncio.run(again.process_item(fresh := record("civitai", 3))) is fresh


def test_a_shard_the_ledger_missed_is_reconciled_at_open(tmp_path: Path) -> None:
    _, pipeline = parquet(tmp_path)
    run(pipeline, [record("civitai", 1)])
    # as if the run died between store and ledger commit
    (tmp_path / ".imagecrawl" / "state" / "ledger.sqlite3").unlink()
    for extra in (tmp_path / ".imagecrawl" / "state").glob("ledger.sqlite3-*"):
        extra.unlink()
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path))
    crawler.stats.open_spider()
    dedupe = DedupePipeline.from_crawler(crawler)
    asyncio.run(dedupe.open_spider())
    assert crawler.stats.get_value("imagecrawl/dedupe/reconciled_shards") == 1
    with pytest.raises(DuplicateItem):
        asyncio.run(dedupe.process_item(record("civitai", 1)))


def test_switched_off(tmp_path: Path) -> None:
    with pytest.raises(NotConfigured, match="IMAGECRAWL_PARQUET_ENABLED"):
        ParquetPipeline.from_crawler(make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_PARQUET_ENABLED=False))


def test_a_start_recovers_only_what_ended_runs_left_in_a_shared_outbox(tmp_path: Path) -> None:
    """Two runs into one store share its outbox: the second leaves the first's open spool alone while
    the first goes on, and salvages a spool whose run has ended."""
    spooled = {"IMAGECRAWL_TUNING": {"spool_batch_rows": 1, "spool_flush_seconds": 0}}
    _, first = parquet(tmp_path, **spooled)
    second_crawler, second = parquet(tmp_path, **spooled)
    outbox = tmp_path / ".imagecrawl" / "state" / "outbox"

    async def crawl() -> None:
        await first.open_spider()
        for n in (1, 2):
            await first.process_item(record("civitai", n))
        spools = sorted(p.name for p in outbox.glob("*.spool"))
        assert len(spools) == 1
        await second.open_spider()  # the first is still going: its spool is its own
        assert sorted(p.name for p in outbox.glob("*.spool")) == spools
        await second.process_item(record("lexica", 3))
        await first.close_spider()
        await second.close_spider()

    asyncio.run(crawl())
    stop_engine(first.crawler)
    stop_engine(second_crawler)
    ids = sorted(i for f in shards(tmp_path) for i in pq.read_table(f).column("id").to_pylist())
    assert ids == ["civitai:1", "civitai:2", "lexica:3"]
    assert subtree(second_crawler, "imagecrawl/store/recover") == {"imagecrawl/store/recover_skipped_live": 1}

    # a run that ended without closing its shard (its ledger owner is gone): the next start salvages it
    dead_crawler, dead = parquet(tmp_path, **spooled)

    async def die() -> None:
        await dead.open_spider()
        await dead.process_item(record("gallery", 4))

    asyncio.run(die())
    crawl_storage(dead_crawler).ledger.close()
    third_crawler, third = parquet(tmp_path, **spooled)
    run(third, [])
    ids = sorted(i for f in shards(tmp_path) for i in pq.read_table(f).column("id").to_pylist())
    assert ids == ["civitai:1", "civitai:2", "gallery:4", "lexica:3"]
    assert subtree(third_crawler, "imagecrawl/store/spooled") == {"imagecrawl/store/spooled_rows_recovered": 1}
    assert [p.name for p in outbox.iterdir() if not p.name.startswith(".")] == []
