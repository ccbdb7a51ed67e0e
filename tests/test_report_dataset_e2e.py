"""End to end: the report of a real Civitai crawl of the sandbox draws its dataset section as plots
whose bars are the store's own counts (one bar per category, labels and values as stored, lengths in
the order of the counts), beside the tables, and the plots render in headless Chromium."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import read_store, run_crawl

pytestmark = pytest.mark.e2e

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CATEGORY_PLOTS = {
    "metadata_sources": "where the prompt came from",
    "formats": "image formats",
    "top_models": "top models",
    "sources": "sources",
    "sizes": "image sizes (megapixels)",
}


@pytest.fixture(scope="module")
def crawl(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any) -> dict[str, Any]:
    store = tmp_path_factory.mktemp("report-dataset") / "store"
    run_crawl("civitai", store=store, args={"api_url": sandbox_site.base_url.rstrip("/"), "limit": 10, "nsfw": "X"})
    reports = sorted((store / ".imagecrawl" / "reports").iterdir())
    page = next(p for p in reports if p.suffix == ".html")
    report = json.loads(next(p for p in reports if p.suffix == ".json").read_text())
    columns = ["source", "prompt", "negative_prompt", "seed", "metadata_source", "image_format", "model"]
    return {"store": store, "page": page, "report": report, "rows": read_store(store, columns).to_pylist()}


def _svgs(html: str) -> dict[str, ET.Element]:
    section = html[html.index("<h2>Dataset") : html.index("<h2>Sites")]
    charts = [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", section, flags=re.S)]
    return {str(svg.get("aria-label")): svg for svg in charts}


def _bars(svg: ET.Element) -> list[tuple[str, float, float]]:
    size = "width" if svg.get("class") == "chart bars" else "height"
    return [
        (r.get("data-label", ""), float(r.get("data-value", "nan")), float(r.get(size, "0")))
        for r in svg.iter(f"{SVG}rect")
        if r.get("class") == "bar"
    ]


def test_the_dataset_counts_are_the_stores(crawl: dict[str, Any]) -> None:
    rows, dataset = crawl["rows"], crawl["report"]["dataset"]
    assert len(rows) >= 20 and dataset["items"] == len(rows)
    assert dataset["formats"] == dict(Counter(r["image_format"] for r in rows))
    assert dataset["metadata_sources"] == dict(Counter(r["metadata_source"] or "none" for r in rows))
    assert dataset["sources"] == {"civitai": len(rows)}
    models = Counter(r["model"] for r in rows if r["model"])
    assert len(models) >= 2, "the sandbox should name several models"
    assert sorted(dataset["top_models"].values(), reverse=True) == [n for _, n in models.most_common(10)]
    assert set(dataset["top_models"]) <= set(models)
    prompts = [r["prompt"] for r in rows if r["prompt"]]
    assert dataset["with_prompt"] == len(prompts) == sum(dataset["prompt_lengths"].values())


def test_every_category_is_a_plot_whose_bars_are_the_counts(crawl: dict[str, Any]) -> None:
    dataset = crawl["report"]["dataset"]
    svgs = _svgs(crawl["page"].read_text())
    assert {"prompt coverage (share of items)", "prompt length (characters)", *CATEGORY_PLOTS.values()} <= set(svgs)
    for key, title in CATEGORY_PLOTS.items():
        counts = dataset[key]
        bars = _bars(svgs[title])
        # one bar per category, labelled and valued as counted
        assert {label: value for label, value, _ in bars} == counts, key
        if key != "sizes":
            assert [label for label, _, _ in bars] == list(counts), key  # busiest first
            ordered = sorted(bars, key=lambda b: b[1])
            for (_, small, short), (_, big, long) in itertools.pairwise(ordered):
                # a bigger count draws a longer bar, an equal one an equal bar
                assert (short < long) if small < big else abs(short - long) < 0.05, (key, bars)
    sizes = [label for label, _, _ in _bars(svgs["image sizes (megapixels)"])]
    axis = ["< 0.25 MP", "0.25-0.6 MP", "0.6-1 MP", "1-2 MP", "2-4 MP", "> 4 MP", "unknown"]
    assert sizes == [label for label in axis if label in sizes]  # a histogram: the bins' order, not the counts'
    coverage = {label: value for label, value, _ in _bars(svgs["prompt coverage (share of items)"])}
    assert coverage == {
        "with a prompt": dataset["with_prompt"],
        "with a negative prompt": dataset["with_negative_prompt"],
        "with a seed": dataset["with_seed"],
    }
    with_prompt = sum(1 for r in crawl["rows"] if r["prompt"])
    assert sum(v for _, v, _ in _bars(svgs["prompt length (characters)"])) == with_prompt


def test_long_model_names_are_cut_with_a_tooltip(crawl: dict[str, Any]) -> None:
    svg = _svgs(crawl["page"].read_text())["top models"]
    labels = [t for t in svg.iter(f"{SVG}text") if t.get("class") == "label"]
    assert [t.findtext(f"{SVG}title") for t in labels] == list(crawl["report"]["dataset"]["top_models"])
    for text in labels:
        full, shown = (
            text.findtext(f"{SVG}title") or "",
            "".join(text.itertext()).removeprefix(text.findtext(f"{SVG}title") or ""),
        )
        assert shown == full or (len(shown) < len(full) and "…" in shown)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_the_plots_render_in_chromium(crawl: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(crawl["page"].as_uri())
            charts = page.evaluate(
                """() => [...document.querySelectorAll('svg.bars, svg.columns')].map(svg => ({
                    title: svg.getAttribute('aria-label'),
                    width: svg.getBoundingClientRect().width,
                    bars: [...svg.querySelectorAll('rect.bar')].map(r => [r.getBBox().width, r.getBBox().height]),
                }))"""
            )
        finally:
            browser.close()
    by_title = {c["title"]: c for c in charts}
    assert set(CATEGORY_PLOTS.values()) <= set(by_title)
    for chart in by_title.values():
        assert chart["width"] > 300 and chart["bars"]
        assert all(w > 0 and h > 0 for w, h in chart["bars"]), chart
