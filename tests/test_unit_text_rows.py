"""Text and numbers that cannot be stored as given: every string of a record is valid UTF-8 once it is
built (lone surrogates replaced and counted, whichever source they came from), typed columns never hold a
value they cannot (``cfg_scale`` 1e308 is null, not inf), and a row the shard writer still cannot take is
left out alone, counted, never its batch; the next run's outbox is usable."""

from __future__ import annotations

import asyncio
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from imagecrawl.items import PromptImage
from imagecrawl.metadata.cli import main as metadata_main
from imagecrawl.records import FLOAT32_MAX, SourceHints, build_record, conform
from imagecrawl.storage import layout
from imagecrawl.storage.pipelines import ParquetPipeline
from imagecrawl.values import repair_text
from tests.crawlers import make_crawler

DAY = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def png(n: int, chunks: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, text in (chunks or {}).items():
        info.add(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
    out = io.BytesIO()
    Image.new("RGB", (16 + n, 12), (n * 40 % 256, 90, 200)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def comfy_png(text: str) -> bytes:
    graph = {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 5, "steps": 20, "cfg": 7, "sampler_name": "euler", "positive": ["6", 0]},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text}},
    }
    return png(1, {"prompt": json.dumps(graph)})  # ASCII JSON: "\\ud83d" is an escape, valid JSON


@pytest.mark.parametrize(
    ("text", "expected", "replaced"),
    [
        ("plain", "plain", 0),
        ("bad \udc80 surrogate", "bad \ufffd surrogate", 1),
        ("a cat \ud83d", "a cat \ufffd", 1),
        ("pair \ud83d\ude00 joined", "pair \U0001f600 joined", 1),  # changed, so counted
        ("\udc80\udc81", "\ufffd\ufffd", 2),
        ("already \ufffd", "already \ufffd", 0),
    ],
)
def test_repair_text(text: str, expected: str, replaced: int) -> None:
    assert repair_text(text) == (expected, replaced)
    expected.encode("utf-8")


def test_a_record_from_every_source_is_valid_utf8_and_counted() -> None:
    fixes: list[str] = []
    record = build_record(
        hints=SourceHints(
            source="civitai",
            source_id="7\udc80",
            page_url="http://127.0.0.1/p\udc80",
            prompt="bad \udc80 surrogate",
            negative_prompt="neg \ud800",
            model="m\udfff",
            sampler="s\ud83d",
            author="who\udc80",
            params={"k\udc80": "v\ud83d", "ok": 1},
        ),
        image_url="http://127.0.0.1/x.png",
        body=png(3),
        salt=b"salt",
        now=DAY,
        on_fix=fixes.append,
    )
    for name in ("id", "source_id", "page_url", "prompt", "negative_prompt", "model", "sampler", "params"):
        value = getattr(record, name)
        value.encode("utf-8")
        assert "\ufffd" in value, name
    assert json.loads(record.params or "") == {"k\ufffd": "v\ufffd", "ok": 1}
    assert sorted(fixes) == sorted(
        f"text_replaced/{n}"
        for n in ("id", "source_id", "page_url", "prompt", "negative_prompt", "model", "sampler", "params")
    )


def test_a_file_chunk_with_a_lone_surrogate_gives_a_record() -> None:
    fixes: list[str] = []
    record = build_record(
        hints=SourceHints(source="urls"),
        image_url="http://h/x.png",
        body=comfy_png("a cat \ud83d"),
        salt=b"s",
        on_fix=fixes.append,
    )
    assert record.prompt == "a cat \ufffd" and record.metadata_source == "png:comfyui"
    assert fixes == ["text_replaced/prompt"]


@pytest.mark.parametrize(
    ("column", "given", "raw"),
    [
        ("cfg_scale", 1e308, "1e+308"),
        ("cfg_scale", "1e308", "1e+308"),
        ("cfg_scale", -1e39, "-1e+39"),
        ("cfg_scale", "inf", "inf"),
        ("cfg_scale", 10**400, None),
        ("seed", 2**64, str(2**64)),
        ("seed", -(2**63) - 1, str(-(2**63) - 1)),
        ("steps", 2**31, str(2**31)),
        ("steps", -1, "-1"),
    ],
)
def test_out_of_range_numbers_are_null_counted_and_kept_in_params(column: str, given: Any, raw: str | None) -> None:
    fixes: list[str] = []
    record = build_record(
        hints=SourceHints(source="civitai", source_id="1", prompt="p", **{column: given}),
        image_url="http://h/x.png",
        body=png(2),
        salt=b"s",
        on_fix=fixes.append,
    )
    assert getattr(record, column) is None
    assert fixes == [f"out_of_range/{column}"]
    params = json.loads(record.params or "{}")
    assert column in params
    if raw is not None:
        assert params[column] == raw


def test_in_range_edges_are_kept() -> None:
    record = build_record(
        hints=SourceHints(
            source="c", source_id="1", prompt="p", cfg_scale=FLOAT32_MAX, seed=2**63 - 1, steps=2**31 - 1
        ),
        image_url="http://h/x.png",
        body=png(2),
        salt=b"s",
    )
    assert (record.cfg_scale, record.seed, record.steps) == (FLOAT32_MAX, 2**63 - 1, 2**31 - 1)
    assert record.params is None


