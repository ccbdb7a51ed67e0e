"""The pure parts of the report: bounded time series, spans, Retry-After parsing, SVG and HTML rendering."""

from __future__ import annotations

import math
import re

import pytest

from imagecrawl.report.html import render_html
from imagecrawl.report.series import Spans, Timeline
from imagecrawl.report.svg import Chart, Line, Markers, _x_ticks, fmt_duration, fmt_tick, nice_max, render


def test_timeline_stays_bounded_over_four_days_and_keeps_totals() -> None:
    tl = Timeline(start=1000.0, capacity=64)
    total = 0
    for second in range(0, 4 * 86400, 7):  # one event every 7 s for four days
        tl.add("items", 1000.0 + second, 2)
        tl.gauge("backlog", 1000.0 + second, second % 5)
        total += 2
    assert tl.n <= 64
    assert all(len(v) == tl.n for v in (*tl.counters.values(), *tl.gauges.values()))
    assert tl.total("items") == total
    assert tl.width >= 4 * 86400 / 64  # widened by doubling
    assert math.log2(tl.width).is_integer()
    # the rate integrates back to the total
    assert sum(tl.rate("items")) * tl.width == pytest.approx(total)
    assert len(tl.times()) == tl.n and tl.times()[0] == tl.width / 2


def test_timeline_series_created_late_are_aligned_and_gauges_keep_the_last_value() -> None:
    tl = Timeline(start=0.0, capacity=4)
    tl.add("a", 0.5)
    tl.add("a", 3.5)
    tl.gauge("g", 0.2, 1.0)
    tl.gauge("g", 0.9, 2.0)
    tl.add("late", 3.9, 5)
    assert list(tl.counters["late"]) == [0, 0, 0, 5]
    assert tl.level("g") == [2.0, None, None, None]
    tl.add("a", 4.5)  # past capacity: pairs merge, width doubles
    assert tl.width == 2.0 and tl.n == 3
    assert list(tl.counters["a"]) == [1, 1, 1]
    assert list(tl.counters["late"]) == [0, 5, 0]
    assert tl.level("g") == [2.0, None, None]
    assert tl.level("missing") == [None] * 3 and tl.rate("missing") == [0.0] * 3


def test_recent_rate_counts_only_the_window() -> None:
    tl = Timeline(start=0.0, capacity=100)
    for i in range(50):
        tl.add("r", i + 0.5, 10 if i >= 40 else 1)
    assert tl.recent_rate("r", now=50.0, seconds=10) == pytest.approx(10.0)
    assert tl.recent_rate("r", now=50.0, seconds=50) == pytest.approx((40 + 100) / 50)
    assert tl.recent_rate("none", now=50.0, seconds=10) == 0.0


def test_spans_merge_and_stay_bounded() -> None:
    spans = Spans(capacity=10)
    spans.add(0, 5, "retry-after")
    spans.add(3, 8, "retry-after")  # overlaps: merged
    spans.add(4, 6, "ban")  # other label: kept apart
    assert spans.items == [[0, 8, "retry-after"], [4, 6, "ban"]]
    spans.extend_to("ban", 6, 9)
    assert spans.items[-1] == [4, 9, "ban"]
    for i in range(100):
        spans.add(100 + 10 * i, 101 + 10 * i, "retry-after")
    assert len(spans.items) <= 10
    assert spans.items[-1][1] == 101 + 10 * 99  # the latest end survives merging
    assert [s for s in spans.active(100 + 10 * 99 + 0.5)]
    assert spans.to_list(origin=100)[-1]["end"] == 1 + 10 * 99


def test_svg_chart_points_markers_and_bands() -> None:
    svg = render(
        Chart(
            title="t <1>",
            t=[0.5, 1.5, 2.5, 3.5],
            lines=[Line("rate", [1.0, None, 3.0, 4.0]), Line("lone", [None, 2.0, None, None])],
            markers=[Markers("429", [0, 2, 0, 1])],
            spans=[{"start": 1.0, "end": 2.0, "label": "retry-after"}],
        )
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "t &lt;1&gt;" in svg and "<1>" not in svg
    polylines = re.findall(r'<polyline[^>]*data-series="(\w+)"[^>]*points="([^"]+)"', svg)
    # the gap splits "rate" in two runs; a lone point is drawn as a short segment
    assert [name for name, _ in polylines] == ["rate", "rate", "lone"]
    assert all(len(points.split()) >= 1 for _, points in polylines)
    assert len(polylines[2][1].split()) == 2
    assert svg.count('class="marker marker-429"') == 2
    assert svg.count('class="span span-retry-after"') == 1


def test_nice_numbers() -> None:
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 7, 11, 240)] == [1, 0.5, 1, 5, 10, 20, 250]
    assert [fmt_duration(s) for s in (5, 300, 7200, 3 * 86400)] == ["5s", "5m", "2h", "3.0d"]
    # axis ticks are exact: a 3.5-minute crawl no longer reads "0s 30s 60s 2m 2m 2m 3m"
    assert [fmt_tick(t) for t in _x_ticks(210)] == ["0s", "30s", "60s", "90s", "2m", "2m30", "3m", "3m30"]
    assert [fmt_tick(t) for t in (5400, 7200, 9000, 3 * 86400)] == ["1h30", "2h", "2h30", "3d"]


