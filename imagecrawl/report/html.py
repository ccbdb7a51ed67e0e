"""The end-of-crawl report as one self-contained HTML page (inline CSS and SVG, no scripts). Pure:
it renders the same dict that is written as ``<run>.json``, so a page can be rebuilt from the JSON."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from imagecrawl.report.bars import render_columns, render_hbars
from imagecrawl.report.dataset import prompt_order, size_order
from imagecrawl.report.svg import PALETTE, Chart, Line, Markers, fmt_duration, fmt_number, render

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;margin-bottom:16px} .cards{display:flex;flex-wrap:wrap;gap:10px}
.nothing{background:#fde8e8;border-left:4px solid #c0392b;padding:8px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#666;font-size:12px}
table{border-collapse:collapse;margin:6px 0 12px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .site{margin:14px 0}
.empty{color:#666;font-style:italic} .pair{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.warn{color:#b00} details{margin-top:16px} pre{font-size:12px;background:#f7f7f7;padding:8px;overflow:auto}
"""

TOTALS = (
    ("items", "items scraped"),
    ("rows_committed", "rows committed"),
    ("shards_committed", "shards committed"),
    ("images_downloaded", "images downloaded"),
    ("requests", "requests"),
    ("duplicates_dropped", "duplicates dropped"),
    ("skipped_known", "known images skipped"),
    ("forgotten_refused", "forgotten rows refused"),
    ("optout_skipped", "opt-out skips"),
    ("responses_429", "HTTP 429"),
    ("retry_after_seen", "Retry-After seen"),
    ("bans_detected", "bans detected"),
    ("dead_sites", "dead sites cut off"),
    ("dropped_dead_site", "requests to dead sites dropped"),
    ("outbox_pending", "shards not committed"),
)


#: buckets averaged for the rate lines (a centred moving average: no per-bucket sawtooth)
SMOOTH_BUCKETS = 5


def smooth(values: list[Any], width: int = SMOOTH_BUCKETS) -> list[float | None]:
    """Centred moving average over ``width`` buckets; a missing bucket stays missing."""
    half = width // 2
    out: list[float | None] = []
    for i, value in enumerate(values):
        window = [float(v) for v in values[max(0, i - half) : i + half + 1] if v is not None]
        out.append(sum(window) / len(window) if value is not None and window else None)
    return out


def cumulative(per_second: list[Any], bucket_seconds: float) -> list[float]:
    """A per-second series summed up: the running total (rows committed so far)."""
    total, out = 0.0, []
    for value in per_second:
        total += float(value or 0) * bucket_seconds
        out.append(total)
    return out


#: span labels during which nothing went to the site: Retry-After, pauses and the ban states (not "slow")
HELD = frozenset({"retry-after", "paused", "cooldown", "banned", "probing", "abandoned", "no answer", "dead"})


def held_seconds(spans: list[dict[str, Any]]) -> float:
    """Seconds a site was held back (the union of its HELD spans: overlaps count once)."""
    intervals = sorted((float(s["start"]), float(s["end"])) for s in spans if s.get("label") in HELD)
    total, end = 0.0, float("-inf")
    for start, stop in intervals:
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _share(n: Any, total: int) -> str:
    return f"{100 * float(n) / total:.0f}%" if total else "-"


#: the dataset section's plots of counts: (key in the report's ``dataset``, heading, bar colour, note
#: shown instead of the plot when there is nothing to count); ``sizes`` is drawn as a histogram
DATASET_PLOTS = (
    ("metadata_sources", "where the prompt came from", PALETTE[0], "No prompt source recorded."),
    ("formats", "image formats", PALETTE[1], "No image format recorded."),
    ("top_models", "top models", PALETTE[2], "No item names a model."),
    ("sizes", "image sizes", PALETTE[4], "No image size recorded."),
    ("sources", "sources", PALETTE[5], "No source recorded."),
)


