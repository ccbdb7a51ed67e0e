"""The gallery spider (bundled ``sandbox`` profile, and a custom XPath profile) against a real sandbox."""

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

ITEMS, SEED = 60, 7  # 24 cards per listing page: pages of 24, 24, 12

XPATH_PROFILE = """
name = "sandbox-xpath"
source = "gallery2"
[listing]
item_links = "xpath://div[@class='grid']/a[@class='card']/@href"
next_page = "xpath://a[@rel='next']/@href"
[detail]
image = "xpath://figure[@class='artwork']/img/@src"
prompt = "xpath://p[@class='prompt']"
params_names = "css:dl.params dt"
params_values = "css:dl.params dd"
"""


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="gallery-sandbox")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


@pytest.fixture(scope="module")
def results(server: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrawlResult]:
    tmp = tmp_path_factory.mktemp("gallery-crawls")
    profile = tmp / "xpath.toml"
    profile.write_text(XPATH_PROFILE)
    start = server.url("gallery/")
    return run_crawls(
        [
            Crawl("all", "gallery", {"profile": "sandbox", "start_url": start}),
            Crawl("two_pages", "gallery", {"profile": "sandbox", "start_url": start, "max_pages": "2"}),
            Crawl("ten", "gallery", {"profile": "sandbox", "start_url": start, "max_items": "10"}),
            Crawl("xpath", "gallery", {"start_url": start, "profile": str(profile)}),
            Crawl("bad_profile", "gallery", {"start_url": start, "profile": "no-such-profile"}),
        ],
        tmp,
    )


def test_every_entry_once_with_catalog_values(
    results: dict[str, CrawlResult], catalog: Catalog, server: SandboxProcess
) -> None:
    res = results["all"]
    assert res.error is None
    entries = {e.id: e for e in catalog.entries("gallery")}
    by_id = {item["source_id"]: item for item in res.items}
    assert len(res.items) == ITEMS and set(by_id) == set(entries)
    for entry_id, entry in entries.items():
        item = by_id[entry_id]
        assert item["id"] == f"gallery:{entry_id}" and item["source"] == "gallery"
        assert item["page_url"] == server.url(f"gallery/item/{entry_id}")
        assert item["image_url"] == server.url(entry.image_path)
        check_fields(item, catalog, entry, shown=entry.show_meta, origin="html")
        assert item["author_hash"] and entry.username not in str(item)
        assert item["image_sha256"] == item["image_bytes_sha256"] == sha256_of(catalog, entry)
    assert res.stats["imagecrawl/pages/gallery/listings"] == 3
    assert res.stats["imagecrawl/pages/gallery/details"] == ITEMS
    assert not any(k.startswith("imagecrawl/pages/errors/") for k in res.stats)


def test_max_pages(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["two_pages"]
    assert sorted(i["source_id"] for i in res.items) == sorted(e.id for e in catalog.entries("gallery")[:48])
    assert res.stats["imagecrawl/pages/gallery/listings"] == 2


def test_max_items(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["ten"]
    assert sorted(i["source_id"] for i in res.items) == sorted(e.id for e in catalog.entries("gallery")[:10])
    assert res.stats["imagecrawl/pages/gallery/listings"] == 1


def test_custom_xpath_profile(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["xpath"]
    assert res.error is None and len(res.items) == ITEMS
    by_id = {item["source_id"]: item for item in res.items}  # no id_pattern: the last path segment
    for entry in catalog.entries("gallery"):
        item = by_id[entry.id]
        assert item["source"] == "gallery2" and item["id"] == f"gallery2:{entry.id}"
        if entry.show_meta:  # this profile reads no negative prompt
            assert (item["prompt"], item["seed"], item["cfg_scale"]) == (
                entry.prompt,
                entry.seed,
                entry.cfg_scale,
            )
        assert item["author_hash"] is None  # this profile has no author selector


def test_bad_profile_is_a_clear_error(results: dict[str, CrawlResult]) -> None:
    error = results["bad_profile"].error
    assert error is not None and "no-such-profile" in error and "bundled: sandbox" in error


def test_robots_disallowed_never_requested(results: dict[str, CrawlResult], server: SandboxProcess) -> None:
    records = server.requests()
    assert any(r["path"] == "/robots.txt" for r in records)
    assert not [r for r in records if r["path"].startswith("/private/")]
    assert all(r["status"] == 200 for r in records)
