"""A run that ended without committing or releasing its claims (killed: its claims stay in the ledger, its
spool in the outbox) while another run writes into the same store: the live run's items wait for those
claims instead of trusting them or ignoring them, adopt the ended run's outbox (its spooled row is committed
once, by the live run) and fetch again only what was lost with it (a claimed row that never reached the
spool). Real pipelines on a real ledger and outbox; the ended run is a real process, killed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from imagecrawl.dedupe.pipelines import DedupePipeline, DuplicateItem
from imagecrawl.storage.pipelines import ParquetPipeline
from tests.crawlers import make_crawler, stop_engine
from tests.test_unit_pipeline_parquet import record

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]

DOOMED = """
import asyncio, os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from imagecrawl.dedupe.pipelines import DedupePipeline
from imagecrawl.storage.pipelines import ParquetPipeline
from tests.crawlers import make_crawler
from tests.test_unit_pipeline_parquet import record

crawler = make_crawler(IMAGECRAWL_STORE={store!r}, IMAGECRAWL_TUNING={{"spool_batch_rows": 1}})
crawler.stats.open_spider()
parquet, dedupe = ParquetPipeline.from_crawler(crawler), DedupePipeline.from_crawler(crawler)

async def run():
    await parquet.open_spider()
    await dedupe.open_spider()
    spooled = record("civitai", 1)
    await parquet.process_item(await dedupe.process_item(spooled))  # claimed, and durable in the spool
    await dedupe.process_item(record("civitai", 2))  # claimed; its row never reaches the spool
    os._exit(0)  # killed: no close, no release

asyncio.run(run())
"""


def test_a_killed_runs_claims_wait_then_its_outbox_is_adopted_and_the_rest_fetched_again(tmp_path: Path) -> None:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_TUNING={"claim_wait_item_seconds": 20.0})
    crawler.stats.open_spider()
    parquet, dedupe = ParquetPipeline.from_crawler(crawler), DedupePipeline.from_crawler(crawler)
    spooled, lost = record("civitai", 1), record("civitai", 2)

    async def live() -> list[object]:
        await parquet.open_spider()  # before the other run's kill: nothing to recover at start
        await dedupe.open_spider()
        code = DOOMED.format(repo=str(REPO), store=str(tmp_path))
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        outbox = tmp_path / ".imagecrawl" / "state" / "outbox"
        assert len(list(outbox.glob("*.spool"))) == 1  # the killed run's spool, with one durable row
        tasks = [asyncio.ensure_future(dedupe.process_item(item)) for item in (spooled, lost)]
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in tasks)  # neither trusted nor ignored: both wait
        assert await parquet.adopt_orphans() == 1
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if not isinstance(result, BaseException):
                await parquet.process_item(result)
        await parquet.close_spider()
        return list(results)

    results = asyncio.run(live())
    stop_engine(crawler)
    # the spooled row was the killed run's: adopted and committed by this run, so this copy is a duplicate
    assert isinstance(results[0], DuplicateItem)
    # the claimed row that never reached the spool was lost with the killed run: kept now
    assert results[1] is lost
    ids = sorted(i for f in tmp_path.glob("*/date=*/*.parquet") for i in pq.read_table(f).column("id").to_pylist())
    assert ids == ["civitai:1", "civitai:2"]
    stats = crawler.stats.get_stats()
    assert stats["imagecrawl/store/orphans_adopted"] == 1
    assert stats["imagecrawl/dedupe/claim_wait/items"] == 2
    assert "imagecrawl/dedupe/claim_wait/unsettled" not in stats
