"""The civitai spider against a real sandbox server (one server and one crawl subprocess per module)."""

from __future__ import annotations

import pytest

from tests.sandbox.catalog import Catalog, build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory
from tests.spiders_util import (
    Crawl,
    CrawlResult,
    check_fields,
    run_crawls,
    sha256_of,
)

pytestmark = pytest.mark.e2e

ITEMS, SEED = 60, 3
USER = build_catalog(ITEMS, SEED).entries("civitai")[0].username


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="civitai-sandbox")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


@pytest.fixture(scope="module")
def results(server: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrawlResult]:
    api = server.base_url.rstrip("/")
    return run_crawls(
        [
            Crawl("all", "civitai", {"api_url": api, "nsfw": "all", "limit": "25"}),
            Crawl("safe", "civitai", {"api_url": api, "limit": "7"}),
            Crawl("capped", "civitai", {"api_url": api, "nsfw": "all", "limit": "20", "max_items": "30"}),
            Crawl(
                "mature",
                "civitai",
                {"api_url": api, "nsfw": "mature", "limit": "200", "sort": "Most Comments"},
            ),
            Crawl("bad_arg", "civitai", {"api_url": api, "limit": "500"}),
            Crawl("user", "civitai", {"api_url": api, "nsfw": "all", "username": USER}),
        ],
        tmp_path_factory.mktemp("civitai-crawls"),
    )


def test_every_entry_once_with_catalog_values(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["all"]
    assert res.error is None
    entries = {e.id: e for e in catalog.entries("civitai")}
    by_id = {item["source_id"]: item for item in res.items}
    assert len(res.items) == len(entries) == ITEMS  # one item per entry: the spider does not dedupe
    assert set(by_id) == set(entries)
    for entry_id, entry in entries.items():
        item = by_id[entry_id]
        assert item["id"] == f"civitai:{entry_id}"
        assert item["source"] == "civitai"
        assert item["page_url"] == f"{res_api(res)}/images/{entry_id}"
        assert item["image_url"].endswith(entry.image_path)
        check_fields(item, catalog, entry, shown=entry.show_meta, origin="api")
        assert item["nsfw"] == entry.nsfw_level
        assert item["author_hash"] and entry.username not in str(item)
        assert item["image_sha256"] == item["image_bytes_sha256"] == sha256_of(catalog, entry)
        assert (item["width"], item["height"]) == (entry.width, entry.height)
    stats = res.stats
    assert stats["imagecrawl/pages/civitai/pages"] == 3  # 25 + 25 + 10, the last without a cursor
    assert stats["imagecrawl/media/images"] == ITEMS
    assert not any(k.startswith("imagecrawl/pages/errors/") for k in stats)


def res_api(res: CrawlResult) -> str:
    first = res.items[0]["image_url"]
    return first.split("/images/", 1)[0]


def test_default_nsfw_filter_is_safe(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["safe"]
    safe = {e.id for e in catalog.entries("civitai") if e.nsfw_level == "None"}
    assert 0 < len(safe) < ITEMS
    assert sorted(item["source_id"] for item in res.items) == sorted(safe)
    assert {item["nsfw"] for item in res.items} == {"None"}


def test_nsfw_level_and_sort(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["mature"]
    allowed = {e.id for e in catalog.entries("civitai") if e.nsfw_level in ("None", "Soft", "Mature")}
    assert sorted(item["source_id"] for item in res.items) == sorted(allowed)
    assert res.stats["imagecrawl/pages/civitai/pages"] == 1


def test_max_items(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["capped"]
    newest = [e.id for e in catalog.entries("civitai")][:30]  # sort=Newest = catalog order
    assert sorted(item["source_id"] for item in res.items) == sorted(newest)
    assert res.stats["imagecrawl/pages/civitai/pages"] == 2  # no third page once 30 were requested


def test_bad_argument_is_a_clear_error(results: dict[str, CrawlResult]) -> None:
    res = results["bad_arg"]
    assert res.error is not None and "limit= must be at most 200" in res.error
    assert res.items == []


def test_only_api_and_image_paths_requested(results: dict[str, CrawlResult], server: SandboxProcess) -> None:
    paths = {r["path"] for r in server.requests()}
    assert paths, "the request log is empty"
    site_files = ("/robots.txt", "/.well-known/tdmrep.json")  # robots.txt and TDMRep, once per site
    assert all(p in (*site_files, "/api/v1/images") or p.startswith("/images/civitai/") for p in paths)
    assert not any(r["path"].startswith("/private/") for r in server.requests())
    assert all(r["status"] == 200 for r in server.requests())


def test_username_filter(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    mine = {e.id for e in catalog.entries("civitai") if e.username.casefold() == USER.casefold()}
    assert mine and sorted(i["source_id"] for i in results["user"].items) == sorted(mine)