def test_html_is_self_contained_and_escaped() -> None:
    report = {
        "run_id": "R",
        "spider": "<x>",
        "elapsed_seconds": 10,
        "totals": {"items": 3, "responses_429": 1},
        "series": {"bucket_seconds": 1.0, "t": [0.5, 1.5], "items_per_second": [1, 2]},
        "sites": [{"site": "a.example", "requests": 2, "statuses": {"429": 1}, "series": {}, "spans": []}],
        "by_reason": {"imagecrawl/dedupe/dropped": {"sha256": 2}},
        "stats": {"k": "</pre><script>"},
    }
    page = render_html(report)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "&lt;x&gt;" in page
    assert page.count("<svg") == 2  # throughput + the one site
    assert "src=" not in page and "href=" not in page
    # no row committed: the page says so first, with the finish reason
    assert "Nothing stored." in page
    stored = render_html({**report, "totals": {"rows_committed": 3}, "finish_reason": "finished"})
    assert "Nothing stored." not in stored


def test_site_state_from_responses_and_from_the_pacing_snapshot() -> None:
    from imagecrawl.report.extensions.monitor import SiteActivity

    site = SiteActivity("a.example")
    assert site.state(now=100.0, window=30) == "ok"
    site.requests = 3
    assert site.state(now=100.0, window=30) == "no answer"  # requests went out, nothing came back
    site.statuses = {"200": 1}
    site.last_429_at = 90.0
    assert site.state(now=100.0, window=30) == "throttled (429/503)"
    assert site.state(now=200.0, window=30) == "ok"
    site.spans.add(95.0, 125.0, "retry-after")
    assert site.state(now=100.0, window=30) == "paused 25s (Retry-After)"
    site.last_403_at, site.last_ok_at = 150.0, 140.0
    assert site.state(now=160.0, window=30) == "403s (blocked?)"
    site.last_ok_at = 155.0
    assert site.state(now=160.0, window=30) == "ok"
    # a published pacing/ban state wins over what the responses say
    site.snapshot = {"rate": 0.5, "state": "cooldown", "paused_until": None}
    assert site.state(now=160.0, window=30) == "cooldown"
    site.snapshot = {"rate": 0.0, "state": "banned", "paused_until": 220.0}
    assert site.state(now=160.0, window=30) == "paused 60s (banned)"
    site.snapshot = {"rate": 2.0, "state": "ok", "paused_until": None}
    assert site.state(now=100.0, window=30) == "paused 25s (Retry-After)"


def test_rates_are_smoothed_and_commits_are_a_running_total() -> None:
    from imagecrawl.report.html import cumulative, smooth

    sawtooth = [0, 4, 0, 4, 0, 4, 0, 4, None]
    smoothed = smooth(sawtooth)
    assert smoothed[-1] is None
    assert all(1.3 < v < 2.7 for v in smoothed[2:-2] if v is not None)  # around the mean of 2, no 0-4 swings
    assert cumulative([0, 512, 0, 0, 256], 0.5) == [0, 256, 256, 256, 384]


def test_held_seconds_counts_pauses_and_bans_once_and_not_slow_spans() -> None:
    from imagecrawl.report.html import held_seconds

    spans = [
        {"start": 0, "end": 10, "label": "slow"},  # paced down, still sending: not held
        {"start": 2, "end": 6, "label": "retry-after"},
        {"start": 4, "end": 8, "label": "paused"},  # overlaps the Retry-After: counted once
        {"start": 20, "end": 25, "label": "cooldown"},
    ]
    assert held_seconds(spans) == 11
    assert held_seconds([{"start": 0, "end": 5, "label": "slow"}]) == 0


def test_dataset_tally_and_section() -> None:
    from imagecrawl.report.dataset import DatasetTally

    tally = DatasetTally()
    tally.add(
        {
            "source": "a",
            "prompt": "cat",
            "seed": 1,
            "metadata_source": "api",
            "image_format": "PNG",
            "model": "sdxl",
            "width": 1024,
            "height": 1024,
        }
    )
    tally.add(
        {"source": "a", "prompt": None, "metadata_source": None, "image_format": "JPEG", "width": 512, "height": 512}
    )
    data = tally.to_dict()
    assert data["items"] == 2 and data["with_prompt"] == 1 and data["with_seed"] == 1
    assert data["metadata_sources"] == {"api": 1, "none": 1} and data["formats"] == {"PNG": 1, "JPEG": 1}
    assert data["top_models"] == {"sdxl": 1} and data["sizes"] == {"0.6-1 MP": 1, "0.25-0.6 MP": 1}
    page = render_html({"run_id": "R", "totals": {"rows_committed": 2}, "series": {}, "dataset": data})
    assert "<h2>Dataset (2 items scraped)</h2>" in page and "where the prompt came from" in page
    assert "top models" in page and "50%" in page
