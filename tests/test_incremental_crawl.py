"""Incremental runs against a sandbox that gains items between runs, counted from the server's log:
a second run after k new items fetches at most the pages that hold them plus one, downloads only the
new images, and a full walk stays one setting away; with an S3 store another machine (another state
folder) continues from the watermark kept in the bucket."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_store, run_crawl
from tests.sandbox.testing import SandboxProcess
from tests.servers import MotoS3, SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, HIDDEN, LIMIT = 50, 9, 10


def reveal(server: SandboxProcess, n: int) -> None:
    req = urllib.request.Request(server.url(f"_sandbox/reveal?n={n}"), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        json.load(resp)


def crawl(server: SandboxProcess, store: str, spider: str = "civitai", **settings: Any) -> tuple[dict[str, Any], list]:
    before = len(server.requests())
    args = {"api_url": server.base_url.rstrip("/"), "limit": LIMIT, "nsfw": "X"} if spider == "civitai" else {}
    if spider == "gallery":
        args = {"profile": "sandbox", "start_url": server.url("gallery/")}
    if spider == "sitemap":
        args = {"start_url": server.base_url}
    # near-duplicates off: which of two near ones is kept depends on the order (new ones come first)
    result = run_crawl(spider, store=store, args=args, settings={"IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False", **settings})
    return result.stats, server.requests()[before:]


def ids(store: str, env: dict[str, str] | None = None) -> set[str]:
    return set(read_store(store, ["id"], env=env).column("id").to_pylist())


def images(store: str) -> set[str]:
    """The distinct images a store holds (which of two records with the same bytes is kept depends on
    the order they came in; the set of images does not)."""
    return set(read_store(store, ["image_sha256"]).column("image_sha256").to_pylist())


def paths(requests: list[dict[str, Any]], prefix: str) -> list[str]:
    return [r["path"] for r in requests if r["path"].startswith(prefix)]


def test_civitai_second_run_fetches_only_the_new_pages(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    server = sandbox_factory.start(items=ITEMS, seed=4, extra_args=["--hidden", str(HIDDEN)], name="inc-civitai")
    store = str(tmp_path / "store")
    visible = ITEMS - HIDDEN
    stats, log = crawl(server, store)
    assert len(paths(log, "/api/v1/images")) == math.ceil(visible / LIMIT)
    assert len(paths(log, "/images/civitai/")) == visible and stats["imagecrawl/incremental/saved"] == 1
    mark = json.loads((tmp_path / "store" / ".imagecrawl" / "state" / "watermarks.json").read_text())["marks"]
    assert len(mark) == 1 and next(iter(mark.values()))["started"] is None
    fetched = set(paths(log, "/images/civitai/"))

    for k in (3, 0, 1):
        reveal(server, k)
        visible += k
        stats, log = crawl(server, store)
        pages = len(paths(log, "/api/v1/images"))
        assert pages <= math.ceil(k / LIMIT) + 1, (k, pages)
        # only the new images are downloaded (and again, on the pages read, the duplicates dedupe dropped)
        new = set(paths(log, "/images/civitai/"))
        assert len(new - fetched) == k and len(new) <= k + LIMIT
        fetched |= new
        assert stats.get("imagecrawl/incremental/stopped/watermark") == 1

    reveal(server, HIDDEN)
    crawl(server, store)
    fresh = str(tmp_path / "fresh")
    stats, log = crawl(server, fresh)
    assert images(store) == images(fresh)  # the incremental runs together hold what one full walk holds
    stats, log = crawl(server, store, IMAGECRAWL_INCREMENTAL_FULL_WALK="True")
    assert len(paths(log, "/api/v1/images")) == math.ceil(ITEMS / LIMIT)
    assert images(store) == images(fresh)


def test_s3_watermark_serves_another_machine(sandbox_factory: SandboxFactory, moto_s3: MotoS3, tmp_path: Path) -> None:
    server = sandbox_factory.start(items=30, seed=6, extra_args=["--hidden", "4"], name="inc-s3")
    store = f"s3://{moto_s3.create_bucket('incremental-watermarks')}/data"
    first = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(tmp_path / "machine-a")}
    crawl(server, store, **first)
    reveal(server, 2)
    other = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(tmp_path / "machine-b")}
    stats, log = crawl(server, store, **other)
    assert len(paths(log, "/api/v1/images")) <= 2
    assert stats.get("imagecrawl/incremental/stopped/watermark") == 1
    assert len(paths(log, "/images/civitai/")) == 2 and len(ids(store, moto_s3.env)) >= 2


@pytest.mark.parametrize("spider", ["gallery", "sitemap"])
def test_gallery_and_sitemap_second_run(sandbox_factory: SandboxFactory, tmp_path: Path, spider: str) -> None:
    server = sandbox_factory.start(
        items=ITEMS, seed=4, extra_args=["--hidden", str(HIDDEN), "--page-size", str(LIMIT)], name=f"inc-{spider}"
    )
    store = str(tmp_path / "store")

    def listing(log: list[dict[str, Any]]) -> list[str]:
        if spider == "gallery":
            return [f"{r['path']}?{r['query']}" for r in log if r["path"] == "/gallery/"]
        return paths(log, "/sitemaps/images-")

    settings = {"IMAGECRAWL_TUNING": {"incremental_known_run": "3"}}
    stats, log = crawl(server, store, spider, **settings)
    assert len(listing(log)) == math.ceil((ITEMS - HIDDEN) / LIMIT)
    assert stats["imagecrawl/incremental/saved"] == 1
    fetched = set(paths(log, "/images/gallery/"))
    for k in (3, 0):
        reveal(server, k)
        stats, log = crawl(server, store, spider, **settings)
        assert len(listing(log)) <= math.ceil(k / LIMIT) + 1, (k, listing(log))
        new = set(paths(log, "/images/gallery/"))
        assert len(new - fetched) == k and len(new) <= k + LIMIT
        fetched |= new
        assert stats["imagecrawl/incremental/saved"] == 1
    if spider == "sitemap":  # the image sitemaps whose lastmod did not move are not fetched again
        assert stats["imagecrawl/incremental/skipped_sitemaps"] >= math.ceil((ITEMS - HIDDEN) / LIMIT) - 1
    reveal(server, HIDDEN)
    crawl(server, store, spider, **settings)
    fresh = str(tmp_path / "fresh")
    crawl(server, fresh, spider)
    assert images(store) == images(fresh)


def test_a_killed_walk_moves_no_watermark(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Run 2 dies (kill -9) after its first shard of new items is committed: the new rows sit at the
    top of the listing, the ones it never reached below them. Run 3 must not stop on the known run at
    the top: it walks down to run 1's watermark and the store ends as one full walk's."""
    server = sandbox_factory.start(items=60, seed=8, extra_args=["--hidden", "30"], name="inc-kill")
    store = str(tmp_path / "store")
    settings = {"IMAGECRAWL_SHARD_MAX_ROWS": "4", "IMAGECRAWL_TUNING": {"incremental_known_run": "2"}}
    crawl(server, store, **settings)
    marks_path = tmp_path / "store" / ".imagecrawl" / "state" / "watermarks.json"
    before = json.loads(marks_path.read_text())["marks"]
    reveal(server, 30)
    killed = run_crawl(
        "civitai",
        store=store,
        args={"api_url": server.base_url.rstrip("/"), "limit": LIMIT, "nsfw": "X"},
        # one request at a time, first in first out: the rows committed before the kill are the top
        # of the listing, the run of known items a careless next run would stop on
        settings={
            "IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False",
            "CONCURRENT_REQUESTS": "1",
            "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
            **settings,
        },
        env={"IMAGECRAWL_FAILPOINTS": "shard.commit.after:1"},
        check=False,
    )
    assert killed.returncode != 0 and "failpoint shard.commit.after reached" in killed.stderr
    after = json.loads(marks_path.read_text())["marks"]
    (key,) = before
    assert after[key]["position"] == before[key]["position"] and after[key]["started"]
    committed = len(ids(store))
    stats, log = crawl(server, store, **settings)
    assert "imagecrawl/incremental/stopped/known_run" not in stats
    assert len(paths(log, "/api/v1/images")) >= 3  # the 30 new items span 3 pages of 10
    fresh = str(tmp_path / "fresh")
    crawl(server, fresh, **settings)
    assert len(ids(store)) > committed and images(store) == images(fresh)
