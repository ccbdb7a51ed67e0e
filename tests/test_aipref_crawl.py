"""AI usage preferences and embedded rights, end to end: ``scrapy crawl`` against the sandbox's
/aipref/ pages, judged by the server's request log (what was requested, how many body bytes left
the server) and by what the store, the skip log and the stats say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.sandbox.sites.aipref import CHUNK_BYTES, IMAGES_PER_CASE, XMP_FORMATS, payload
from imagecrawl.sandbox.testing import SandboxProcess
from tests.conftest import CrawlResult, read_store, run_crawl
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

SITE = {"SPIDER_MODULES": "tests.sitespider"}


def paths(case: str, ext: str = "png") -> list[str]:
    return [f"/aipref/img/{case}/{n}.{ext}" for n in range(IMAGES_PER_CASE)]


def embedded(case: str) -> list[str]:
    return [p for ext in XMP_FORMATS for p in paths(case, ext)]


def full(path: str) -> int:
    case, name = path.split("/")[3:5]
    return len(payload(path, case, name.rsplit(".", 1)[1]))


REFUSED_IN_ROBOTS = paths("cs-no") + paths("cu-no")
REFUSED_AT_HEADERS = paths("hdr-no") + paths("hdr-genai")
REFUSED_IN_FILE = embedded("xmp-no") + embedded("xmp-genai")
ALLOWED = paths("cs-yes") + paths("cu-genai-yes") + paths("hdr-yes") + embedded("xmp-ok")


def crawl(site: SandboxProcess, store: Path, **settings: Any) -> tuple[CrawlResult, dict[str, list[dict[str, Any]]]]:
    before = len(site.requests())
    result = run_crawl("site", store=store, args={"start": site.url("/aipref/")}, settings={**SITE, **settings})
    out: dict[str, list[dict[str, Any]]] = {}
    for record in site.requests()[before:]:
        out.setdefault(record["path"], []).append(record)
    return result, out


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=5, name="aipref-site")


@pytest.fixture(scope="module")
def default_crawl(
    site: SandboxProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CrawlResult, dict[str, list[dict[str, Any]]], Path]:
    store = tmp_path_factory.mktemp("aipref-store")
    result, log = crawl(site, store)
    return result, log, store


def test_robots_txt_refusals_are_never_requested(default_crawl: Any) -> None:
    _, log, _ = default_crawl
    assert "/robots.txt" in log
    for path in REFUSED_IN_ROBOTS:
        assert path not in log, path


def test_header_refusals_read_no_body(default_crawl: Any) -> None:
    _, log, _ = default_crawl
    for path in REFUSED_AT_HEADERS:
        assert len(log[path]) == 1, path
        assert log[path][0]["bytes"] < CHUNK_BYTES < full(path), (path, log[path][0]["bytes"])


def test_allowed_images_are_fetched_whole_and_stored(default_crawl: Any) -> None:
    result, log, store = default_crawl
    for path in ALLOWED:
        assert [r["bytes"] for r in log[path]] == [full(path)], path
    urls = {u.split("/", 3)[3] for u in read_store(store, ["image_url"]).column("image_url").to_pylist()}
    assert urls == {p.lstrip("/") for p in ALLOWED}
    assert result.stats["item_scraped_count"] == len(ALLOWED)


def test_every_refusal_is_counted_and_listed(default_crawl: Any) -> None:
    result, _, store = default_crawl
    subtree = {k: v for k, v in result.stats.items() if k.startswith("imagecrawl/optout/")}
    assert subtree == {
        "imagecrawl/optout/content_signal": 2,
        "imagecrawl/optout/content_usage": 6,  # 2 in robots.txt, 2 + 2 headers
        "imagecrawl/optout/embedded_data_mining": len(REFUSED_IN_FILE),
        "imagecrawl/optout/skipped": 8 + len(REFUSED_IN_FILE),
        "imagecrawl/optout/tdmrep/status/200": 1,
    }
    lines = [json.loads(line) for line in (store / "_state" / "optout.jsonl").read_text().splitlines()]
    listed = {(r["reason"], "/" + r["url"].split("/", 3)[3]) for r in lines}
    assert ("content_signal", "/aipref/img/cs-no/0.png") in listed
    assert ("content_usage", "/aipref/img/cu-no/1.png") in listed
    assert ("content_usage", "/aipref/img/hdr-genai/0.png") in listed
    assert {p for _, p in listed} == set(REFUSED_IN_ROBOTS + REFUSED_AT_HEADERS + REFUSED_IN_FILE)


@pytest.fixture(scope="module")
def sitewide(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=5, extra_args=["--content-signal", "search=yes, ai-train=no"], name="cs-site")


def test_a_site_wide_content_signal_refuses_all_but_the_path_scoped_yes(
    sitewide: SandboxProcess, tmp_path: Path
) -> None:
    result, log = crawl(sitewide, tmp_path)
    fetched = {p for p in log if p.startswith("/aipref/img/")}
    assert fetched == set(paths("cs-yes"))  # a path-scoped "yes" beats the site-wide "no"
    assert "/aipref/" in log
    assert result.stats["imagecrawl/optout/content_signal"] >= len(ALLOWED) - IMAGES_PER_CASE
    assert result.stats["item_scraped_count"] == IMAGES_PER_CASE


def test_switched_off_content_signal_and_usage_are_fetched(sitewide: SandboxProcess, tmp_path: Path) -> None:
    result, log = crawl(
        sitewide, tmp_path, IMAGECRAWL_OPTOUT_CONTENT_SIGNAL="False", IMAGECRAWL_OPTOUT_CONTENT_USAGE="False"
    )
    assert sum("IMAGECRAWL_OPTOUT_CONTENT_SIGNAL is off" in line for line in result.stderr.splitlines()) == 1
    for path in REFUSED_IN_ROBOTS + REFUSED_AT_HEADERS:
        assert [r["bytes"] for r in log[path]] == [full(path)], path
    assert not any(
        k.startswith(("imagecrawl/optout/content_signal", "imagecrawl/optout/content_usage")) for k in result.stats
    )
