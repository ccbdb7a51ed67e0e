"""Walks and watermarks: where paging stops, when a run of known items is trusted, and that a watermark
moves only when the crawl finished, the walk completed and the Parquet pipeline committed every row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from imagecrawl.incremental import Incremental, begin_walk
from imagecrawl.storage.extensions import storage_owner
from imagecrawl.storage.stores import LocalStore
from imagecrawl.storage.watermarks import Mark, Walk, WatermarkBook, normalize_position
from tests.crawlers import make_crawler

T1, T2, T3 = "2026-01-01T00:00:01.000000Z", "2026-01-01T00:00:02.000000Z", "2026-01-01T00:00:03.000000Z"


def test_walk_stops_at_the_watermark() -> None:
    walk = Walk("civitai:q", Mark(T2, "x", None))
    walk.see(T3, known=False)
    assert walk.keep_paging() and walk.newest == T3
    walk.see(T2, known=True)
    assert not walk.keep_paging() and walk.stopped_by == "watermark"
    assert Walk("civitai:q", Mark(T2, "x", None), full=True).keep_paging()


def test_known_run_only_after_a_completed_walk() -> None:
    trusted = Walk("g:q", Mark(None, "x", None), known_run=2)
    untrusted = Walk("g:q", Mark(None, "x", "run-that-died"), known_run=2)
    first = Walk("g:q", None, known_run=2)
    for walk in (trusted, untrusted, first):
        walk.see(None, known=True)
        walk.see(None, known=False)
        walk.see(None, known=True)
        assert walk.keep_paging()
        walk.see(None, known=True)
    assert not trusted.keep_paging() and trusted.stopped_by == "known_run"
    assert untrusted.keep_paging() and first.keep_paging()


def test_positions_compare_in_time() -> None:
    assert normalize_position("2026-01-01T01:00:00+01:00") == "2026-01-01T00:00:00.000000Z"
    assert normalize_position("2025-12-31T23:59:59.5Z") < normalize_position("2026-01-01")  # type: ignore[operator]
    assert normalize_position("soon") is None and normalize_position(None) is None


def test_book_keeps_marks_and_never_moves_back(tmp_path: Path) -> None:
    book = WatermarkBook(LocalStore(tmp_path / "store"), tmp_path / "state")
    assert book.load() == {}
    book.update({"a": Mark(T3, "w", None)})
    book.update({"a": Mark(T1, "w2", None), "b": Mark(None, None, "run")})
    assert book.load() == {"a": Mark(T3, "w2", None), "b": Mark(None, None, "run")}
    (tmp_path / "state" / "watermarks.json").write_text("{broken")
    assert book.load() == {}


def incremental(tmp_path: Path) -> Incremental:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path / "store"), IMAGECRAWL_AUTHOR_SALT="s")
    crawler._apply_settings()
    began = asyncio.run(begin_walk(crawler, "civitai-images", "q"))
    assert began is not None
    return began[0]


def marks(tmp_path: Path) -> dict[str, dict[str, str | None]]:
    data = json.loads((tmp_path / "store" / ".imagecrawl" / "state" / "watermarks.json").read_text())
    return dict(data["marks"])


def test_watermark_moves_only_after_the_commit(tmp_path: Path) -> None:
    inc = incremental(tmp_path)
    (walk,) = inc.walks.values()
    assert marks(tmp_path)["civitai-images:q"]["started"] == inc.storage.run_id
    walk.see(T2, known=False)
    walk.finish()
    inc._closed("finished")  # no commit hook ran: rows may not be in the store
    assert marks(tmp_path)["civitai-images:q"]["position"] is None
    for hook in storage_owner(inc.crawler).commit_hooks:
        hook()
    inc._closed("shutdown")  # stopped by hand: images of the walk may never have been fetched
    assert marks(tmp_path)["civitai-images:q"]["position"] is None
    walk.failed = True
    inc._closed("finished")
    assert marks(tmp_path)["civitai-images:q"]["position"] is None
    walk.failed = False
    inc._closed("finished")
    saved = marks(tmp_path)["civitai-images:q"]
    assert saved["position"] == T2 and saved["started"] is None and saved["walked_at"]


def test_disabled(tmp_path: Path) -> None:
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_INCREMENTAL_ENABLED=False)
    crawler._apply_settings()
    assert asyncio.run(begin_walk(crawler, "civitai-images", "q")) is None
    assert not (tmp_path / ".imagecrawl" / "state" / "watermarks.json").exists()


def test_off_in_distributed_crawls(tmp_path: Path) -> None:
    # the add-on itself left out: it would connect to Redis; the spiders only see the setting
    crawler = make_crawler(IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_REDIS_URL="redis://127.0.0.1:1/0", ADDONS={})
    crawler._apply_settings()
    assert asyncio.run(begin_walk(crawler, "civitai-images", "q")) is None


def test_failed_downloads_keep_the_watermark(tmp_path: Path) -> None:
    from scrapy import Request
    from scrapy.exceptions import IgnoreRequest
    from twisted.python.failure import Failure

    from imagecrawl import meta

    inc = incremental(tmp_path)
    (walk,) = inc.walks.values()

    def fail(kind: str) -> None:
        failure = Failure(IgnoreRequest(kind))
        failure.request = Request("http://127.0.0.1:9/i.png", meta={meta.WALK: walk.key, meta.DOWNLOAD_ERROR: kind})  # type: ignore[attr-defined]
        inc.image_failed(failure)

    fail("maxsize")  # too large stays too large: not a reason to walk again
    assert not walk.failed
    fail("timeout")
    assert walk.failed
