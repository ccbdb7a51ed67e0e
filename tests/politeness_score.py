"""Scoring a politeness run from the sandbox's request log: goodput, 429s, the start-up peak, requests
inside Retry-After windows, overloaded seconds; and the goals a polite crawler meets. Shared by
``benchmarks/politeness.py`` and ``tests/test_politeness_measure.py``."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, fields
from typing import Any

from tests.sandbox.misbehave import max_rate_per_second, requests_inside_windows

#: the goals: goodput >= 0.9 C, <= 2 % 429s after warm-up, 0 requests inside Retry-After,
#: no second above 1.25 C after warm-up
GOODPUT_GOAL = 0.9
SHARE_429_GOAL = 0.02
OVER_FACTOR = 1.25
#: the start-up ramp may go one start-up step (x1.5) above C before the site's first 429 says where C is
STARTUP_GOAL = 1.5
#: seconds after the first 429 that still belong to the start-up (the crawler answers it)
START_UP_SETTLE = 2.0
#: short crawls (a fixed number of requests): the goodput goal over the whole crawl, and the seconds
#: after which no second may hold more than 1.25 C + 1 requests
SHORT_GOODPUT_GOAL = 0.9
SHORT_SETTLE = 5.0


@dataclass
class Row:
    name: str
    goodput: float
    share_429: float
    startup_peak: float
    max_1s: float
    max_1s_late: float
    seconds_over: float
    inside_retry_after: float
    overloaded: float
    longest_overload: float
    requests: float


def measure(name: str, records: list[dict[str, Any]], capacity: float, warmup: float) -> Row:
    records = sorted(records, key=lambda r: r["t"])
    t0 = records[0]["t"]
    t_end = records[-1]["t"]
    # The start-up: the warm-up, or longer, until the crawler has met the limit (its first 429) and had
    # START_UP_SETTLE seconds to answer it: a token bucket's burst hides the limit until it is drained.
    first_429 = next((r["t"] for r in records if r["status"] == 429), None)
    settled = t0 + warmup if first_429 is None else max(t0 + warmup, first_429 + START_UP_SETTLE)
    warmup = settled - t0
    early = [r["t"] for r in records if r["t"] < settled]
    late = [r for r in records if r["t"] >= settled]
    span = max(1e-9, t_end - settled)
    ok = sum(r["status"] == 200 for r in late)
    seconds = sorted({int(r["t"] - t0) for r in records if r["status"] == 429})
    longest = 0
    for _, run in itertools.groupby(enumerate(seconds), key=lambda p: p[1] - p[0]):
        longest = max(longest, len(list(run)))
    # whole seconds since the first request, from the first one after the warm-up to the last complete one
    per_second: dict[int, int] = {}
    for r in late:
        per_second[int(r["t"] - t0)] = per_second.get(int(r["t"] - t0), 0) + 1
    last_whole = int(t_end - t0) - 1
    over = sum(n > OVER_FACTOR * capacity for s, n in per_second.items() if math.ceil(warmup) <= s <= last_whole)
    return Row(
        name=name,
        goodput=ok / span / capacity,
        share_429=sum(r["status"] == 429 for r in late) / max(1, len(late)),
        startup_peak=max_rate_per_second(early),
        max_1s=max_rate_per_second([r["t"] for r in records]),
        max_1s_late=max_rate_per_second([r["t"] for r in late]),
        seconds_over=over,
        inside_retry_after=requests_inside_windows(records),
        overloaded=len(seconds),
        longest_overload=longest,
        requests=len(records),
    )


def measure_short(name: str, records: list[dict[str, Any]], capacity: float) -> Row:
    """A short crawl, over its whole length (its start-up is a good part of it): goodput from the first
    request to the last answer, 429s of all requests; ``max_1s_late`` and ``seconds_over`` (whole
    seconds above 1.25 C + 1) after the first SHORT_SETTLE seconds."""
    records = sorted(records, key=lambda r: r["t"])
    t0 = records[0]["t"]
    t_end = max(r["t"] + float(r.get("dur", 0.0)) for r in records)
    late = [r["t"] for r in records if r["t"] >= t0 + SHORT_SETTLE]
    per_second: dict[int, int] = {}
    for t in late:
        per_second[int(t - t0)] = per_second.get(int(t - t0), 0) + 1
    seconds = sorted({int(r["t"] - t0) for r in records if r["status"] == 429})
    longest = 0
    for _, run in itertools.groupby(enumerate(seconds), key=lambda p: p[1] - p[0]):
        longest = max(longest, len(list(run)))
    return Row(
        name=name,
        goodput=sum(r["status"] == 200 for r in records) / max(1e-9, t_end - t0) / capacity,
        share_429=sum(r["status"] == 429 for r in records) / len(records),
        startup_peak=max_rate_per_second([r["t"] for r in records if r["t"] < t0 + SHORT_SETTLE]),
        max_1s=max_rate_per_second([r["t"] for r in records]),
        max_1s_late=max_rate_per_second(late),
        seconds_over=sum(n > OVER_FACTOR * capacity + 1 for n in per_second.values()),
        inside_retry_after=requests_inside_windows(records),
        overloaded=len(seconds),
        longest_overload=longest,
        requests=len(records),
    )


def median_row(rows: list[Row]) -> Row:
    values: dict[str, Any] = {"name": rows[0].name}
    for f in fields(Row):
        if f.name != "name":
            values[f.name] = statistics.median(getattr(r, f.name) for r in rows)
    return Row(**values)


def goals(r: Row, capacity: float, short: bool = False) -> list[tuple[str, bool]]:
    if short:
        return [
            (f"goodput >= {SHORT_GOODPUT_GOAL:g} C", r.goodput >= SHORT_GOODPUT_GOAL),
            (f"429s <= {100 * SHARE_429_GOAL:g}%", r.share_429 <= SHARE_429_GOAL),
            ("0 inside Retry-After", r.inside_retry_after == 0),
            (f"no 1 s > {OVER_FACTOR:g} C + 1 after {SHORT_SETTLE:g} s", r.max_1s_late <= OVER_FACTOR * capacity + 1),
        ]
    return [
        (f"start-up peak <= {STARTUP_GOAL:g} C", r.startup_peak <= STARTUP_GOAL * capacity),
        (f"goodput >= {GOODPUT_GOAL:g} C", r.goodput >= GOODPUT_GOAL),
        (f"429s <= {100 * SHARE_429_GOAL:g}%", r.share_429 <= SHARE_429_GOAL),
        ("0 inside Retry-After", r.inside_retry_after == 0),
        (f"no second > {OVER_FACTOR:g} C", r.seconds_over == 0),
    ]
