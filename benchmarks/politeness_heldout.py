"""Held-out sites for ``benchmarks/politeness.py --held-out N`` (or ``--grid``): short crawls of sites
drawn from ranges of capacity, bucket, latency, Retry-After habit and crawl length, so the controller is
judged on sites it was not tuned on, all in one table.

Each site is a :class:`~benchmarks.politeness.Site` with ``requests`` set: a crawl of that many images,
scored over its whole length (goodput / C from the first request to the last answer, the share of 429s,
the most requests within any 1 s after the first five, requests inside a Retry-After window) plus its
start-up peak (the most within any 1 s until 2 s after the first 429), over C.  ``--simulate`` runs the
same sites in virtual time through the gate and the sandbox's own admission (``tests/pacing_sim.py``):
seconds instead of minutes, for a first look; the crawls against the sandbox are the measure.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from dataclasses import dataclass
from typing import Any

from tests.politeness_score import OVER_FACTOR, SHARE_429_GOAL, SHORT_GOODPUT_GOAL, STARTUP_GOAL, Row, measure_short

#: default ranges (``--capacities`` etc. override them)
CAPACITIES = (3.0, 7.0, 12.0, 20.0)
BURSTS = ("1", "C")  # a number of tokens, or a multiple of C ("C", "0.5C", "2C")
LATENCIES = (0.03, 0.1, 0.3)
SHARES = (0.0, 0.5, 1.0)  # of the 429s that carry Retry-After
LENGTHS = (100, 300, 1000)
RETRY_AFTER = 2.0
GOAL_NAMES = ("goodput", "429s", "Retry-After", "peak after 5 s", "start-up")


@dataclass(frozen=True)
class Variant:
    capacity: float
    burst: str
    latency: float
    share: float
    requests: int
    retry_after: float = RETRY_AFTER

    @property
    def tokens(self) -> float:
        return burst_tokens(self.burst, self.capacity)

    @property
    def name(self) -> str:
        ra = "none" if self.share == 0 else ("all" if self.share == 1 else f"{self.share:g}")
        return (
            f"C{self.capacity:g} b{self.burst} {1000 * self.latency:g}ms "
            f"RA {ra} ({self.retry_after:g} s) n{self.requests}"
        )


def burst_tokens(text: str, capacity: float) -> float:
    """``"1"`` -> 1 token; ``"C"`` -> C; ``"0.5C"`` -> C / 2."""
    t = text.strip()
    if t.upper().endswith("C"):
        factor = t[:-1].strip()
        return max(1.0, (float(factor) if factor else 1.0) * capacity)
    return max(1.0, float(t))


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"need non-negative numbers: {text!r}")
    return values


def _bursts(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    try:
        for v in values:
            burst_tokens(v, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bursts are token counts or multiples of C (1, C, 0.5C): {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("no burst given")
    return values


def add_heldout_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("held-out sites (short crawls on sites drawn from ranges)")
    g.add_argument("--held-out", type=int, default=0, metavar="N", help="N sites drawn at random from the ranges")
    g.add_argument("--grid", action="store_true", help="every combination of the ranges instead")
    g.add_argument("--seed", type=int, default=0, help="of the draw")
    g.add_argument("--capacities", type=_floats, default=CAPACITIES, metavar="C,..", help="req/s")
    g.add_argument("--bursts", type=_bursts, default=BURSTS, metavar="B,..", help="tokens, or multiples of C: 1,C,2C")
    g.add_argument("--latencies", type=_floats, default=LATENCIES, metavar="S,..", help="seconds")
    g.add_argument("--shares", type=_floats, default=SHARES, metavar="F,..", help="of the 429s with Retry-After")
    g.add_argument("--lengths", type=_floats, default=LENGTHS, metavar="N,..", help="images per crawl")
    g.add_argument("--retry-after-seconds", type=float, default=RETRY_AFTER, help="Retry-After value, s")
    g.add_argument("--simulate", action="store_true", help="virtual time (tests/pacing_sim.py), not real crawls")


def variants(args: argparse.Namespace) -> list[Variant]:
    """The held-out sites ``args`` asks for (``--grid``: all combinations; else ``--held-out`` drawn)."""
    if any(s > 1 for s in args.shares):
        raise ValueError("--shares are fractions of the 429s (0 to 1)")
    if any(c <= 0 for c in args.capacities) or any(n < 1 for n in args.lengths):
        raise ValueError("--capacities and --lengths must be positive")
    axes = (args.capacities, args.bursts, args.latencies, args.shares, tuple(int(n) for n in args.lengths))
    if args.grid:
        combos = list(itertools.product(*axes))
    else:
        rng = random.Random(args.seed)
        combos = [tuple(rng.choice(axis) for axis in axes) for _ in range(args.held_out)]
    return [
        Variant(float(c), str(b), float(lat), float(s), int(n), args.retry_after_seconds) for c, b, lat, s, n in combos
    ]


def simulate(v: Variant, seed: int, args: argparse.Namespace) -> tuple[Row, float]:
    """One crawl of ``v`` in virtual time: its row (as :func:`measure_short` scores it) and start-up peak."""
    from tests.pacing_sim import short_crawl

    out = short_crawl(
        v.capacity,
        v.tokens,
        v.retry_after,
        v.share,
        v.requests,
        latency=v.latency,
        per_queued=args.latency_per_queued,
        seed=seed,
    )
    return measure_short("imagecrawl (simulated)", out.records, v.capacity), out.startup_peak


def startup_peak(records: list[dict[str, Any]], capacity: float) -> float:
    """The most requests within any 1 s until 2 s after the first 429 (the first five seconds if none),
    over C."""
    from tests.pacing_sim import startup_peak as peak

    return peak(records) / capacity


def goals(v: Variant, r: Row, start_peak: float) -> dict[str, bool]:
    c = v.capacity
    return {
        "goodput": r.goodput >= SHORT_GOODPUT_GOAL,
        "429s": r.share_429 <= SHARE_429_GOAL,
        "Retry-After": r.inside_retry_after == 0,
        "peak after 5 s": r.max_1s_late <= OVER_FACTOR * c + 1,
        "start-up": start_peak <= STARTUP_GOAL,
    }


def table(results: list[tuple[Variant, Row, float]], args: argparse.Namespace, simulated: bool) -> str:
    how = "simulated (virtual time, tests/pacing_sim.py)" if simulated else "crawls against the sandbox"
    runs = f"medians of {args.repeats}" if args.repeats > 1 else "one crawl each"
    head = (
        f"Held-out sites, {how}, {runs}; imagecrawl with the benchmark's settings (cap 200 req/s, "
        f"concurrency 16, start 2 req/s). Goals: goodput >= {SHORT_GOODPUT_GOAL:g} C, 429s <= "
        f"{100 * SHARE_429_GOAL:g} %, 0 inside Retry-After, no 1 s above {OVER_FACTOR:g} C + 1 after the "
        f"first 5 s; and the start-up goal, a start-up peak <= {STARTUP_GOAL:g} C.\n\n"
    )
    lines = [
        "| site | goodput / C | 429s | peak after 5 s (/ C) | start-up peak / C | inside Retry-After "
        "| seconds | goals failed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    failed: dict[str, int] = {}
    for v, r, sp in results:
        bad = [k for k, ok in goals(v, r, sp).items() if not ok]
        for k in bad:
            failed[k] = failed.get(k, 0) + 1
        lines.append(
            f"| {v.name} | {r.goodput:.2f} | {100 * r.share_429:.1f}% | {r.max_1s_late:g} "
            f"({r.max_1s_late / v.capacity:.2f}) | {sp:.2f} | {r.inside_retry_after:g} | "
            f"{v.requests / max(1e-9, r.goodput * v.capacity):.0f} | {', '.join(bad) or '-'} |"
        )
    if results:
        goodputs = [r.goodput for _, r, _ in results]
        lines.append("")
        lines.append(
            f"{len(results)} sites: median goodput {statistics.median(goodputs):.2f} C (lowest "
            f"{min(goodputs):.2f}); sites failing each goal: "
            + ", ".join(
                f"{k} {failed.get(k, 0)}" for k in ("goodput", "429s", "Retry-After", "peak after 5 s", "start-up")
            )
        )
        lines += ["", *summary(results)]
    return head + "\n".join(lines) + "\n"


def summary(results: list[tuple[Variant, Row, float]]) -> list[str]:
    """Per bucket, and per bucket and crawl length: the median goodput / C and how many sites fail
    each goal (a before/after comparison reads these lines, not the site table)."""
    groups: dict[tuple[str, int | None], list[tuple[Variant, Row, float]]] = {}
    for v, r, sp in results:
        groups.setdefault((v.burst, None), []).append((v, r, sp))
        groups.setdefault((v.burst, v.requests), []).append((v, r, sp))
    lines = [
        "| bucket | images | sites | median goodput / C | " + " | ".join(f"fail {k}" for k in GOAL_NAMES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(GOAL_NAMES),
    ]
    for (burst, n), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        failed = [sum(not goals(v, r, sp)[k] for v, r, sp in rows) for k in GOAL_NAMES]
        lines.append(
            f"| b{burst} | {'all' if n is None else n} | {len(rows)} "
            f"| {statistics.median(r.goodput for _, r, _ in rows):.2f} | " + " | ".join(map(str, failed)) + " |"
        )
    return lines
