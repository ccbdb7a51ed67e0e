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

from tests.conftest import read_store, run_crawl
from tests.crawlers import merge_settings
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, HIDDEN, LIMIT, KNOWN_RUN = 60, 12, 1, 3
API = "/api/v1/models"
#: a real /api/v1/models response, as captured (tests/fixtures/pages/civitai/README.md)
REAL_RESPONSES = Path(__file__).parent / "fixtures" / "pages" / "civitai"


def reveal(server: SandboxProcess, n: int) -> None:
    req = urllib.request.Request(server.url(f"_sandbox/reveal?n={n}"), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        json.load(resp)


#: the test's own look at the API, told apart in the sandbox's log from the crawler's requests
TEST_AGENT = "models-test-probe"


def get(server: SandboxProcess, path: str) -> Any:
    request = urllib.request.Request(server.url(path.lstrip("/")), headers={"User-Agent": TEST_AGENT})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def crawl(server: SandboxProcess, store: Path, **settings: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    before = len(server.requests())
    args = {"api_url": server.base_url.rstrip("/"), "endpoint": "models", "limit": LIMIT, "nsfw": "X"}
    result = run_crawl(
        "civitai",
        store=store,
        args=args,
        # near-duplicates off: which of two near ones is kept depends on the order (new ones come first)
        settings=merge_settings(
            {"IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False"},
            settings,
            {"IMAGECRAWL_TUNING": {"incremental_known_run": str(KNOWN_RUN)}},
        ),
    )
    return result.stats, [r for r in server.requests()[before:] if r.get("ua") != TEST_AGENT]


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


def listing(server: SandboxProcess) -> list[list[str]]:
    """The showcase image paths of every model the listing serves now, in listing order (walked with
    the API's own cursor)."""
    out: list[list[str]] = []
    url: str | None = f"{API}?limit=100&sort=Newest"
    while url:
        page = get(server, url)
        for model in page["items"]:
            out.append(
                ["/" + i["url"].split("/", 3)[3] for version in model["modelVersions"] for i in version["images"]]
            )
        next_page = page["metadata"].get("nextPage")
        url = next_page.removeprefix(server.base_url.rstrip("/")) if next_page else None
    return out


def served_images(server: SandboxProcess) -> set[str]:
    return {path for model in listing(server) for path in model}


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


def forget_positions(store: Path) -> None:
    """Marks as a walk without positions leaves them (the models walk before it had one): only the
    run of known images can stop the next walk."""
    path = store / ".imagecrawl" / "state" / "watermarks.json"
    data = json.loads(path.read_text())
    for mark in data["marks"].values():
        mark["position"] = None
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("stop", ["watermark", "known_run"])
def test_second_run_fetches_only_what_is_new_and_stores_nothing_twice(
    sandbox_factory: SandboxFactory, tmp_path: Path, stop: str
) -> None:
    server = sandbox_factory.start(items=ITEMS, seed=4, extra_args=["--hidden", str(HIDDEN)], name=f"inc-models-{stop}")
    store = tmp_path / "store"
    visible = ITEMS - HIDDEN
    stats, log = crawl(server, store)
    assert len(listing_pages(log)) == math.ceil(len(listing(server)) / LIMIT)
    fetched = set(downloads(log))
    assert fetched == served_images(server) and len(fetched) == visible
    assert stats["imagecrawl/incremental/saved"] == 1
    ((key, mark),) = json.loads((store / ".imagecrawl" / "state" / "watermarks.json").read_text())["marks"].items()
    assert key.startswith("civitai-models:") and "/api/v1/models?" in key
    newest = max(v["publishedAt"] for v in get(server, f"{API}?limit=1&sort=Newest")["items"][0]["modelVersions"])
    assert mark["position"].startswith(newest[:19])  # the newest version's publishedAt

    # 2 new images fill the newest version; 7 more make new versions of two older models and a new one
    for k in (2, 7, 0):
        rows_before = stored(store)
        reveal(server, k)
        visible += k
        models = listing(server)
        changed = [n for n, model in enumerate(models) if set(model) - fetched]
        if k == 7:
            # the case a run of known images gets wrong: a changed model below one whose old versions
            # are a run of KNOWN_RUN known images at the end of a page
            tail = models[changed[-2]][-KNOWN_RUN:]
            assert len(changed) >= 2 and not set(tail) - fetched and changed[-1] > changed[-2], models
        if stop == "known_run":
            forget_positions(store)
        stats, log = crawl(server, store)
        new_images = served_images(server) - fetched
        assert len(new_images) == k
        pages = listing_pages(log)
        if stop == "watermark":
            # changed models come first: the walk stops on the page below the last of them
            assert len(pages) <= (changed[-1] // LIMIT + 2 if changed else 1), (k, pages, changed)
        else:
            # a model with an image the store lacks (new, or a duplicate dedupe dropped) breaks the run;
            # the walk stops after KNOWN_RUN images of models the store holds in full
            lacking = [n for n, model in enumerate(models) if {record_id(p) for p in model} - set(rows_before)]
            last = lacking[-1] // LIMIT + 1 if lacking else 0
            assert len(pages) <= last + KNOWN_RUN, (k, pages, lacking)
        assert stats.get(f"imagecrawl/incremental/stopped/{stop}") == 1, stats
        got = downloads(log)
        assert new_images <= set(got), sorted(new_images - set(got))
        assert len(got) == len(set(got))
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
    assert len(listing_pages(log)) == math.ceil(len(listing(server)) / LIMIT)
    assert "imagecrawl/incremental/stopped/known_run" not in stats
    assert images(store) == images(fresh) and sorted(stored(store)) == sorted(set(stored(store)))


def test_one_model_by_id(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    server = sandbox_factory.start(items=30, seed=2, name="models-one")
    model = get(server, f"{API}?limit=1&sort=Newest")["items"][0]
    shown = {"/" + i["url"].split("/", 3)[3] for v in model["modelVersions"] for i in v["images"]}
    args = {"api_url": server.base_url.rstrip("/"), "endpoint": "models", "model_id": model["id"], "nsfw": "X"}
    before = len(server.requests())
    run_crawl("civitai", store=tmp_path / "store", args=args)
    log = [r for r in server.requests()[before:] if r.get("ua") != TEST_AGENT]
    assert [r["path"] for r in log if r["path"].startswith(API)] == [f"{API}/{model['id']}"]
    assert set(downloads(log)) == shown
    assert set(stored(tmp_path / "store")) <= {record_id(path) for path in shown}
