"""Politeness benchmark: sandbox sites with a hidden capacity C, each crawled by (a) Scrapy's defaults,
(b) Scrapy with AutoThrottle, (c) imagecrawl - one after the other, each against a fresh server.
Everything is measured from the server's own request log.

    uv run python -m benchmarks.politeness                       # site c20, the three crawlers
    uv run python -m benchmarks.politeness --sites all --repeats 3 --saturate
    uv run python -m benchmarks.politeness --sites c12 --only imagecrawl --seconds 20

Sites (``--site``/``--sites``: a name, a comma list, ``all``, ``short`` or ``none``): c20 (C = 20 req/s,
burst C, Retry-After 1 s on every 429), c12 (C = 12, burst 6, Retry-After 2 s on every other 429),
c50-burst (C = 50, burst 2 C, Retry-After 1 s).  ``--capacity``, ``--burst``, ``--retry-after`` and
``--retry-after-share`` override the preset of every site run.

Short crawls (``--sites short``): a fixed number of requests, so the start-up is a good part of the run,
on sites of other capacities (2 to 50), bursts, latencies and Retry-After habits: s12 (C = 12, burst C,
Retry-After 2 s on half the 429s, 300 requests), s3, s6-slow (300 ms latency), s30, s50-strict
(burst 1), s2 (Retry-After 5 s).  Their figures cover the whole crawl: goodput / C from the first
request to the last answer, the share of 429s of all requests, and the most requests within any 1 s
after the first five seconds; the goals are goodput >= 0.9 C, <= 2 % 429s, 0 inside Retry-After and
no second above 1.25 C + 1 after the first five.

Held-out sites (``--held-out N``: N sites drawn from ranges, ``--seed``; ``--grid``: every combination):
short crawls on capacities ``--capacities`` (default 3,7,12,20 req/s), buckets ``--bursts`` (1,C: a
token count or a multiple of C), latencies ``--latencies`` (0.03,0.1,0.3 s), Retry-After on ``--shares``
of the 429s (0,0.5,1; ``--retry-after-seconds`` 2) and lengths ``--lengths`` (100,300,1000 images), with
imagecrawl only; one table of goodput / C, 429 share, the peak after the first five seconds and the
start-up peak per site, and how many sites fail each goal.  ``--simulate`` runs them in virtual time
(seconds in all, ``tests/pacing_sim.py``) instead of against the sandbox:

    uv run python -m benchmarks.politeness --held-out 12 --seed 1          # real crawls, ~10 minutes
    uv run python -m benchmarks.politeness --grid --simulate               # 216 sites, a few seconds

Columns: goodput / C (200s per second after warm-up, over C); share of 429s after warm-up; the start-up
peak (most requests within any 1 s during the warm-up) and its ratio to C; the most requests within
any 1 s (whole crawl, after warm-up); whole seconds after warm-up with more than 1.25 C requests;
requests that arrived inside a Retry-After window the site had announced; seconds in which the site was
overloaded (had to answer 429), and the longest run of them.  Then PASS/FAIL per goal.  With
``--repeats N`` every figure is the median of N crawls.  ``--saturate`` adds the "steady site, both
cores busy" phase (``politeness_saturate.py``).  Loopback only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import politeness_heldout as heldout
from benchmarks.common import check_load
from benchmarks.politeness_crawl import IMAGECRAWL, SCENARIOS, crawl, slug
from benchmarks.politeness_saturate import add_saturate_arguments, run_saturation, saturation_table
from tests.politeness_score import OVER_FACTOR, Row, goals, measure, measure_short, median_row
from tests.sandbox.testing import start_sandbox


@dataclass(frozen=True)
class Site:
    name: str
    capacity: float
    burst: float
    retry_after: float
    retry_after_share: float
    #: a short crawl of this many requests (0: a crawl of ``--seconds``)
    requests: int = 0
    #: the site's latency, s (None: ``--latency``)
    latency: float | None = None


SITES = {
    "c20": Site("c20", capacity=20, burst=20, retry_after=1.0, retry_after_share=1.0),
    "c12": Site("c12", capacity=12, burst=6, retry_after=2.0, retry_after_share=0.5),
    "c50-burst": Site("c50-burst", capacity=50, burst=100, retry_after=1.0, retry_after_share=1.0),
}
SHORT_SITES = {
    "s12": Site("s12", capacity=12, burst=12, retry_after=2.0, retry_after_share=0.5, requests=300),
    "s3": Site("s3", capacity=3, burst=3, retry_after=1.0, retry_after_share=1.0, requests=90),
    "s6-slow": Site("s6-slow", capacity=6, burst=6, retry_after=1.0, retry_after_share=0.5, requests=200, latency=0.3),
    "s30": Site("s30", capacity=30, burst=30, retry_after=1.0, retry_after_share=0.5, requests=700),
    "s50-strict": Site("s50-strict", capacity=50, burst=1, retry_after=1.0, retry_after_share=1.0, requests=1000),
    "s2": Site("s2", capacity=2, burst=2, retry_after=5.0, retry_after_share=0.5, requests=60),
}
ALL_SITES = {**SITES, **SHORT_SITES}


def run_site(
    name: str,
    settings: dict[str, str],
    site: Site,
    args: argparse.Namespace,
    workdir: Path,
    keep: list[Any] | None = None,
) -> Row:
    flags = [
        "--capacity", f"{site.capacity:g}",
        "--capacity-burst", f"{site.burst:g}",
        "--retry-after", f"{site.retry_after:g}",
        "--retry-after-share", f"{site.retry_after_share:g}",
        "--latency", str(args.latency if site.latency is None else site.latency),
        "--latency-per-queued", str(args.latency_per_queued),
    ]  # fmt: skip
    check_load(f"{site.name} / {name}")
    sb = start_sandbox(items=20, log_path=workdir / f"{slug(site.name, name)}.jsonl", extra_args=flags)
    try:
        if site.requests:
            # a crawl of exactly this many requests; the time limit only guards against a stuck crawl
            limit = 4 * site.requests / site.capacity + 60
            crawl(f"{site.name} / {name}", sb.url("?i={i}"), settings, limit, workdir, {"n": str(site.requests)})
        else:
            crawl(f"{site.name} / {name}", sb.url("?i={i}"), settings, args.seconds, workdir)
        time.sleep(0.5)  # the last lines are written just after their answers
        records = sb.requests()
    finally:
        sb.stop()
    if not records:
        raise SystemExit(f"{site.name} / {name}: the site saw no request (see the crawl's errors above)")
    if keep is not None:
        keep.append(records)
    if site.requests:
        return measure_short(name, records, site.capacity)
    return measure(name, records, site.capacity, args.warmup)


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def table(site: Site, rows: list[Row], args: argparse.Namespace) -> str:
    c = site.capacity
    share = "every 429" if site.retry_after_share == 1 else f"{100 * site.retry_after_share:g}% of the 429s"
    runs = f"median of {args.repeats} crawls" if args.repeats > 1 else "one crawl"
    latency = args.latency if site.latency is None else site.latency
    length = (
        f"{site.requests} requests per crawl, figures over the whole crawl"
        if site.requests
        else f"{args.seconds:g} s per crawl, warm-up {args.warmup:g} s"
    )
    head = (
        f"Site {site.name}: hidden capacity C = {c:g} req/s (token bucket, burst {site.burst:g}), "
        f"Retry-After {site.retry_after:g} s on {share}, "
        f"latency {latency:g} s + {args.latency_per_queued:g} s per queued request; "
        f"{length}, {runs}.\n\n"
    )
    lines = [
        "| crawler | goodput / C | 429s after warm-up | start-up peak (/ C) | max requests in 1 s (after warm-up) "
        f"| seconds > {OVER_FACTOR:g} C after warm-up | inside Retry-After | overloaded seconds (longest run) "
        "| requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.goodput:.2f} | {100 * r.share_429:.1f}% "
            f"| {_fmt(r.startup_peak)} ({r.startup_peak / c:.2f}) | {_fmt(r.max_1s)} ({_fmt(r.max_1s_late)}) "
            f"| {_fmt(r.seconds_over)} | {_fmt(r.inside_retry_after)} "
            f"| {_fmt(r.overloaded)} ({_fmt(r.longest_overload)}) | {_fmt(r.requests)} |"
        )
    short = bool(site.requests)
    names = [g for g, _ in goals(rows[0], c, short)] if rows else []
    lines += ["", "| crawler | " + " | ".join(names) + " |", "|---|" + ":---:|" * len(names)]
    for r in rows:
        marks = " | ".join("PASS" if ok else "FAIL" for _, ok in goals(r, c, short))
        lines.append(f"| {r.name} | {marks} |")
    return head + "\n".join(lines) + "\n"


def chosen_sites(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[Site]:
    names: list[str] = []
    for value in args.site or ["c20"]:
        for name in value.split(","):
            name = name.strip()
            if name == "all":
                names += list(SITES)
            elif name == "short":
                names += list(SHORT_SITES)
            elif name == "none":
                continue
            elif name in ALL_SITES:
                names.append(name)
            else:
                p.error(f"unknown site {name!r} (choose from {', '.join(ALL_SITES)}, all, short, none)")
    out = []
    for name in dict.fromkeys(names):
        site = ALL_SITES[name]
        overrides = {
            k: v
            for k, v in (
                ("capacity", args.capacity),
                ("burst", args.burst),
                ("retry_after", args.retry_after),
                ("retry_after_share", args.retry_after_share),
            )
            if v is not None
        }
        out.append(replace(site, **overrides))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", "--sites", action="append", metavar="NAMES", help="site presets (default c20)")
    p.add_argument("--capacity", type=float, default=None, help="override the sites' hidden capacity, req/s")
    p.add_argument("--burst", type=float, default=None, help="override the sites' token bucket size")
    p.add_argument("--retry-after", type=float, default=None, help="override the sites' Retry-After, s")
    p.add_argument("--retry-after-share", type=float, default=None, help="override the share of 429s with it")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each crawl")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds left out of the 429 share and goodput")
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--latency-per-queued", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=1, help="crawls per site and crawler; figures are medians")
    p.add_argument("--only", choices=list(SCENARIOS), action="append", help="run only these crawlers")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a setting for the imagecrawl crawls"
    )
    p.add_argument("--keep", type=Path, default=None, help="keep the request logs and stats in this directory")
    add_saturate_arguments(p)
    heldout.add_heldout_arguments(p)
    return p


def run_heldout(args: argparse.Namespace, extra: dict[str, str], workdir: Path) -> str:
    """The held-out sites, imagecrawl only: one table."""
    results: list[tuple[heldout.Variant, Row, float]] = []
    for v in heldout.variants(args):
        rows, peaks = [], []
        for k in range(args.repeats):
            if args.simulate:
                row, peak = heldout.simulate(v, k, args)
            else:
                site = Site(
                    v.name, v.capacity, v.tokens, v.retry_after, v.share, requests=v.requests, latency=v.latency
                )
                logs: list[Any] = []
                row = run_site(IMAGECRAWL, {**SCENARIOS[IMAGECRAWL], **extra}, site, args, workdir, logs)
                peak = heldout.startup_peak(logs[0], v.capacity)
            rows.append(row)
            peaks.append(peak)
        results.append((v, median_row(rows), sorted(peaks)[len(peaks) // 2]))
        r = results[-1][1]
        print(
            f"  {v.name}: goodput {r.goodput:.2f} C, 429s {100 * r.share_429:.1f}%, "
            f"peak after 5 s {r.max_1s_late:g}, start-up peak {results[-1][2]:.2f} C",
            file=sys.stderr,
        )
    return heldout.table(results, args, args.simulate)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    extra = dict(s.split("=", 1) for s in args.set if "=" in s)
    if len(extra) != len(args.set):
        p.error("--set takes NAME=VALUE")
    if args.held_out < 0:
        p.error("--held-out must be >= 0")
    held_out = bool(args.held_out or args.grid)
    if args.simulate and not held_out:
        p.error("--simulate needs --held-out N or --grid")
    try:
        heldout.variants(args)
    except ValueError as e:
        p.error(str(e))
    sites = chosen_sites(args, p) if (args.site or not held_out) else []
    if not sites and not args.saturate and not held_out:
        p.error("nothing to run: --sites none without --saturate")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every finally (servers, burners) runs
    out = []
    with tempfile.TemporaryDirectory(prefix="imagecrawl-politeness-") as tmp:
        workdir = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        for site in sites:
            rows = []
            for name, settings in SCENARIOS.items():
                if args.only and name not in args.only:
                    continue
                if name == IMAGECRAWL:
                    settings = {**settings, **extra}
                runs = []
                for k in range(args.repeats):
                    runs.append(run_site(name if k == 0 else f"{name} #{k + 1}", settings, site, args, workdir))
                    last = runs[-1]
                    print(
                        f"  -> goodput {last.goodput:.2f} C, 429s {100 * last.share_429:.1f}%, "
                        f"start-up peak {last.startup_peak:g}, inside Retry-After {last.inside_retry_after:g}",
                        file=sys.stderr,
                    )
                rows.append(replace(median_row(runs), name=name))
            out.append(table(site, rows, args))
            print(out[-1], file=sys.stderr)  # as it comes; all tables again at the end on stdout
        if held_out:
            out.append(run_heldout(args, extra, workdir))
            print(out[-1], file=sys.stderr)
        if args.saturate:
            settings = {**SCENARIOS[IMAGECRAWL], **extra}
            out.append(saturation_table(run_saturation(settings, args, workdir), args))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
