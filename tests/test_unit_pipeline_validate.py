"""The validate pipeline on records built as the spiders build them (``build_record`` from real PNG
bytes): well-formed records pass untouched, records missing a required field or the image bytes are
dropped with a counted reason, over-long text is cut and a non-finite cfg_scale cleared."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import pytest
from itemadapter import ItemAdapter
from PIL import Image
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.items import PromptImage
from imagecrawl.pipelines import MAX_TEXT, REQUIRED, ValidatePipeline
from imagecrawl.records import SourceHints, build_record
from tests.crawlers import make_crawler


def png(color: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, "PNG")
    return out.getvalue()


def record(**hints: Any) -> PromptImage:
    return build_record(
        hints=SourceHints(**{"source": "civitai", "source_id": "7", "prompt": "a red fox", **hints}),
        image_url="https://img.example/7.png",
        body=png(),
        salt=b"salt",
    )


def validate() -> tuple[Crawler, ValidatePipeline]:
    crawler = make_crawler()
    crawler.stats.open_spider()
    return crawler, ValidatePipeline.from_crawler(crawler)


def subtree(crawler: Crawler) -> dict[str, Any]:
    return {k: v for k, v in crawler.stats.get_stats().items() if k.startswith("imagecrawl/validate")}


def test_a_well_formed_record_passes_untouched() -> None:
    crawler, pipeline = validate()
    item = record(cfg_scale=7.5)
    before = dataclasses.asdict(item)
    assert pipeline.process_item(item) is item
    assert dataclasses.asdict(item) == before
    assert (item.id, item.width, item.height, item.image_format) == ("civitai:7", 32, 24, "PNG")
    assert subtree(crawler) == {}


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_field_is_dropped_with_its_reason(name: str) -> None:
    crawler, pipeline = validate()
    item = record()
    setattr(item, name, None if name == "crawled_at" else "")
    with pytest.raises(DropItem, match=f"missing_{name}"):
        pipeline.process_item(item)
    assert subtree(crawler) == {f"imagecrawl/validate/dropped/missing_{name}": 1}


@pytest.mark.parametrize("image", [None, {}, {"bytes": b"", "path": "x.png"}, "not-a-dict"])
def test_a_record_without_image_bytes_is_dropped(image: Any) -> None:
    crawler, pipeline = validate()
    item = record()
    item.image = image
    with pytest.raises(DropItem, match="missing_image"):
        pipeline.process_item(item)
    assert subtree(crawler) == {"imagecrawl/validate/dropped/missing_image": 1}


def test_dict_items_are_read_through_itemadapter() -> None:
    crawler, pipeline = validate()
    item = ItemAdapter(record()).asdict()
    assert pipeline.process_item(item) is item
    del item["image_sha256"]
    with pytest.raises(DropItem):
        pipeline.process_item(item)
    assert subtree(crawler) == {"imagecrawl/validate/dropped/missing_image_sha256": 1}


def test_over_long_text_is_cut_and_counted() -> None:
    crawler, pipeline = validate()
    item = record(prompt="p" * (MAX_TEXT["prompt"] + 10), negative_prompt="short")
    pipeline.process_item(item)
    assert item.prompt == "p" * MAX_TEXT["prompt"]
    assert item.negative_prompt == "short"
    assert subtree(crawler) == {"imagecrawl/validate/truncated/prompt": 1}


@pytest.mark.parametrize("cfg", [math.nan, math.inf, "7"])
def test_a_non_finite_or_non_numeric_cfg_scale_is_cleared(cfg: Any) -> None:
    crawler, pipeline = validate()
    item = record()
    item.cfg_scale = cfg
    assert pipeline.process_item(item) is item
    assert item.cfg_scale is None
    assert subtree(crawler) == {"imagecrawl/validate/cleared/cfg_scale": 1}


def test_switched_off() -> None:
    with pytest.raises(NotConfigured, match="validate_enabled"):
        ValidatePipeline.from_crawler(make_crawler(IMAGECRAWL_TUNING={"validate_enabled": False}))
