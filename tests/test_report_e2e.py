"""End to end: a crawl of the sandbox plus a loopback site that pushes back (429 + Retry-After, 403)
writes ``<store>/.imagecrawl/reports/<run>.json`` and ``.html``; the JSON agrees with the crawl's stats and the
site's behaviour, and the HTML renders in headless Chromium with its plots (DOM + screenshot)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imagecrawl import defaults as project_settings

from .conftest import CrawlResult, read_store, run_crawl
from .expect import expected_rows
from .observe_util import BANNED_IMAGES, RETRY_AFTER_SECONDS, THROTTLED_IMAGES, pushback_site

pytestmark = pytest.mark.e2e

SANDBOX_IMAGES = 12
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any) -> dict[str, Any]:
    from tests.sandbox.catalog import build_catalog

    tmp = tmp_path_factory.mktemp("report")
    catalog = build_catalog(40, 7)
    entries = catalog.entries("civitai")[:SANDBOX_IMAGES]
    with pushback_site() as pushback:
        table = tmp / "urls.csv"
        with table.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "text"])
            for entry in entries:
                writer.writerow([sandbox_site.url(entry.image_path), f"sandbox {entry.id}"])
            for n in range(THROTTLED_IMAGES):
                writer.writerow([f"{pushback}/img/{n}.png", f"pushback {n}"])
            for n in range(BANNED_IMAGES):
                writer.writerow([f"{pushback}/ban/{n}.png", f"banned {n}"])
        store = tmp / "store"
        extensions = {**project_settings.EXTENSIONS, "tests.observe_util.PacingHook": 10}
        result = run_crawl(
            "urls",
            store=store,
            args={"input": table, "url_col": "image", "caption_col": "text"},
            settings={
                "EXTENSIONS": json.dumps(extensions),
                "TEST_PACING_SITE": pushback.removeprefix("http://"),
                # the report's mechanics under a scripted pacer (tests.observe_util.PacingHook); the real
                # pacing and ban middlewares are tested against the sandbox in test_pacing_*/test_bans_*
                "IMAGECRAWL_PACING_ENABLED": "False",
                "IMAGECRAWL_BANS_ENABLED": "False",
                "IMAGECRAWL_PROGRESS_INTERVAL_SECONDS": "0.5",
            },
        )
    reports = sorted((store / ".imagecrawl" / "reports").iterdir())
    return {
        "rows": expected_rows(catalog, entries, lambda e: "").rows + THROTTLED_IMAGES,
        "result": result,
        "store": store,
        "reports": reports,
        "sandbox": sandbox_site.base_url.removeprefix("http://").rstrip("/"),
        "pushback": pushback.removeprefix("http://"),
        "tmp": tmp,
    }


def _report(crawl: dict[str, Any]) -> dict[str, Any]:
    json_files = [p for p in crawl["reports"] if p.suffix == ".json"]
    assert len(json_files) == 1
    data: dict[str, Any] = json.loads(json_files[0].read_text())
    return data


def test_report_files_beside_the_shards(crawl: dict[str, Any]) -> None:
    result: CrawlResult = crawl["result"]
    names = [p.name for p in crawl["reports"]]
    shard = next(crawl["store"].rglob("*.parquet"))
    run_id = shard.stem.removeprefix("part-").rsplit("-", 1)[0]
    assert names == [f"{run_id}.html", f"{run_id}.json"]
    assert result.stats["imagecrawl/report/written"] == 1
    # the report folder is not a partition: readers of the store see only the rows
    assert read_store(crawl["store"], columns=["id"]).num_rows == result.stats["imagecrawl/store/rows_committed"]


def test_report_json_matches_stats_and_site_behaviour(crawl: dict[str, Any]) -> None:
    stats = crawl["result"].stats
    report = _report(crawl)
    assert report["report_version"] == 1
    assert report["spider"] == "urls"
    assert report["finish_reason"] == "finished"
    totals = report["totals"]
    rows = crawl["rows"]
    assert totals["rows_committed"] == rows == stats["imagecrawl/store/rows_committed"]
    assert totals["items"] == stats["item_scraped_count"] == rows
    # the dataset section tallies the same items, as the store holds them
    stored = read_store(crawl["store"], columns=["metadata_source", "image_format"]).to_pylist()
    dataset = report["dataset"]
    assert dataset["items"] == rows and sum(dataset["sources"].values()) == rows
    assert dataset["formats"] == dict(Counter(r["image_format"] for r in stored))
    assert dataset["metadata_sources"] == dict(Counter(r["metadata_source"] or "none" for r in stored))
    assert totals["images_downloaded"] == stats["imagecrawl/media/images"] == SANDBOX_IMAGES + THROTTLED_IMAGES
    assert totals["duplicates_dropped"] == SANDBOX_IMAGES + THROTTLED_IMAGES - rows
    assert totals["responses_429"] == THROTTLED_IMAGES
    assert totals["retry_after_seen"] == THROTTLED_IMAGES
    assert totals["outbox_pending"] == 0
    assert report["by_reason"]["downloader/response_status_count"]["429"] == THROTTLED_IMAGES
    assert report["by_reason"]["downloader/response_status_count"]["403"] == BANNED_IMAGES

    sites = {s["site"]: s for s in report["sites"]}
    assert set(sites) == {crawl["sandbox"], crawl["pushback"]}
    pushback, sandbox = sites[crawl["pushback"]], sites[crawl["sandbox"]]
    assert pushback["statuses"]["429"] == THROTTLED_IMAGES
    assert pushback["statuses"]["403"] == BANNED_IMAGES
    assert pushback["statuses"]["200"] == THROTTLED_IMAGES
    assert pushback["retry_after_seen"] == THROTTLED_IMAGES
    assert pushback["retry_after_max_seconds"] == RETRY_AFTER_SECONDS
    assert "429" not in sandbox["statuses"] and sandbox["statuses"]["200"] >= SANDBOX_IMAGES
    # the series add up to the counters
    series = report["series"]
    width = series["bucket_seconds"]
    n = len(series["t"])
    assert n >= 1
    assert round(sum(series["items_per_second"]) * width) == rows
    assert round(sum(series["images_per_second"]) * width) == SANDBOX_IMAGES + THROTTLED_IMAGES
    assert round(sum(series["rows_committed_per_second"]) * width) == rows
    assert round(sum(pushback["series"]["requests_per_second"]) * width) == pushback["requests"]
    assert sum(pushback["series"]["responses_429"]) == THROTTLED_IMAGES
    assert sum(pushback["series"]["responses_403"]) == BANNED_IMAGES
    assert all(len(v) == n for v in pushback["series"].values())
    # Retry-After pauses and the pacing hook's state are intervals; its rate is a level
    labels = {s["label"] for s in pushback["spans"]}
    assert {"retry-after", "cooldown"} <= labels
    for span in pushback["spans"]:
        assert 0 <= span["start"] <= span["end"]
    assert {v for v in pushback["series"]["pacing_rate"] if v is not None} == {4.0}
    assert pushback["pacing"]["state"] == "cooldown"
    assert not sandbox["spans"]


def test_progress_line_shows_sites_and_pushback(crawl: dict[str, Any]) -> None:
    lines = [line for line in crawl["result"].stderr.splitlines() if "imagecrawl.report.extensions.progress" in line]
    assert lines, crawl["result"].stderr[-3000:]
    rows = crawl["rows"]
    assert lines[-1].endswith(f"INFO: {rows} new rows stored in {crawl['store']}")
    final = lines[-2]
    assert final.endswith("(final)")
    assert re.search(rf": {rows}( of [\d,]+)? images \(", final), final
    assert f"committed {rows} rows in " in final
    assert "outbox 0 shards" in final
    assert f"429s {THROTTLED_IMAGES}" in final
    # the site that pushes back comes first, with the state its pacer publishes
    sites = final.split(" | ", 1)[1]
    assert sites.startswith(f"{crawl['pushback']} ")
    assert "cooldown" in sites.split(";")[0]
    assert crawl["sandbox"] in sites


def _nonblank(png: bytes) -> tuple[int, float]:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    white = sum(count for count, rgb in colours if rgb == (255, 255, 255))
    return len(colours), 1 - white / (img.width * img.height)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_html_renders_in_chromium_with_plots(crawl: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    page_path = next(p for p in crawl["reports"] if p.suffix == ".html")
    html = page_path.read_text()
    assert "<script" not in html and "http://" not in html.replace(f"http://{crawl['pushback']}", "").replace(
        "http://www.w3.org/2000/svg", ""
    ).replace(f"http://{crawl['sandbox']}", "")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            external: list[str] = []
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith("file:") else None)
            page.goto(page_path.as_uri())
            charts = page.evaluate(
                """() => [...document.querySelectorAll('svg.chart')].map(svg => {
                    const box = svg.getBoundingClientRect();
                    return {
                        title: svg.querySelector('title').textContent,
                        width: box.width, height: box.height,
                        points: [...svg.querySelectorAll('polyline')].map(p => p.points.numberOfItems),
                        markers: [...svg.querySelectorAll('path.marker')].map(m => m.getAttribute('class')),
                        spans: [...svg.querySelectorAll('rect.span')].map(r => [r.getAttribute('class'),
                                                                               r.getBBox().width]),
                    };
                })"""
            )
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert not external, external
    by_title = {c["title"]: c for c in charts}
    assert "items and images per second" in by_title
    committed = by_title["rows committed to the store (running total)"]
    assert committed["points"] and all(n >= 2 for n in committed["points"])
    pushback = by_title[f"{crawl['pushback']}: request rate and pacing"]
    sandbox = by_title[f"{crawl['sandbox']}: request rate and pacing"]
    for chart in (by_title["items and images per second"], pushback, sandbox):
        assert chart["width"] > 300 and chart["height"] > 100
        assert chart["points"] and all(n >= 2 for n in chart["points"])
    assert len(pushback["points"]) >= 2  # request rate + the pacing rate line
    assert any("marker-429" in m for m in pushback["markers"])
    assert any("marker-403" in m for m in pushback["markers"])
    span_classes = {cls for cls, width in pushback["spans"] if width > 0}
    assert {"span span-retry-after", "span span-cooldown"} <= span_classes
    assert not sandbox["markers"] and not sandbox["spans"]
    (crawl["tmp"] / "report.png").write_bytes(shot)
    colours, inked = _nonblank(shot)
    assert colours > 20 and inked > 0.02, (colours, inked)
