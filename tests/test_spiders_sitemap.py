"""The sitemap spider against a real sandbox: robots.txt → index → image sitemaps (captions as prompts),
the gzipped page sitemap handed to the gallery profile, loops cut, a bad sitemap and a size limit as
counted skips, every sitemap fetched once."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.sandbox.catalog import Catalog, build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory
from tests.spiders_util import Crawl, CrawlResult, run_crawls

pytestmark = pytest.mark.e2e

ITEMS, SEED, PAGE = 30, 5, 10  # image sitemaps of 10 entries: images-0 .. images-2


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, extra_args=["--page-size", str(PAGE)], name="sitemap-sb")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


@pytest.fixture(scope="module")
def results(server: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrawlResult]:
    return run_crawls(
        [
            Crawl("images", "sitemap", {"start_url": server.base_url}),
            Crawl("profile", "sitemap", {"start_url": server.url("sitemaps/pages.xml.gz"), "profile": "sandbox"}),
            Crawl(
                "small",
                "sitemap",
                {"start_url": server.url("sitemaps/pages.xml.gz"), "profile": "sandbox"},
                {"IMAGECRAWL_TUNING": {"sitemap_max_decompressed_bytes": 1024}},
            ),
            Crawl("five", "sitemap", {"start_url": server.url("sitemaps/index.xml"), "max_items": "5"}),
            # the network guard as for any spider: loopback is not allowed by default
            Crawl("guarded", "sitemap", {"start_url": server.base_url}, {"IMAGECRAWL_ALLOWED_NETWORKS": ""}),
        ],
        tmp_path_factory.mktemp("sitemap-crawls"),
    )


def test_image_sitemaps_from_robots(results: dict[str, CrawlResult], catalog: Catalog, server: SandboxProcess) -> None:
    res = results["images"]
    assert res.error is None
    entries = {server.url(e.image_path): e for e in catalog.entries("gallery")}
    by_url = {item["image_url"]: item for item in res.items}
    assert set(by_url) == set(entries)
    for url, entry in entries.items():
        item = by_url[url]
        assert item["source"] == "sitemap" and item["page_url"] == server.url(f"gallery/item/{entry.id}")
        if entry.show_meta:
            assert (item["prompt"], item["metadata_source"]) == (entry.prompt, "sitemap:caption")
        elif item["metadata_source"] == "sitemap:title":  # no caption, and nothing read from the file
            assert item["prompt"] == f"gallery {entry.id}"
    stats = res.stats
    assert stats["imagecrawl/pages/sitemap/robots_sitemaps"] == 1
    assert stats["imagecrawl/pages/sitemap/indexes"] == 2  # index.xml and nested.xml
    assert stats["imagecrawl/pages/sitemap/sitemaps"] == 4  # images-0..2 and the gzipped pages.xml.gz
    assert stats["imagecrawl/pages/sitemap/images"] == ITEMS
    assert stats["imagecrawl/pages/errors/bad_sitemap"] == 1
    assert stats["imagecrawl/pages/errors/sitemap_loop"] == 2
    ua = "imagecrawl-test/images"
    fetched = Counter(r["path"] for r in server.requests() if r["ua"].startswith(ua) and "sitemap" in r["path"])
    assert fetched == Counter(
        {
            "/sitemaps/index.xml": 1,
            "/sitemaps/nested.xml": 1,
            "/sitemaps/bad.xml": 1,
            "/sitemaps/pages.xml.gz": 1,
            **{f"/sitemaps/images-{n}.xml": 1 for n in range(3)},
        }
    )


def test_gzipped_pages_to_the_gallery_profile(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["profile"]
    assert res.error is None
    assert {item["source_id"] for item in res.items} == {e.id for e in catalog.entries("gallery")}
    assert {item["source"] for item in res.items} == {"gallery"}
    assert res.stats["imagecrawl/pages/gallery/details"] == ITEMS
    assert "imagecrawl/pages/sitemap/images" not in res.stats


def test_decompressed_size_limit(results: dict[str, CrawlResult]) -> None:
    res = results["small"]
    assert res.items == [] and res.stats["imagecrawl/pages/errors/sitemap_too_large"] == 1
    assert "sitemap_max_decompressed_bytes" in res.log


def test_max_items(results: dict[str, CrawlResult]) -> None:
    assert len(results["five"].items) == 5


def test_network_guard_applies(results: dict[str, CrawlResult], server: SandboxProcess) -> None:
    res = results["guarded"]
    assert res.items == [] and res.stats["imagecrawl/netguard/refused"] >= 1
    assert not [r for r in server.requests() if r["ua"].startswith("imagecrawl-test/guarded")]
