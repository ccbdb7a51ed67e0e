"""The dataset section's bar charts and histograms (pure): bars per category, lengths in the order of
the counts, labels cut with their full text kept as a tooltip, escaping, and no plot for no data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from imagecrawl.report.bars import LABEL_CHARS, clip, render_columns, render_hbars
from imagecrawl.report.dataset import DatasetTally
from imagecrawl.report.html import render_html

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> list[tuple[str, float, float]]:
    """(data-label, data-value, drawn length) of each bar, top to bottom / left to right."""
    root = ET.fromstring(svg)
    out = []
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("class") == "bar":
            out.append((rect.get("data-label", ""), float(rect.get("data-value", "nan")), 0.0))
            length = (
                float(rect.get("width", "0")) if root.get("class") == "chart bars" else float(rect.get("height", 0))
            )
            out[-1] = (out[-1][0], out[-1][1], length)
    return out


def shown_labels(svg: str) -> list[tuple[str, str]]:
    """(text drawn, tooltip) of each category label."""
    root = ET.fromstring(svg)
    return [
        ((text.text or "") + "".join(child.tail or "" for child in text), text.findtext(f"{SVG}title") or "")
        for text in root.iter(f"{SVG}text")
        if text.get("class") == "label"
    ]


def test_horizontal_bars_one_per_category_lengths_follow_the_counts() -> None:
    counts = [("png:parameters", 40), ("api", 25), ("comfyui", 25), ("exif:usercomment", 3), ("none", 0)]
    svg = render_hbars("where <prompts> came from", counts, total=93)
    got = bars(svg)
    assert [label for label, _, _ in got] == ["png:parameters", "api", "comfyui", "exif:usercomment"]  # no zero bar
    assert [value for _, value, _ in got] == [40, 25, 25, 3]
    lengths = [length for _, _, length in got]
    assert lengths[0] > lengths[1] == lengths[2] > lengths[3] > 0
    assert abs(lengths[1] / lengths[0] - 25 / 40) < 0.01  # proportional: the largest fills the plot
    assert "where &lt;prompts&gt; came from" in svg and "<prompts>" not in svg
    assert "40 (43%)" in svg


def test_one_category_and_shares_of_the_whole() -> None:
    got = bars(render_hbars("formats", [("PNG", 7)], total=7))
    assert [(label, value) for label, value, _ in got] == [("PNG", 7)]
    coverage = render_hbars(
        "coverage", [("prompt", 5), ("seed", 0), ("negative", 10)], 20, scale_to_total=True, keep_zero=True
    )
    lengths = {label: length for label, _, length in bars(coverage)}
    assert set(lengths) == {"prompt", "seed", "negative"}  # the zero row is kept, as a hairline
    assert lengths["seed"] < 1 < lengths["prompt"] and abs(lengths["negative"] / lengths["prompt"] - 2) < 0.01
    assert "50%" in coverage and "25%" in coverage


def test_long_labels_are_cut_and_keep_their_full_text_as_a_tooltip() -> None:
    long = [f"realisticVisionV60B1_v51HyperVAE-checkpoint-{n}" for n in range(3)]
    svg = render_hbars("top models", [(name, 3 - n) for n, name in enumerate(long)])
    labels = shown_labels(svg)
    assert [tip for _, tip in labels] == long
    drawn = [text for text, _ in labels]
    assert all(len(text) == LABEL_CHARS and "…" in text for text in drawn)
    assert len(set(drawn)) == 3  # the cut keeps the ends apart
    assert [label for label, _, _ in bars(svg)] == long
    assert clip("short", 10) == "short" and clip("abcdefghijkl", 7) == "abcd…kl"


def test_histogram_keeps_the_bin_order_and_empty_bins() -> None:
    bins = [("< 0.25 MP", 0), ("0.25-0.6 MP", 4), ("0.6-1 MP", 12), ("1-2 MP", 2), ("> 4 MP", 0)]
    svg = render_columns("image sizes", bins, total=18)
    got = bars(svg)
    assert [label for label, _, _ in got] == ["0.25-0.6 MP", "0.6-1 MP", "1-2 MP"]
    heights = [h for _, _, h in got]
    assert heights[1] > heights[0] > heights[2] > 0
    assert [text for text, _ in shown_labels(svg)] == [label for label, _ in bins]  # the axis keeps every bin


def test_nothing_to_plot_gives_no_svg() -> None:
    assert render_hbars("x", []) == "" and render_hbars("x", [("a", 0)]) == ""
    assert render_hbars("x", [("a", 0)], keep_zero=True) == ""
    assert render_columns("x", [("a", 0), ("b", 0)]) == ""


def _section(page: str) -> str:
    return page[page.index("<h2>Dataset") : page.index("<h2>Sites")]


def test_dataset_section_plots_every_category_and_notes_the_empty_ones() -> None:
    tally = DatasetTally()
    for n in range(12):
        tally.add(
            {
                "source": "civitai",
                "prompt": "p" * (30 + 60 * n),
                "metadata_source": "api" if n % 3 else "png:parameters",
                "image_format": "PNG",
                "width": 512 + 128 * n,
                "height": 768,
            }
        )
    data = tally.to_dict()
    assert data["top_models"] == {} and sum(data["prompt_lengths"].values()) == 12
    section = _section(render_html({"run_id": "R", "totals": {"rows_committed": 12}, "series": {}, "dataset": data}))
    svgs = {ET.fromstring(s).get("aria-label"): s for s in re.findall(r"<svg.*?</svg>", section, flags=re.S)}
    assert set(svgs) == {
        "prompt coverage (share of items)",
        "prompt length (characters)",
        "where the prompt came from",
        "image formats",
        "image sizes (megapixels)",
        "sources",
    }
    assert {label: value for label, value, _ in bars(svgs["where the prompt came from"])} == {
        "api": 8,
        "png:parameters": 4,
    }
    assert {label: value for label, value, _ in bars(svgs["image sizes (megapixels)"])} == data["sizes"]
    assert {label: value for label, value, _ in bars(svgs["prompt length (characters)"])} == data["prompt_lengths"]
    # no model named: a one-line note instead of a plot, and no empty table
    assert '<h3>top models</h3>\n<p class="empty">No item names a model.</p>' in section
    # tables stay beside their plots
    assert section.count("<table>") == 4

    none = DatasetTally()
    none.add({"source": "urls", "image_format": "JPEG"})
    section = _section(render_html({"run_id": "R", "totals": {}, "series": {}, "dataset": none.to_dict()}))
    assert "No item has a prompt, a negative prompt or a seed." in section
    assert "No item has a prompt: no prompt lengths to plot." in section
    assert 'aria-label="prompt coverage' not in section and 'aria-label="prompt length' not in section
    # a report written before prompt lengths were counted renders without that plot or its note
    old = {k: v for k, v in data.items() if k != "prompt_lengths"}
    section = _section(render_html({"run_id": "R", "totals": {}, "series": {}, "dataset": old}))
    assert "prompt length" not in section and 'aria-label="image sizes (megapixels)"' in section
