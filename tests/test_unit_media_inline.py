"""Small images have their record built on the reactor thread; larger ones go to the media threads
(``IMAGECRAWL_TUNING['media_inline_max_bytes']``), and both give the same record."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scrapy import Request
from scrapy.http import Response

from imagecrawl.records import SourceHints
from tests.crawlers import make_crawler
from tests.sitespider import SiteSpider

URL = "https://s.example/a.png"
CLOCKS = ("crawled_at",)


def png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def media_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("imagecrawl-media"))


def parse(tmp_path: Path, body: bytes, **tuning: Any) -> tuple[list[Any], int]:
    """The records ``parse_image`` yields for ``body`` and how many media threads it started."""
    crawler = make_crawler(
        SiteSpider, IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_AUTHOR_SALT="s", IMAGECRAWL_TUNING=tuning
    )
    crawler._apply_settings()
    crawler.stats.open_spider()
    spider = SiteSpider.from_crawler(crawler, start="https://s.example/")
    response = Response(URL, body=body, request=Request(URL))
    before = media_threads()

    async def collect() -> tuple[list[Any], int]:
        records = [r async for r in spider.parse_image(response, SourceHints(source="site").to_meta())]
        return records, media_threads() - before

    try:
        return asyncio.run(collect())
    finally:
        spider._stop_media_pool()


def test_small_images_are_built_inline_large_ones_on_a_thread(tmp_path: Path) -> None:
    small, large = png(16, 1), png(160, 2)
    assert len(small) <= 16_384 < len(large)
    [rec], started = parse(tmp_path, small)
    assert started == 0 and rec.image_sha256
    [rec], started = parse(tmp_path, large)
    assert started == 1 and rec.image_phash is not None
    # 0: every record goes to the threads, even the smallest
    [_], started = parse(tmp_path, small, media_inline_max_bytes=0)
    assert started == 1
    # a threshold above the large image keeps it on the reactor thread
    [_], started = parse(tmp_path, large, media_inline_max_bytes=len(large))
    assert started == 0


def test_the_record_is_the_same_inline_and_threaded(tmp_path: Path) -> None:
    body = png(160, 3)
    [inline], started = parse(tmp_path / "a", body, media_inline_max_bytes=len(body))
    assert started == 0
    [threaded], started = parse(tmp_path / "b", body, media_inline_max_bytes=0)
    assert started == 1
    a, b = dataclasses.asdict(inline), dataclasses.asdict(threaded)
    for key in CLOCKS:  # when each was fetched: the only fields that may differ
        a.pop(key), b.pop(key)
    assert a == b
    assert inline.image_phash is not None and inline.image_sha256 == threaded.image_sha256