def _ordered(counts: dict[str, Any], order: list[str], keep_zero: set[str]) -> list[tuple[str, float]]:
    """``counts`` along a histogram's axis: every bin in ``order`` (zeros too, except those not in
    ``keep_zero``), then any label the axis does not know (a report from another version)."""
    bins = [(label, float(counts.get(label, 0))) for label in order if label in counts or label in keep_zero]
    return bins + [(label, float(n)) for label, n in counts.items() if label not in order]


def _plot_or_note(svg: str, note: str) -> str:
    return svg or f'<p class="empty">{escape(note)}</p>'


def _dataset_section(data: dict[str, Any]) -> list[str]:
    """What the scraped items hold: prompt coverage, where prompts came from, formats, models, sizes,
    each as a small plot over its table."""
    total = int(data.get("items") or 0)
    if not total:
        return []
    out = [f"<h2>Dataset ({fmt_number(total)} items scraped)</h2>", '<div class="cards">']
    coverage = (
        ("with_prompt", "with a prompt"),
        ("with_negative_prompt", "with a negative prompt"),
        ("with_seed", "with a seed"),
    )
    for key, label in coverage:
        out.append(_card(_share(data.get(key, 0), total), f"{label} ({fmt_number(float(data.get(key, 0)))})"))
    out.append("</div>")
    bars = [(label, float(data.get(key) or 0)) for key, label in coverage]
    out.append(
        _plot_or_note(
            render_hbars(
                "prompt coverage (share of items)", bars, total, PALETTE[3], scale_to_total=True, keep_zero=True
            ),
            "No item has a prompt, a negative prompt or a seed.",
        )
    )
    if "prompt_lengths" in data:
        lengths = _ordered(data["prompt_lengths"] or {}, prompt_order(), set(prompt_order()))
        histogram = render_columns("prompt length (characters)", lengths, data.get("with_prompt"), PALETTE[3])
        out.append(_plot_or_note(histogram, "No item has a prompt: no prompt lengths to plot."))
    for key, title, colour, note in DATASET_PLOTS:
        counts = data.get(key) or {}
        out.append(f"<h3>{escape(title)}</h3>")
        if key == "sizes":
            axis = size_order()
            bins = _ordered(counts, axis, set(axis[:-1]))
            plot = render_columns(f"{title} (megapixels)", bins, total, colour, show_title=False)
        else:
            plot = render_hbars(title, list(counts.items()), total, colour, show_title=False)
        if not counts or not plot:
            out.append(_plot_or_note(plot, note))
            continue
        table = _table([(name, n, _share(n, total)) for name, n in counts.items()], (title, "items", "share"))
        out.append(f'<div class="pair">{plot}{table}</div>')
    return out


def _card(value: Any, label: str, warn: bool = False) -> str:
    shown = fmt_number(float(value)) if isinstance(value, (int, float)) else escape(str(value))
    cls = ' class="card warn"' if warn else ' class="card"'
    return f"<div{cls}><b>{shown}</b><span>{escape(label)}</span></div>"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, (int, float)):
                shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
                cells.append(f'<td class="n">{shown}</td>')
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _site_chart(site: dict[str, Any], t: list[float], x_max: float) -> str:
    series = site.get("series", {})
    lines = [Line("requests/s (smoothed)", smooth(series.get("requests_per_second", [])), PALETTE[0])]
    if any(v is not None for v in series.get("pacing_rate", [])):
        lines.append(Line("pacing rate", series["pacing_rate"], PALETTE[2], dashed=True))
    markers = [
        Markers(name, series.get(key, []), colour)
        for name, key, colour in (
            ("429", "responses_429", "#d0021b"),
            ("503", "responses_503", "#8b572a"),
            ("403", "responses_403", "#4a4a4a"),
        )
        if any(series.get(key, []))
    ]
    chart = Chart(
        title=f"{site['site']}: request rate and pacing",
        t=t,
        lines=lines,
        y_label="requests/s",
        markers=markers,
        spans=site.get("spans", []),
        x_max=x_max,
    )
    return render(chart)


