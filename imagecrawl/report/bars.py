"""Inline SVG bar charts for the report's dataset section: horizontal bars for categories (metadata
sources, formats, models, coverage) and columns for ordered bins (image sizes, prompt lengths). Same
technique as :mod:`imagecrawl.report.svg`: no JavaScript, no external files. Pure.

Every bar is a ``<rect class="bar">`` carrying ``data-label`` (the full label) and ``data-value`` (its
count), with a ``<title>`` tooltip; a label too long for the chart is cut with an ellipsis and keeps its
full text in the tooltip. A chart with nothing to draw renders as the empty string: the caller writes
a one-line note instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from imagecrawl.report.svg import PALETTE, fmt_number

#: label characters shown left of a horizontal bar (longer labels end in an ellipsis)
LABEL_CHARS = 30
#: label characters shown under a column
COLUMN_LABEL_CHARS = 12
ROW_HEIGHT = 20


def clip(label: str, limit: int) -> str:
    """``label`` in at most ``limit`` characters: a longer one keeps its start and its end around an
    ellipsis (model names that differ only in a version suffix stay apart)."""
    if len(label) <= limit:
        return label
    head = max(1, (limit - 1) * 2 // 3)
    tail = max(0, limit - 1 - head)
    return label[:head] + "…" + (label[-tail:] if tail else "")


def _share(value: float, total: float | None) -> str:
    return f" ({100 * value / total:.0f}%)" if total else ""


def _num(value: float) -> str:
    return f"{value:.0f}" if value.is_integer() else f"{value:.6g}"


def _bars(counts: Sequence[tuple[str, float]], keep_zero: bool) -> list[tuple[str, float]]:
    bars = [(str(label), float(value)) for label, value in counts if keep_zero or float(value) > 0]
    return bars if any(value > 0 for _, value in bars) else []


def render_hbars(
    title: str,
    counts: Sequence[tuple[str, float]],
    total: float | None = None,
    colour: str = PALETTE[0],
    width: int = 520,
    scale_to_total: bool = False,
    keep_zero: bool = False,
    show_title: bool = True,
) -> str:
    """One horizontal bar per ``(label, count)``, in the order given (zero counts are left out).

    Bar lengths are proportional to the counts (the largest fills the plot), or to ``total`` with
    ``scale_to_total`` (shares of the whole, e.g. prompt coverage). With ``total`` each value label
    also shows its share; ``keep_zero`` keeps zero rows (as a hairline). ``show_title=False`` leaves
    the title to the page's own heading (it stays the SVG's ``<title>``). Returns ``""`` when every
    count is zero."""
    bars = _bars(counts, keep_zero)
    if not bars:
        return ""
    left, right, top, bottom = 8 + 6.2 * LABEL_CHARS, 96, 28 if show_title else 6, 8
    height = int(top + ROW_HEIGHT * len(bars) + bottom)
    pw = width - left - right
    scale = float(total) if scale_to_total and total else max(value for _, value in bars)
    out = _svg_head("bars", title, width, height, show_title)
    for i, (label, value) in enumerate(bars):
        y = top + ROW_HEIGHT * i
        length = max(pw * min(value / scale, 1.0), 1.5 if value > 0 else 0.5)
        tip = f"{escape(label)}: {fmt_number(value)}{_share(value, total)}"
        out.append(
            f'<text class="label" x="{left - 6:.1f}" y="{y + 14}" font-size="11" text-anchor="end" fill="#333">'
            f"<title>{escape(label)}</title>{escape(clip(label, LABEL_CHARS))}</text>"
        )
        out.append(
            f'<rect class="bar" data-label="{escape(label)}" data-value="{_num(value)}" x="{left:.1f}" y="{y + 3}" '
            f'width="{length:.1f}" height="{ROW_HEIGHT - 6}" fill="{colour}"><title>{tip}</title></rect>'
        )
        out.append(
            f'<text class="value" x="{left + length + 4:.1f}" y="{y + 14}" font-size="11" fill="#555">'
            f"{fmt_number(value)}{_share(value, total)}</text>"
        )
    out.append(f'<line x1="{left:.1f}" y1="{top - 2}" x2="{left:.1f}" y2="{height - bottom}" stroke="#999"/>')
    out.append("</svg>")
    return "".join(out)


def _svg_head(kind: str, title: str, width: int, height: int, show_title: bool) -> list[str]:
    """The opening of a plot: the SVG element, its title (a tooltip, and on the plot unless the page's
    own heading shows it) and a white background."""
    out = [
        f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
    ]
    if show_title:
        out.append(f'<text x="8" y="16" font-size="13" font-weight="bold" fill="#222">{escape(title)}</text>')
    return out


def render_columns(
    title: str,
    bins: Sequence[tuple[str, float]],
    total: float | None = None,
    colour: str = PALETTE[3],
    x_label: str = "",
    width: int = 520,
    height: int = 200,
    show_title: bool = True,
) -> str:
    """A histogram: one column per ``(bin label, count)`` in the order given (the bins' own order;
    empty bins stay as gaps so the axis keeps its shape). Returns ``""`` when every bin is empty."""
    columns = [(str(label), float(value)) for label, value in bins]
    if not any(value > 0 for _, value in columns):
        return ""
    left, right, top, bottom = 16, 16, 40 if show_title else 20, 34 + (12 if x_label else 0)
    pw, ph = width - left - right, height - top - bottom
    slot = pw / len(columns)
    peak = max(value for _, value in columns)
    chars = max(4, min(COLUMN_LABEL_CHARS, int(slot / 6.2)))
    out = _svg_head("columns", title, width, height, show_title)
    for i, (label, value) in enumerate(columns):
        cx = left + slot * (i + 0.5)
        bar_h = ph * value / peak
        tip = f"{escape(label)}: {fmt_number(value)}{_share(value, total)}"
        if value > 0:
            out.append(
                f'<rect class="bar" data-label="{escape(label)}" data-value="{_num(value)}" '
                f'x="{cx - slot * 0.4:.1f}" y="{top + ph - bar_h:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{max(bar_h, 1.5):.1f}" fill="{colour}"><title>{tip}</title></rect>'
            )
            out.append(
                f'<text class="value" x="{cx:.1f}" y="{top + ph - bar_h - 4:.1f}" font-size="10" '
                f'text-anchor="middle" fill="#555">{fmt_number(value)}</text>'
            )
        out.append(
            f'<text class="label" x="{cx:.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle" '
            f'fill="#333"><title>{escape(label)}</title>{escape(clip(label, chars))}</text>'
        )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>')
    if x_label:
        out.append(
            f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="10" text-anchor="middle" fill="#555">'
            f"{escape(x_label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
