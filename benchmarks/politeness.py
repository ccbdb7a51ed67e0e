"""Politeness benchmark: the same sandbox site with a hidden capacity C, crawled by (a) Scrapy's
defaults, (b) Scrapy with AutoThrottle, (c) imagecrawl - one after the other, in one run, each
against a fresh server.  Everything is measured from the server's own request log.

    uv run python benchmarks/politeness.py [--capacity 20] [--seconds 40] [--warmup 10]

Columns: goodput / C (200s per second after warm-up, over C); share of 429s after warm-up; the
highest number of requests within any 1 s; requests that arrived inside a Retry-After window the
site had announced; seconds in which the site was overloaded (had to answer 429), and the longest
run of consecutive overloaded seconds.  Loopback only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagecrawl.sandbox.misbehave import max_rate_per_second, requests_inside_windows
from imagecrawl.sandbox.testing import start_sandbox

REPO = Path(__file__).resolve().parents[1]

#: Scrapy's own defaults for what the project changes (so (a) and (b) are plain Scrapy).
SCRAPY_DEFAULTS = {
    "DOWNLOADER_MIDDLEWARES": "{}",  # drops the project's middlewares, restores Scrapy's RetryMiddleware
    "ITEM_PIPELINES": "{}",
    "CONCURRENT_REQUESTS": "16",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "8",
    "DOWNLOAD_DELAY": "0",
    "RETRY_TIMES": "2",
    "ROBOTSTXT_OBEY": "False",
    "AUTOTHROTTLE_ENABLED": "False",
}
SCENARIOS: dict[str, dict[str, str]] = {
    "Scrapy defaults": SCRAPY_DEFAULTS,
    "Scrapy AutoThrottle": {**SCRAPY_DEFAULTS, "AUTOTHROTTLE_ENABLED": "True"},
    "imagecrawl": {
        "ITEM_PIPELINES": "{}",
        # the operator owns this site: caps raised well above its capacity, which stays hidden
        "IMAGECRAWL_MAX_RATE_PER_SITE": "200",
        "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "16",
        "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "2",
        "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
    },
}


@dataclass
class Row:
    name: str
    goodput: float
    share_429: float
    max_1s: int
    max_1s_late: int
    inside_retry_after: int
    overloaded: int
    longest_overload: int
    requests: int


def measure(name: str, records: list[dict[str, Any]], capacity: float, warmup: float, retry_after: float) -> Row:
    records = sorted(records, key=lambda r: r["t"])
    t0 = records[0]["t"]
    t_end = records[-1]["t"]
    late = [r for r in records if r["t"] >= t0 + warmup]
    span = max(1e-9, t_end - (t0 + warmup))
    ok = sum(r["status"] == 200 for r in late)
    seconds = sorted({int(r["t"] - t0) for r in records if r["status"] == 429})
    longest = 0
    for _, run in itertools.groupby(enumerate(seconds), key=lambda p: p[1] - p[0]):
        longest = max(longest, len(list(run)))
    return Row(
        name=name,
        goodput=ok / span / capacity,
        share_429=sum(r["status"] == 429 for r in late) / max(1, len(late)),
        max_1s=max_rate_per_second([r["t"] for r in records]),
        max_1s_late=max_rate_per_second([r["t"] for r in late]),
        inside_retry_after=requests_inside_windows(records, retry_after),
        overloaded=len(seconds),
        longest_overload=longest,
        requests=len(records),
    )


def run(name: str, settings: dict[str, str], args: argparse.Namespace, workdir: Path) -> Row:
    log = workdir / f"{name.replace(' ', '_')}.jsonl"
    flags = [
        "--capacity", str(args.capacity),
        "--capacity-burst", str(args.capacity),
        "--retry-after", str(args.retry_after),
        "--latency", str(args.latency),
        "--latency-per-queued", str(args.latency_per_queued),
    ]  # fmt: skip
    sb = start_sandbox(items=20, log_path=log, extra_args=flags)
    try:
        cmd = [sys.executable, "-m", "scrapy", "crawl", "pacing_load", "-a", f"urls={sb.url('?i={i}')}"]
        cmd += ["-a", "n=1000000"]  # the spider generates them lazily
        merged = {
            "SPIDER_MODULES": "tests.pacing_spider",
            "CLOSESPIDER_TIMEOUT": str(args.seconds),
            "IMAGECRAWL_STORE": str(workdir / "store"),
            "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "WARNING",
            "TELNETCONSOLE_ENABLED": "False",
            **settings,
        }
        for key, value in merged.items():
            cmd += ["-s", f"{key}={value}"]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.seconds + 120)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
        print(f"  {name}: crawl took {time.monotonic() - started:.0f}s", file=sys.stderr)
        time.sleep(0.5)
        records = sb.requests()
    finally:
        sb.stop()
    return measure(name, records, args.capacity, args.warmup, args.retry_after)


def table(rows: list[Row], args: argparse.Namespace) -> str:
    head = (
        f"Hidden capacity C = {args.capacity:g} req/s (token bucket, burst C), "
        f"Retry-After {args.retry_after:g} s on 429, "
        f"latency {args.latency:g} s + {args.latency_per_queued:g} s per queued request; "
        f"{args.seconds:g} s per crawl, warm-up {args.warmup:g} s.\n\n"
    )
    lines = [
        "| crawler | goodput / C | 429s after warm-up | max requests in 1 s (after warm-up) "
        "| inside Retry-After | overloaded seconds (longest run) | requests |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.goodput:.2f} | {100 * r.share_429:.1f}% | {r.max_1s} ({r.max_1s_late}) "
            f"| {r.inside_retry_after} "
            f"| {r.overloaded} ({r.longest_overload}) | {r.requests} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=float, default=20.0, help="the site's hidden capacity, req/s")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each crawl")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds left out of the 429 share and goodput")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After the site sends with 429")
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--latency-per-queued", type=float, default=0.01)
    p.add_argument("--only", choices=list(SCENARIOS), action="append", help="run only these scenarios")
    p.add_argument("--keep", type=Path, default=None, help="keep the request logs in this directory")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imagecrawl-politeness-") as tmp:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        for name, settings in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            rows.append(run(name, settings, args, Path(tmp)))
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
