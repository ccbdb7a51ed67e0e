"""Inline SVG line charts: no JavaScript, no external CSS or fonts, so the page renders offline. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

#: Band colours by span label; unknown labels get grey.
SPAN_COLOURS = {
    "retry-after": "#f5a623",
    "paused": "#f5a623",
    "ban": "#d0021b",
    "banned": "#d0021b",
    "cooldown": "#bd10e0",
    "cooling": "#bd10e0",
    "probing": "#4a90e2",
}
PALETTE = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")


@dataclass
class Line:
    name: str
    values: Sequence[float | None]
    colour: str = PALETTE[0]
    dashed: bool = False


@dataclass
class Markers:
    """Event counts per bucket drawn as ticks along the bottom (e.g. HTTP 429 responses)."""

    name: str
    counts: Sequence[float]
    colour: str = "#d0021b"


@dataclass
class Chart:
    title: str
    t: Sequence[float]  # seconds from the start, one per bucket (bucket middles)
    lines: list[Line]
    y_label: str = ""
    markers: list[Markers] = field(default_factory=list)
    spans: list[dict[str, object]] = field(default_factory=list)  # {"start", "end", "label"}, seconds
    x_max: float | None = None
    width: int = 760
    height: int = 220


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        hours, rest = divmod(seconds, 3600)
        return f"{hours:.0f}h{rest / 60:02.0f}" if rest >= 60 else f"{hours:.0f}h"
    return f"{seconds / 86400:.1f}d"


def fmt_tick(seconds: float) -> str:
    """An exact time-axis label: ``0s 30s 60s 90s 2m 2m30 3m``, ``1h 1h30``, ``2d`` (never two equal labels)."""
    total = max(0, round(seconds))
    if total < 120:
        return f"{total}s"
    if total >= 2 * 86400 and total % 86400 == 0:
        return f"{total // 86400}d"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours == 0:
        return f"{minutes}m" if secs == 0 else f"{minutes}m{secs:02d}"
    return f"{hours}h" if rest == 0 else f"{hours}h{minutes:02d}"


def fmt_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp >= value * (1 - 1e-9):
            return step * exp
    return 10 * exp


def _x_ticks(x_max: float) -> list[float]:
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    step = next((s for s in steps if x_max / s <= 8), 86400 * max(1, math.ceil(x_max / 86400 / 8)))
    return [i * step for i in range(int(x_max // step) + 1)]


def render(chart: Chart) -> str:
    """One ``<svg>`` element (class ``chart``) with a ``<polyline>`` per continuous run of each line."""
    w, h = chart.width, chart.height
    left, right, top, bottom = 56, 12, 42, 34
    pw, ph = w - left - right, h - top - bottom
    t = list(chart.t)
    x_max: float = max(chart.x_max or (max(t) if t else 1.0), 1.0)
    finite = [v for line in chart.lines for v in line.values if v is not None and math.isfinite(v)]
    y_max = nice_max(max(finite, default=0.0))

    def x(sec: float) -> float:
        return left + pw * min(max(sec, 0.0), x_max) / x_max

    def y(value: float) -> float:
        return top + ph * (1 - min(max(value, 0.0), y_max) / y_max)

    out: list[str] = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{escape(chart.title)}">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="#222">{escape(chart.title)}</text>',
    ]
    # bands first, under everything
    for span in chart.spans:
        start, end = float(span["start"]), float(span["end"])  # type: ignore[arg-type]
        label = str(span.get("label", ""))
        x0, x1 = x(start), x(end)
        colour = SPAN_COLOURS.get(label, "#999999")
        out.append(
            f'<rect class="span span-{escape(label)}" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{ph}" fill="{colour}" fill-opacity="0.22"><title>{escape(label)} '
            f"{fmt_duration(start)} to {fmt_duration(end)}</title></rect>"
        )
    # grid and axes
    for i in range(5):
        value = y_max * i / 4
        yy = y(value)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
        out.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" font-size="10" text-anchor="end" fill="#555">'
            f"{fmt_number(value)}</text>"
        )
    for tick in _x_ticks(x_max):
        xx = x(tick)
        out.append(f'<line x1="{xx:.1f}" y1="{top + ph}" x2="{xx:.1f}" y2="{top + ph + 4}" stroke="#555"/>')
        out.append(
            f'<text x="{xx:.1f}" y="{top + ph + 16}" font-size="10" text-anchor="middle" fill="#555">'
            f"{fmt_tick(tick)}</text>"
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if chart.y_label:
        out.append(
            f'<text x="12" y="{top + ph / 2:.1f}" font-size="10" fill="#555" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + ph / 2:.1f})">{escape(chart.y_label)}</text>'
        )
    # lines
    for line in chart.lines:
        runs: list[list[str]] = [[]]
        for sec, point in zip(t, line.values, strict=False):
            if point is None or not math.isfinite(point):
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{x(sec):.1f},{y(point):.1f}")
        dash = ' stroke-dasharray="5,3"' if line.dashed else ""
        for run in runs:
            if len(run) == 1:  # a lone point: draw it as a short flat segment so it is visible
                px, py = run[0].split(",")
                run = [f"{float(px) - 1.5:.1f},{py}", f"{float(px) + 1.5:.1f},{py}"]
            if run:
                out.append(
                    f'<polyline class="series" data-series="{escape(line.name)}" fill="none" '
                    f'stroke="{line.colour}" stroke-width="1.6"{dash} points="{" ".join(run)}"/>'
                )
    # event ticks along the bottom
    for offset, markers in enumerate(chart.markers):
        base = top + ph - 2 - 7 * offset
        for sec, count in zip(t, markers.counts, strict=False):
            if count > 0:
                xx = x(sec)
                out.append(
                    f'<path class="marker marker-{escape(markers.name)}" d="M{xx - 3.5:.1f},{base:.1f} '
                    f'L{xx + 3.5:.1f},{base:.1f} L{xx:.1f},{base - 6:.1f} Z" fill="{markers.colour}">'
                    f"<title>{fmt_number(count)} x {escape(markers.name)} at {fmt_duration(sec)}</title></path>"
                )
    # legend
    entries: list[tuple[str, str, str]] = [(line.name, line.colour, "line") for line in chart.lines]
    entries += [(m.name, m.colour, "marker") for m in chart.markers]
    for label in sorted({str(s.get("label", "")) for s in chart.spans}):
        entries.append((label, SPAN_COLOURS.get(label, "#999999"), "band"))
    lx: float = left
    for name, colour, kind in entries:
        if kind == "line":
            swatch = f'<line x1="{lx:.1f}" y1="30" x2="{lx + 14:.1f}" y2="30" stroke="{colour}" stroke-width="2"/>'
        elif kind == "marker":
            swatch = f'<path d="M{lx + 3:.1f},33 L{lx + 11:.1f},33 L{lx + 7:.1f},26 Z" fill="{colour}"/>'
        else:
            swatch = f'<rect x="{lx:.1f}" y="25" width="14" height="10" fill="{colour}" fill-opacity="0.35"/>'
        out.append(swatch)
        out.append(f'<text x="{lx + 17:.1f}" y="34" font-size="10" fill="#333">{escape(name)}</text>')
        lx += 6.2 * len(name) + 30
    out.append("</svg>")
    return "".join(out)