def render_html(report: dict[str, Any]) -> str:
    series = report.get("series", {})
    t = list(series.get("t", []))
    x_max = max(float(report.get("elapsed_seconds") or 0.0), t[-1] + series.get("bucket_seconds", 1) / 2 if t else 1)
    totals = report.get("totals", {})
    title = f"imagecrawl report: {report.get('spider', '?')} {report.get('run_id', '')}"
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<div class="meta">store <code>{escape(str(report.get("store", "")))}</code> · started '
        f"{escape(str(report.get('started_at', '')))} · ran {fmt_duration(float(report.get('elapsed_seconds') or 0))}"
        f" · finish reason <b>{escape(str(report.get('finish_reason', '')))}</b></div>",
    ]
    if not totals.get("rows_committed"):
        # A crawl that stored nothing says so first, with why, instead of reading like a finished one.
        parts.append(
            f'<p class="nothing"><b>Nothing stored.</b> Finish reason '
            f"<b>{escape(str(report.get('finish_reason', '')))}</b>; see the sites and the stats below.</p>"
        )
    parts.append('<div class="cards">')
    for key, label in TOTALS:
        if key in totals:
            warn = key in ("outbox_pending", "responses_429", "bans_detected", "dead_sites") and bool(totals[key])
            parts.append(_card(totals.get(key, 0), label, warn))
    parts.append("</div>")

    parts.append("<h2>Throughput</h2>")
    parts.append(
        render(
            Chart(
                title="items and images per second",
                t=t,
                lines=[
                    Line("items/s (smoothed)", smooth(series.get("items_per_second", [])), PALETTE[0]),
                    Line("images/s (smoothed)", smooth(series.get("images_per_second", [])), PALETTE[1]),
                ],
                y_label="per second",
                x_max=x_max,
            )
        )
    )
    # Shards commit hundreds of rows at once: as a rate that spike flattens the lines above, so rows
    # committed are drawn as the running total on a chart of their own.
    committed = series.get("rows_committed_per_second", [])
    if any(committed):
        parts.append(
            render(
                Chart(
                    title="rows committed to the store (running total)",
                    t=t,
                    lines=[Line("rows", cumulative(committed, float(series.get("bucket_seconds", 1.0))), PALETTE[3])],
                    y_label="rows",
                    x_max=x_max,
                )
            )
        )
    if any(v for v in series.get("outbox_backlog_shards", []) if v):
        parts.append(
            render(
                Chart(
                    title="outbox backlog (shards waiting for the store)",
                    t=t,
                    lines=[Line("shards", series["outbox_backlog_shards"], PALETTE[4])],
                    x_max=x_max,
                )
            )
        )

    parts.extend(_dataset_section(report.get("dataset") or {}))

    sites = report.get("sites", [])
    parts.append(f"<h2>Sites ({len(sites)})</h2>")
    if sites:
        rows = []
        for site in sites:
            statuses = site.get("statuses", {})
            rows.append(
                (
                    site["site"],
                    site.get("requests", 0),
                    sum(v for k, v in statuses.items() if k.startswith("2")),
                    statuses.get("429", 0),
                    statuses.get("503", 0),
                    statuses.get("403", 0),
                    site.get("retry_after_seen", 0),
                    round(held_seconds(site.get("spans", [])), 2),
                    site.get("state", ""),
                )
            )
        header = ("site", "requests", "2xx", "429", "503", "403", "Retry-After", "paused/banned s", "last state")
        parts.append(_table(rows, header))
        for site in sites[: int(report.get("plotted_sites", 8))]:
            parts.append(f'<div class="site">{_site_chart(site, t, x_max)}</div>')
        if report.get("other_sites"):
            parts.append(f"<p>{report['other_sites']} more site(s) counted under <code>(other)</code>.</p>")

    parts.append("<h2>Stats by reason</h2>")
    for group, counts in sorted(report.get("by_reason", {}).items()):
        rows = sorted(counts.items(), key=lambda kv: (-float(kv[1]), kv[0]))
        parts.append(f"<h3><code>{escape(group)}</code></h3>" + _table(rows, ("reason", "count")))
    parts.append(
        "<details><summary>All stats</summary><pre>"
        + escape(json.dumps(report.get("stats", {}), indent=1, sort_keys=True, default=str))
        + "</pre></details>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