def test_conform_on_an_item_built_elsewhere() -> None:
    item = PromptImage(
        id="x",
        source="s",
        image_url="u",
        image_sha256="0" * 64,
        crawled_at=DAY,
        cfg_scale=math.nan,
        width=-1,
        prompt="p\udc80",
    )
    assert conform(item) == ["out_of_range/cfg_scale", "out_of_range/width", "text_replaced/prompt"]
    assert (item.cfg_scale, item.width, item.prompt) == (None, None, "p\ufffd")


# --- the shard writer ---------------------------------------------------------------------------


def good(n: int) -> PromptImage:
    return build_record(
        hints=SourceHints(source="civitai", source_id=str(n), prompt=f"prompt {n}"),
        image_url=f"http://127.0.0.1/{n}.png",
        body=png(n),
        salt=b"salt",
        now=DAY,
    )


def raw_bad(n: int) -> PromptImage:
    """A row that bypassed the record builder: a lone surrogate and an int the column cannot hold."""
    item = good(n)
    if n % 2:
        item.prompt = "bad \udc80 surrogate"
    else:
        item.steps = 2**40
    return item


def run_pipeline(store: Path, items: list[PromptImage], **settings: Any) -> Any:
    crawler = make_crawler(IMAGECRAWL_STORE=str(store), IMAGECRAWL_TUNING={"spool_batch_rows": 4}, **settings)
    crawler.stats.open_spider()
    pipeline = ParquetPipeline.from_crawler(crawler)

    async def crawl() -> None:
        await pipeline.open_spider()
        for item in items:
            await pipeline.process_item(item)
        await pipeline.close_spider()

    asyncio.run(crawl())
    return crawler.stats.get_stats()


def stored_ids(store: Path) -> list[str]:
    files = [f for f in store.rglob("*.parquet") if layout.META_DIR not in f.parts]
    return sorted(i for f in files for i in pq.read_table(f).column("id").to_pylist())


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_row_that_cannot_be_written_is_dropped_alone(tmp_path: Path, bad_first: bool) -> None:
    items = [good(n) for n in range(1, 11)]
    bad = [raw_bad(11), raw_bad(12)]
    items = bad + items if bad_first else items[:5] + bad + items[5:]
    stats = run_pipeline(tmp_path, items)
    assert stored_ids(tmp_path) == sorted(f"civitai:{n}" for n in range(1, 11))
    assert stats["imagecrawl/parquet/rows_dropped/unencodable"] == 1
    assert stats["imagecrawl/parquet/rows_dropped/out_of_range"] == 1
    assert stats["imagecrawl/store/rows_committed"] == 10
    assert "imagecrawl/exit_code" not in stats and "imagecrawl/store/write_errors" not in stats
    # the next run finds a usable outbox and stores what it is given
    again = run_pipeline(tmp_path, [good(20)])
    assert "imagecrawl/exit_code" not in again
    assert "civitai:20" in stored_ids(tmp_path)


def test_a_shard_of_only_unwritable_rows_leaves_nothing_behind(tmp_path: Path) -> None:
    stats = run_pipeline(tmp_path, [raw_bad(1), raw_bad(3)])
    assert stats["imagecrawl/parquet/rows_dropped/unencodable"] == 2
    assert "imagecrawl/exit_code" not in stats
    outbox = tmp_path / layout.STATE_DIR / "outbox"
    assert [p.name for p in outbox.iterdir() if p.name != ".recover.lock"] == []
    assert "imagecrawl/exit_code" not in run_pipeline(tmp_path, [good(5)])
    assert stored_ids(tmp_path) == ["civitai:5"]


def test_metadata_cli_prints_a_lone_surrogate_as_replacement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "comfy.png"
    path.write_bytes(comfy_png("a cat \ud83d"))
    assert metadata_main([str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "a cat \ufffd" and out["metadata_source"] == "png:comfyui"


def test_closing_while_the_age_loop_holds_a_batch_loses_no_row(tmp_path: Path) -> None:
    """The age loop flushes every few milliseconds while rows keep coming; the crawl closes right after
    the last row, often while the loop holds a batch it took: every row still lands."""
    for attempt in range(6):
        store = tmp_path / f"s{attempt}"
        crawler = make_crawler(
            IMAGECRAWL_STORE=str(store), IMAGECRAWL_TUNING={"spool_batch_rows": 1000, "spool_flush_seconds": 0.001}
        )
        crawler.stats.open_spider()
        pipeline = ParquetPipeline.from_crawler(crawler)
        items = [good(n) for n in range(1, 41)]

        async def crawl(pipeline: ParquetPipeline = pipeline, items: list[PromptImage] = items) -> None:
            await pipeline.open_spider()
            pipeline._engine_started()
            for item in items:
                await pipeline.process_item(item)
                await asyncio.sleep(0.0005)
            await pipeline.close_spider()

        asyncio.run(crawl())
        assert stored_ids(store) == sorted(f"civitai:{n}" for n in range(1, 41)), attempt
