"""Pillow's per-chunk DEBUG records are not made during a crawl (imagecrawl.addon.quiet_image_decoders),
unless a level was set for its loggers."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.crawlers import make_crawler


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def pil_logger() -> Iterator[tuple[logging.Logger, Collect]]:
    pil = logging.getLogger("PIL")
    level = pil.level
    handler = Collect()
    pil.addHandler(handler)
    pil.setLevel(logging.NOTSET)
    try:
        yield pil, handler
    finally:
        pil.removeHandler(handler)
        pil.setLevel(level)


def test_pillow_chunk_records_are_not_made_in_a_crawl(pil_logger: tuple[logging.Logger, Collect]) -> None:
    pil, handler = pil_logger
    root_level = logging.root.level
    logging.root.setLevel(logging.NOTSET)  # as Scrapy leaves it: every record of every level is made
    try:
        Image.open(io.BytesIO(_png())).load()
        assert any(r.name.startswith("PIL.") and r.levelno == logging.DEBUG for r in handler.records)
        handler.records.clear()
        make_crawler()  # the add-on runs
        assert pil.level == logging.INFO
        Image.open(io.BytesIO(_png())).load()
        assert handler.records == []
    finally:
        logging.root.setLevel(root_level)


def test_a_level_set_for_pillow_is_kept(pil_logger: tuple[logging.Logger, Collect]) -> None:
    pil, handler = pil_logger
    pil.setLevel(logging.DEBUG)
    make_crawler()
    assert pil.level == logging.DEBUG
    Image.open(io.BytesIO(_png())).load()
    assert any(r.name.startswith("PIL.") for r in handler.records)
