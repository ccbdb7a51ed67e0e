"""AI usage preferences and embedded rights, end to end: ``scrapy crawl`` against the sandbox's
/aipref/ pages, judged by the server's request log (what was requested, how many body bytes left
the server) and by what the store, the skip log and the stats say."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.inspect import inspect_store
from tests.conftest import CrawlResult, read_store, run_crawl
from tests.sandbox.sites.aipref import IMAGES_PER_CASE, XMP_FORMATS, payload
from tests.sandbox.streaming import CHUNK_BYTES
from tests.sandbox.testing import SandboxProcess
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


def whole(path: str, log: dict[str, list[dict[str, Any]]]) -> int:
    """The full size of ``path``: signed files differ by a few bytes per server (a fresh throw-away
    certificate each), so theirs is the length the server announced."""
    if "/c2pa-" in path:
        length = log[path][0]["length"]
        assert length > 2 * CHUNK_BYTES
        return int(length)
    return full(path)


REFUSED_IN_ROBOTS = paths("cs-no") + paths("cu-no")
REFUSED_AT_HEADERS = paths("hdr-no") + paths("hdr-genai")
REFUSED_IN_XMP = embedded("xmp-no") + embedded("xmp-genai")
REFUSED_IN_C2PA = embedded("c2pa-no")
REFUSED_IN_FILE = REFUSED_IN_XMP + REFUSED_IN_C2PA
ALLOWED = paths("cs-yes") + paths("cu-genai-yes") + paths("hdr-yes") + embedded("xmp-ok") + embedded("c2pa-ok")


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
        assert [r["bytes"] for r in log[path]] == [whole(path, log)], path
    urls = {u.split("/", 3)[3] for u in read_store(store, ["image_url"]).column("image_url").to_pylist()}
    assert urls == {p.lstrip("/") for p in ALLOWED}
    assert result.stats["item_scraped_count"] == len(ALLOWED)


def test_every_refusal_is_counted_and_listed(default_crawl: Any) -> None:
    result, _, store = default_crawl
    subtree = {k: v for k, v in result.stats.items() if k.startswith("imagecrawl/optout/")}
    assert subtree == {
        "imagecrawl/optout/content_signal": 2,
        "imagecrawl/optout/content_usage": 6,  # 2 in robots.txt, 2 + 2 headers
        "imagecrawl/optout/embedded_data_mining": len(REFUSED_IN_XMP),
        "imagecrawl/optout/embedded_c2pa": len(REFUSED_IN_C2PA),
        "imagecrawl/optout/skipped": 8 + len(REFUSED_IN_FILE),
        "imagecrawl/optout/tdmrep/status/200": 1,
    }
    lines = [json.loads(line) for line in (store / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    listed = {(r["reason"], "/" + r["url"].split("/", 3)[3]) for r in lines}
    assert ("content_signal", "/aipref/img/cs-no/0.png") in listed
    assert ("content_usage", "/aipref/img/cu-no/1.png") in listed
    assert ("content_usage", "/aipref/img/hdr-genai/0.png") in listed
    assert {p for _, p in listed} == set(REFUSED_IN_ROBOTS + REFUSED_AT_HEADERS + REFUSED_IN_FILE)


def test_embedded_refusals_are_downloaded_then_leave_nothing(default_crawl: Any) -> None:
    """Read whole (the statement is inside the file), then nothing of them in the store, the ledger or the report."""
    result, log, store = default_crawl
    for path in REFUSED_IN_FILE:
        assert [r["bytes"] for r in log[path]] == [whole(path, log)], path
    with sqlite3.connect(store / ".imagecrawl" / "state" / "ledger.sqlite3") as db:
        kept = {row[0] for row in db.execute("SELECT id FROM ids")}
        seen = db.execute("SELECT count(*) FROM seen").fetchone()[0]
        urls = db.execute("SELECT count(*) FROM urls").fetchone()[0]
    stored_ids = set(read_store(store, ["id"]).column("id").to_pylist())
    assert kept == stored_ids and len(kept) == seen == len(ALLOWED)
    assert urls in (0, len(ALLOWED))
    [report_file] = (store / ".imagecrawl" / "reports").glob("*.json")
    report_text = report_file.read_text()
    report = json.loads(report_text)
    assert report["by_reason"]["imagecrawl/optout"]["embedded_c2pa"] == len(REFUSED_IN_C2PA)
    assert report["by_reason"]["imagecrawl/optout"]["embedded_data_mining"] == len(REFUSED_IN_XMP)
    assert report["totals"]["optout_skipped"] == result.stats["imagecrawl/optout/skipped"]
    assert report["totals"]["rows_committed"] == len(ALLOWED)
    for path in REFUSED_IN_FILE:
        assert path not in report_text, path
    samples = inspect_store(str(store), samples=len(ALLOWED) + 10)["samples"]
    assert samples and {s["id"] for s in samples} <= stored_ids  # ``imagecrawl inspect``'s samples


def test_provenance_columns_are_stored(default_crawl: Any) -> None:
    _, _, store = default_crawl
    columns = [
        "image_url",
        "digital_source_type",
        "data_mining",
        "c2pa_claim_generator",
        "c2pa_actions",
        "c2pa_validation",
    ]
    rows = {r["image_url"].split("/", 3)[3]: r for r in read_store(store, columns).to_pylist()}
    for path in embedded("xmp-ok"):
        row = rows[path.lstrip("/")]
        assert (row["digital_source_type"], row["data_mining"]) == ("trainedAlgorithmicMedia", "DMI-ALLOWED")
        assert row["c2pa_validation"] is None
    for path in embedded("c2pa-ok"):
        row = rows[path.lstrip("/")]
        assert row["c2pa_claim_generator"] == "imagecrawl-tests 1.0" and row["c2pa_validation"] == "valid"
        assert json.loads(row["c2pa_actions"])[0]["software_agent"] == "TestDiffusion 2.1"
        assert row["digital_source_type"] == "trainedAlgorithmicMedia"  # from the C2PA action
    for path in paths("hdr-yes"):
        assert set(rows[path.lstrip("/")].values()) == {None, rows[path.lstrip("/")]["image_url"]}


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
        sitewide, tmp_path, IMAGECRAWL_TUNING={"optout_content_signal": "False", "optout_content_usage": "False"}
    )
    assert sum("IMAGECRAWL_TUNING['optout_content_signal'] is off" in line for line in result.stderr.splitlines()) == 1
    for path in REFUSED_IN_ROBOTS + REFUSED_AT_HEADERS:
        assert [r["bytes"] for r in log[path]] == [full(path)], path
    assert not any(
        k.startswith(("imagecrawl/optout/content_signal", "imagecrawl/optout/content_usage")) for k in result.stats
    )
