"""Pacing on sites the controller was not tuned on: the controller's start-up end and cut rules with an
injected clock, short crawls of held-out sites in virtual time (tests/pacing_sim.py, the sandbox's own
token bucket), and the benchmark's held-out mode (``python -m benchmarks.politeness --held-out/--grid``,
run as a command: the tests do not import the benchmarks)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from imagecrawl.pacing import AimdConfig, AimdController
from imagecrawl.pacing.aimd import SERVED_MARGIN, STARTUP_CEILING, STARTUP_CUT, STARTUP_MAX_STEPS
from tests.pacing_sim import short_crawl
from tests.politeness_score import OVER_FACTOR

REPO = Path(__file__).resolve().parent.parent
CFG = AimdConfig(start_rate=2.0, max_rate=200.0, max_concurrency=16)


def _serve(c: AimdController, start: float, end: float, per_second: float) -> float:
    t = start
    while t < end:
        c.rate_limited = True
        c.on_success(now=t)
        t += 1 / per_second
    return t


def test_the_end_of_the_start_up_goes_under_what_a_burst_let_through() -> None:
    """A bucket of one second of capacity lets a climbing rate through until it is drained: the rate
    that meets the first 429 is twice the capacity, and the last 2 s served 1.5 C. The rate goes to
    STARTUP_CUT of what was served (not 0.7 of the served 1.5 C and then back up to it), so the climb
    back stays within 1.25 C."""
    c = AimdController(CFG, now=0.0)
    c.ceiling = None
    t = _serve(c, 0.0, 2.0, 18.0)  # C = 12: the last two seconds served 18/s
    c.rate = 24.0
    c.on_congestion("429", sent_at=t - 0.01, now=t)
    served = 18.0
    assert c.rate == pytest.approx(min(24.0 * CFG.decrease_factor, STARTUP_CUT * served), rel=0.05)
    assert c.ceiling == pytest.approx(min(24.0, STARTUP_CEILING * served), rel=0.05)
    assert c.rate <= OVER_FACTOR * 12


def test_a_cut_after_a_cut_that_went_too_low_does_not_take_the_crawls_climb_for_capacity() -> None:
    """The answers since the last cut measure the site only if the crawl kept it busy: after a cut to
    4/s on a site of 12/s the rate climbs for 8 s; at the next 429 the ceiling is what the last
    seconds served, not the ~8/s average of the climb."""
    c = AimdController(CFG, now=0.0)
    c.rate = c.ceiling = 4.0 / CFG.decrease_factor
    c.on_congestion("429", sent_at=0.0, now=0.0)
    assert c.rate == pytest.approx(4.0)
    t = 0.0
    for rate in (4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 12):  # the climb, one second each
        t = _serve(c, t, t + 1.0, rate)
        c.rate = max(c.rate, rate * 1.06)  # (the spacing's jitter keeps the answers a little under it)
    c.on_congestion("429", sent_at=t, now=t)
    assert c.ceiling is not None and c.ceiling >= 11.0
    # while a cut that started at the site's pace measures it (what a Retry-After pause saved excluded)
    k = AimdController(CFG, now=0.0)
    k.rate = k.ceiling = 13.0 / CFG.decrease_factor
    k.on_congestion("429", sent_at=0.0, now=0.0)
    t = _serve(k, 0.0, 6.0, 12.0)
    t = _serve(k, t, 8.0, 16.0)  # a burst the site had saved up
    k.on_congestion("429", sent_at=t, now=t)
    assert k.ceiling is not None and 12.0 <= k.ceiling <= 13.5
    assert k.rate == pytest.approx(SERVED_MARGIN * k.ceiling)


def test_start_up_growth_counts_the_time_since_the_last_change() -> None:
    """At 2 req/s answers are half a second apart: one that comes just after the half step does not
    lose the growth of the rest of the time (up to STARTUP_MAX_STEPS half steps at once)."""
    c = AimdController(CFG, now=0.0)
    c.rate_limited = True
    c.on_success(now=0.45)  # not a half step yet
    assert c.rate == CFG.start_rate
    c.on_success(now=0.9)
    assert c.rate == pytest.approx(CFG.start_rate * CFG.startup_factor ** (0.9 / 0.5))
    late = AimdController(CFG, now=0.0)
    late.rate_limited = True
    for t in (0.1, 0.2, 0.3, 0.4, 1.5):  # three half steps: counted as STARTUP_MAX_STEPS at most
        late.on_success(now=t)
    assert late.rate == pytest.approx(CFG.start_rate * CFG.startup_factor**STARTUP_MAX_STEPS)


def test_start_up_judges_a_slow_sites_answers_against_the_rate_they_were_sent_at() -> None:
    """At 300 ms latency the answers of a half step were sent 300 ms earlier, when the climbing rate was
    lower: they count as using the rate, and the climb keeps its full factor; the same answers with no
    latency known (no sample yet) leave the rate unused, and it grows only to the factor x them."""

    def climb(latency: float | None) -> float:
        c = AimdController(CFG, now=0.0)
        c.rate = 10.0
        if latency is not None:
            c.observe_latency(latency, now=0.0)
        c._rate_before = 10.0 / CFG.startup_factor  # the half step before: 6.7/s
        for t in (0.1, 0.3, 0.5):  # 6/s answered: under 0.7 x 10/s, not under 0.7 x the rate 0.3 s ago
            c.rate_limited = True
            c.on_success(now=t)
        return c.rate

    assert climb(0.3) == pytest.approx(10.0 * CFG.startup_factor, rel=0.01)
    assert climb(None) == 10.0  # not used: it may grow to 1.5 x 6/s = 9/s, under what it is


# --- short crawls of held-out sites in virtual time -------------------------------------------------

#: sites of the issue's kind (a bucket of about a second of capacity), other capacities, latencies,
#: Retry-After habits and lengths than the benchmark's presets; (C, burst / C, latency, share, images)
HELD_OUT = [
    (12, 1.0, 0.03, 0.5, 400),  # the site
    (5, 1.0, 0.1, 0.0, 300),
    (9, 1.0, 0.2, 0.5, 700),
    (15, 1.0, 0.05, 0.0, 600),
    (7, 1.0, 0.03, 0.5, 1000),
    (10, 0.75, 0.08, 0.5, 800),
]


@pytest.mark.parametrize(("capacity", "burst", "latency", "share", "n"), HELD_OUT)
def test_held_out_sites_are_crawled_near_their_pace_and_politely(
    capacity: float, burst: float, latency: float, share: float, n: int
) -> None:
    runs = [short_crawl(capacity, burst * capacity, 2.0, share, n, latency=latency, seed=seed) for seed in range(3)]
    assert statistics.median(r.goodput for r in runs) >= 0.9, runs
    for r in runs:
        assert r.share_429 <= 0.02 and r.inside_retry_after == 0, r
        assert r.peak_after_5s <= OVER_FACTOR * capacity + 1, r


# --- the benchmark's held-out mode (run as the operator runs it) -------------------------------------


def _bench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.politeness", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_held_out_sites_drawn_from_the_ranges_in_one_simulated_table() -> None:
    argv = ["--held-out", "4", "--seed", "3", "--simulate", "--capacities", "4,9", "--bursts", "1,2C"]
    first = _bench(*argv, "--lengths", "150")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [line for line in first.stdout.splitlines() if line.startswith("| C")]
    assert len(rows) == 4
    for row in rows:
        site = row.split("|")[1].split()
        assert site[0] in ("C4", "C9") and site[1] in ("b1", "b2C") and site[-1] == "n150", row
    assert "4 sites: median goodput" in first.stdout and "start-up" in first.stdout
    again = _bench(*argv, "--lengths", "150")
    assert again.stdout == first.stdout  # the seed fixes the draw, virtual time fixes the figures
    grid = _bench("--grid", "--simulate", "--capacities", "6", "--bursts", "C,0.5C", "--latencies", "0.05",
                  "--shares", "0,1", "--lengths", "120")  # fmt: skip
    assert grid.returncode == 0, grid.stderr[-2000:]
    names = {line.split("|")[1].strip() for line in grid.stdout.splitlines() if line.startswith("| C")}
    assert names == {f"C6 b{b} 50ms RA {ra} (2 s) n120" for b in ("C", "0.5C") for ra in ("none", "all")}
    # the summary per bucket (all lengths, then each length): 2 sites each, failures counted per goal
    summary = [line.split("|")[1:-1] for line in grid.stdout.splitlines() if line.startswith(("| bC |", "| b0.5C |"))]
    assert sorted((s[0].strip(), s[1].strip(), s[2].strip()) for s in summary) == [
        ("b0.5C", "120", "2"), ("b0.5C", "all", "2"), ("bC", "120", "2"), ("bC", "all", "2")
    ]  # fmt: skip
    for s in summary:
        assert 0 < float(s[3]) < 1.5 and all(0 <= int(x) <= 2 for x in s[4:]), s


@pytest.mark.e2e
@pytest.mark.parametrize(
    "argv",
    [["--held-out", "2", "--shares", "1.5"], ["--simulate"], ["--grid", "--bursts", "x"], ["--held-out", "-1"]],
)
def test_held_out_mistakes_are_one_line_usage_errors(argv: list[str]) -> None:
    done = _bench(*argv)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "error:" in done.stderr.splitlines()[-1]
