"""The lexica spider against a real sandbox server."""

from __future__ import annotations

import pytest

from tests.sandbox.catalog import Catalog, Entry, build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory
from tests.spiders_util import Crawl, CrawlResult, file_checkable, run_crawls, sha256_of

pytestmark = pytest.mark.e2e

ITEMS, SEED = 60, 5
Q = "portrait"


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="lexica-sandbox")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


@pytest.fixture(scope="module")
def results(server: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrawlResult]:
    api = server.base_url
    return run_crawls(
        [
            Crawl("search", "lexica", {"api_url": api, "q": Q}),
            Crawl("capped", "lexica", {"api_url": api, "q": Q, "max_items": "4"}),
            Crawl("nothing", "lexica", {"api_url": api, "q": "zzzz-no-such-word"}),
            Crawl("no_q", "lexica", {"api_url": api}),
        ],
        tmp_path_factory.mktemp("lexica-crawls"),
    )


def expected(entry: Entry) -> dict[str, object]:
    """Lexica shows prompt, seed, guidance (cfg) and its own model label; negative prompt, steps and sampler
    come from the file when it embeds them. NOTE: the file-metadata extractor on this branch is temporarily
    minimal (A1111 PNG only): file-derived fields are asserted for PNG entries (and for entries without
    embedded metadata: None), and left out for JPEG/WebP entries that embed metadata."""
    shown: dict[str, object] = {
        "prompt": entry.prompt,
        "seed": entry.seed,
        "cfg_scale": entry.cfg_scale,
        "model": "lexica-aperture-v3",  # the API's own value wins over the file's checkpoint name
    }
    if not file_checkable(entry):
        return shown
    from_file = entry.embed_metadata
    return {
        **shown,
        "negative_prompt": entry.negative_prompt if from_file else None,
        "steps": entry.steps if from_file else None,
        "sampler": entry.sampler if from_file else None,
    }


def test_search_results_match_catalog(
    results: dict[str, CrawlResult], catalog: Catalog, server: SandboxProcess
) -> None:
    res = results["search"]
    assert res.error is None
    hits = catalog.lexica_search(Q)
    assert len(hits) > 5
    by_id = {item["source_id"]: item for item in res.items}
    assert len(res.items) == len(hits) and set(by_id) == {e.id for e in hits}
    for entry in hits:
        item = by_id[entry.id]
        assert item["id"] == f"lexica:{entry.id}" and item["source"] == "lexica"
        assert item["page_url"] == f"{server.base_url}lexica/prompt/{entry.id}"
        want = expected(entry)
        assert {k: item[k] for k in want} == want, entry.id
        assert item["metadata_source"] == "api"
        assert item["nsfw"] == ("false" if entry.nsfw_level == "None" else "true")
        assert item["image_sha256"] == item["image_bytes_sha256"] == sha256_of(catalog, entry)
    assert res.stats["imagecrawl/pages/lexica/pages"] == 1


def test_max_items(results: dict[str, CrawlResult], catalog: Catalog) -> None:
    res = results["capped"]
    assert sorted(i["source_id"] for i in res.items) == sorted(e.id for e in catalog.lexica_search(Q)[:4])


def test_no_results(results: dict[str, CrawlResult]) -> None:
    res = results["nothing"]
    assert res.error is None and res.items == [] and res.stats["imagecrawl/pages/lexica/pages"] == 1


def test_missing_query_is_a_clear_error(results: dict[str, CrawlResult]) -> None:
    error = results["no_q"].error
    assert error is not None and error.startswith("ConfigError") and "-a q=" in error


def test_requests(results: dict[str, CrawlResult], server: SandboxProcess) -> None:
    records = server.requests()
    assert all(r["status"] == 200 for r in records)
    assert all(
        r["path"] in ("/robots.txt", "/.well-known/tdmrep.json", "/api/v1/search")
        or r["path"].startswith("/images/lexica/")
        for r in records
    )
