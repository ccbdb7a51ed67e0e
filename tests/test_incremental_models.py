"""Incremental runs of the Civitai spider over the models endpoint (``-a endpoint=models``), against the
sandbox's ``/api/v1/models`` (shaped like the real API: field names as in the captured response in
``tests/fixtures/pages/civitai``). The sandbox gains showcase images between runs; the
second run reads only the pages down to a run of known images, downloads only the new ones, and the
store never holds a record twice. Counted from the sandbox's request log and the store."""

from __future__ import annotations

import json
import math
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.sandbox.sites.civitai_models import MODEL_VERSIONS, VERSION_IMAGES
from imagecrawl.sandbox.testing import SandboxProcess
from tests.conftest import read_store, run_crawl
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, HIDDEN, LIMIT, KNOWN_RUN = 60, 12, 2, 4
MODEL_IMAGES = VERSION_IMAGES * MODEL_VERSIONS
API = "/api/v1/models"
#: a real /api/v1/models response, as captured (tests/fixtures/pages/civitai/README.md)
REAL_RESPONSES = Path(__file__).parent / "fixtures" / "pages" / "civitai"


def reveal(server: SandboxProcess, n: int) -> None:
    req = urllib.request.Request(server.url(f"_sandbox/reveal?n={n}"), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        json.load(resp)


def get(server: SandboxProcess, path: str) -> Any:
    with urllib.request.urlopen(server.url(path.lstrip("/")), timeout=10) as resp:
        return json.load(resp)


def crawl(server: SandboxProcess, store: Path, **settings: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    before = len(server.requests())
    args = {"api_url": server.base_url.rstrip("/"), "endpoint": "models", "limit": LIMIT, "nsfw": "X"}
    result = run_crawl(
        "civitai",
        store=store,
        args=args,
        # near-duplicates off: which of two near ones is kept depends on the order (new ones come first)
        settings={
            "IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False",
            "IMAGECRAWL_INCREMENTAL_KNOWN_RUN": str(KNOWN_RUN),
            **settings,
        },
    )
    return result.stats, server.requests()[before:]


def listing_pages(log: list[dict[str, Any]]) -> list[str]:
    return [r["query"] for r in log if r["path"] == API]


def downloads(log: list[dict[str, Any]]) -> list[str]:
    return [r["path"] for r in log if r["path"].startswith("/images/civitai/")]


def record_id(path: str) -> str:
    """``/images/civitai/1000042.png`` -> ``civitai:1000042``."""
    return "civitai:" + path.rsplit("/", 1)[1].split(".", 1)[0]


def stored(store: Path) -> list[str]:
    return list(read_store(store, ["id"]).column("id").to_pylist())


def images(store: Path) -> set[str]:
    return set(read_store(store, ["image_sha256"]).column("image_sha256").to_pylist())


def served_images(server: SandboxProcess) -> set[str]:
    """Every showcase image path the listing serves now (walked with the API's own cursor)."""
    paths: set[str] = set()
    url: str | None = f"{API}?limit=100&sort=Newest"
    while url:
        page = get(server, url)
        for model in page["items"]:
            for version in model["modelVersions"]:
                paths.update("/" + image["url"].split("/", 3)[3] for image in version["images"])
        next_page = page["metadata"].get("nextPage")
        url = next_page.removeprefix(server.base_url.rstrip("/")) if next_page else None
    return paths


def _keys(objects: list[dict[str, Any]]) -> set[str]:
    return set().union(*(set(o) for o in objects))


def test_the_sandbox_models_api_has_the_real_shape(sandbox_factory: SandboxFactory) -> None:
    real = json.loads((REAL_RESPONSES / "civitai_v1_models_list_limit10.json").read_text())
    server = sandbox_factory.start(items=30, seed=2, name="models-shape")
    page = get(server, f"{API}?limit=3&sort=Newest")
    assert set(page) == set(real) == {"items", "metadata"} and set(page["metadata"]) == set(real["metadata"])
    models, real_models = page["items"], real["items"]
    assert _keys(models) == _keys(real_models) and all(set(m) == _keys(real_models) for m in models)
    versions = [v for m in models for v in m["modelVersions"]]
    real_versions = [v for m in real_models for v in m["modelVersions"]]
    assert _keys(versions) == _keys(real_versions)
    assert _keys([i for v in versions for i in v["images"]]) == _keys([i for v in real_versions for i in v["images"]])
    assert _keys([f for v in versions for f in v["files"]]) == _keys([f for v in real_versions for f in v["files"]])
    assert {type(i["nsfwLevel"]) for v in versions for i in v["images"]} == {int}  # a bitmask, as in /models
    # the cursor is "|"-separated like the real one, and nextPage carries it URL-encoded
    assert page["metadata"]["nextCursor"].count("|") == 2 == real["metadata"]["nextCursor"].count("|")
    assert "%7C" in page["metadata"]["nextPage"] and "%7C" in real["metadata"]["nextPage"]
    # one model by id; the oldest model's images have no id, like Civitai's 2022-era ones
    one = get(server, f"{API}/{models[0]['id']}")
    assert one["id"] == models[0]["id"] and [v["id"] for v in one["modelVersions"]] == [
        v["id"] for v in models[0]["modelVersions"]
    ]
    oldest = get(server, f"{API}/10000")
    assert all("id" not in i for v in oldest["modelVersions"] for i in v["images"])
    # every entry is one showcase image of exactly one version
    assert len(served_images(server)) == 30


def test_second_run_fetches_only_what_is_new_and_stores_nothing_twice(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    server = sandbox_factory.start(items=ITEMS, seed=4, extra_args=["--hidden", str(HIDDEN)], name="inc-models")
    store = tmp_path / "store"
    visible = ITEMS - HIDDEN
    stats, log = crawl(server, store)
    models = math.ceil(visible / MODEL_IMAGES)
    assert len(listing_pages(log)) == math.ceil(models / LIMIT)
    fetched = set(downloads(log))
    assert fetched == served_images(server) and len(fetched) == visible
    assert stats["imagecrawl/incremental/saved"] == 1
    (key,) = json.loads((store / "_state" / "watermarks.json").read_text())["marks"]
    assert key.startswith("civitai-models:") and "/api/v1/models?" in key

    # 2 new images: they fill the newest version (a changed model); 7 more: new versions and a new model
    for k in (2, 7, 0):
        rows_before = stored(store)
        reveal(server, k)
        visible += k
        stats, log = crawl(server, store)
        new_images = served_images(server) - fetched
        assert len(new_images) == k
        pages = listing_pages(log)
        # the changed and the new models come first: the walk stops on the first page after them
        assert len(pages) <= math.ceil(k / MODEL_IMAGES / LIMIT) + 1, (k, pages)
        assert stats.get("imagecrawl/incremental/stopped/known_run") == 1, stats
        got = downloads(log)
        assert new_images <= set(got) and len(got) == len(set(got))
        # no image the store holds is downloaded again (one whose record dedupe dropped is not held)
        assert not {record_id(path) for path in got} & set(rows_before), got
        fetched |= set(got)
        rows = stored(store)
        assert not [i for i, n in Counter(rows).items() if n > 1]  # no record twice
        assert set(rows_before) <= set(rows) and len(rows) - len(rows_before) <= k

    # together the incremental runs hold what one full walk of the listing holds
    reveal(server, HIDDEN)
    crawl(server, store)
    fresh = tmp_path / "fresh"
    crawl(server, fresh)
    assert images(store) == images(fresh)
    assert sorted(stored(store)) == sorted(set(stored(store)))
    stats, log = crawl(server, store, IMAGECRAWL_INCREMENTAL_FULL_WALK="True")
    assert len(listing_pages(log)) == math.ceil(math.ceil(ITEMS / MODEL_IMAGES) / LIMIT)
    assert "imagecrawl/incremental/stopped/known_run" not in stats
    assert images(store) == images(fresh) and sorted(stored(store)) == sorted(set(stored(store)))


def test_one_model_by_id(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    server = sandbox_factory.start(items=30, seed=2, name="models-one")
    model = get(server, f"{API}?limit=1&sort=Newest")["items"][0]
    shown = {"/" + i["url"].split("/", 3)[3] for v in model["modelVersions"] for i in v["images"]}
    args = {"api_url": server.base_url.rstrip("/"), "endpoint": "models", "model_id": model["id"], "nsfw": "X"}
    before = len(server.requests())
    run_crawl("civitai", store=tmp_path / "store", args=args)
    log = server.requests()[before:]
    assert [r["path"] for r in log if r["path"].startswith(API)] == [f"{API}/{model['id']}"]
    assert set(downloads(log)) == shown
    assert {r.split(":", 1)[1] for r in stored(tmp_path / "store")} <= {
        p.rsplit("/", 1)[1].split(".")[0] for p in shown
    }
