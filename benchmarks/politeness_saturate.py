"""The politeness benchmark's saturation phase, "steady site, both cores busy": a sandbox site with no
capacity limit and a fixed latency, crawled by imagecrawl while CPU burners (``python -c "while True:
pass"``, one per core by default, at the crawler's own nice level) compete with it.  The site never
slows down, so every latency-driven decrease is the crawler mistaking its own lateness for the site's
(goal: 0); ``imagecrawl/pacing/latency_ignored/loop_lag`` counts the samples it set aside instead.
The burners are killed whatever happens (``try``/``finally``; the benchmark turns SIGTERM into an exit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import check_load
from benchmarks.politeness_crawl import crawl
from tests.sandbox.testing import start_sandbox

BURN = "while True: pass"
DECREASE = "imagecrawl/pacing/decrease/"
LATENCY_DECREASES = DECREASE + "latency"
LOOP_LAG_IGNORED = "imagecrawl/pacing/latency_ignored/loop_lag"


@dataclass
class Saturation:
    returncode: int
    seconds: float
    ok_per_second: float
    site_p50: float  # the site's own answer times (its request log), seconds
    site_p95: float
    latency_decreases: int
    loop_lag_ignored: int
    other_decreases: dict[str, int]
    increases: int
    burners: int
    burner_cpu: float  # CPU seconds the burners got during the crawl
    load_before: float
    load_after: float


def add_saturate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("saturation phase (steady site, both cores busy)")
    g.add_argument("--saturate", action="store_true", help="run the saturation phase after the sites")
    g.add_argument("--saturate-seconds", type=float, default=30.0, help="length of its crawl (default 30)")
    g.add_argument("--saturate-latency", type=float, default=0.05, help="the site's fixed latency, s")
    g.add_argument(
        "--saturate-busy",
        type=float,
        default=0.0,
        metavar="S",
        help="the crawler's own work too: S s of CPU on its event loop every 2 S s (default 0: only the burners)",
    )
    g.add_argument(
        "--burners", type=int, default=os.cpu_count() or 2, help="CPU-burning processes (default: one per core)"
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_saturation(settings: dict[str, str], args: argparse.Namespace, workdir: Path) -> Saturation:
    load_before = check_load("saturation")
    log = workdir / "saturate.jsonl"
    sb = start_sandbox(items=20, log_path=log, extra_args=["--latency", str(args.saturate_latency)])
    try:
        burners: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(args.burners):
                burners.append(subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL))
            time.sleep(1.0)  # let them take the cores before the crawl starts
            url = sb.url("?i={i}")
            busy = {"busy": f"{args.saturate_busy:g}"} if args.saturate_busy > 0 else None
            rc, stats, _ = crawl("saturation / imagecrawl", url, settings, args.saturate_seconds, workdir, busy)
            burner_cpu = sum(_cpu_seconds(b.pid) for b in burners)
            load_after = os.getloadavg()[0]
        finally:
            for b in burners:
                b.kill()
            for b in burners:
                b.wait()
        time.sleep(0.5)  # the last log lines are written just after their answers
        records = sb.requests()
    finally:
        sb.stop()
    return summarize(records, stats, rc, args.burners, burner_cpu, load_before, load_after)


def summarize(
    records: list[dict[str, Any]],
    stats: dict[str, Any],
    returncode: int,
    burners: int,
    burner_cpu: float,
    load_before: float,
    load_after: float,
) -> Saturation:
    times = sorted(r["t"] for r in records)
    span = max(1e-9, times[-1] - times[0]) if times else 1e-9
    durs = sorted(float(r.get("dur", 0.0)) for r in records) or [0.0]
    return Saturation(
        returncode=returncode,
        seconds=span,
        ok_per_second=sum(r["status"] == 200 for r in records) / span,
        site_p50=statistics.median(durs),
        site_p95=durs[min(len(durs) - 1, int(0.95 * len(durs)))],
        latency_decreases=int(stats.get(LATENCY_DECREASES, 0)),
        loop_lag_ignored=int(stats.get(LOOP_LAG_IGNORED, 0)),
        other_decreases={
            k.removeprefix(DECREASE): int(v)
            for k, v in sorted(stats.items())
            if k.startswith(DECREASE) and k != LATENCY_DECREASES
        },
        increases=int(stats.get("imagecrawl/pacing/increase", 0)),
        burners=burners,
        burner_cpu=burner_cpu,
        load_before=load_before,
        load_after=load_after,
    )


def saturation_table(s: Saturation, args: argparse.Namespace) -> str:
    head = (
        f"Saturation: a steady site (no capacity limit, latency {args.saturate_latency:g} s) crawled by imagecrawl "
        f"for {args.saturate_seconds:g} s while {s.burners} CPU burners run at the same nice level "
        f"(they got {s.burner_cpu:.0f} CPU s; load average {s.load_before:.2f} before, {s.load_after:.2f} at the end)"
    )
    if args.saturate_busy > 0:
        busy = args.saturate_busy
        head += f"; the crawler's own work holds its event loop {busy:g} s of every {2 * busy:g} s"
    head += ".\n\n"
    other = ", ".join(f"{k} {v}" for k, v in s.other_decreases.items()) or "0"
    lines = [
        "| latency-driven decreases | latency samples ignored (loop lag) | other decreases | increases "
        "| 200s per second | site answer time p50 / p95 | 0 latency-driven decreases |",
        "|---:|---:|---|---:|---:|---:|:---:|",
        f"| {s.latency_decreases} | {s.loop_lag_ignored} | {other} | {s.increases} | {s.ok_per_second:.1f} "
        f"| {1000 * s.site_p50:.0f} / {1000 * s.site_p95:.0f} ms | {'PASS' if s.latency_decreases == 0 else 'FAIL'} |",
    ]
    if s.returncode not in (0, 4):
        lines.append(f"\n(the crawl exited {s.returncode}: see its errors above)")
    return head + "\n".join(lines) + "\n"
