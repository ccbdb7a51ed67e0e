"""The pacer measures the site, not the crawler: its own event-loop lag is kept out of the latency signal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imagecrawl.pacing.downloadermiddlewares.pacing import runtime_for
from imagecrawl.pacing.looplag import LoopLag
from tests.crawlers import make_crawler
from tests.sandbox.testing import start_sandbox

from .test_pacing_sandbox import crawl


def test_recent_lag_is_the_worst_of_the_window() -> None:
    lag = LoopLag(interval=0.05, window=2.0)
    assert lag.recent(0.0) == 0.0
    lag.record(0.01, 10.0)
    lag.record(0.30, 10.5)
    lag.record(0.02, 11.0)
    assert lag.recent(11.0) == pytest.approx(0.30)
    lag.record(0.01, 12.6)  # the 0.30 s sample is older than the window now
    assert lag.recent(12.6) == pytest.approx(0.02)
    assert lag.recent(20.0) == 0.0  # no fresh samples


def test_the_probe_sees_a_blocked_loop() -> None:
    async def main() -> float:
        lag = LoopLag(interval=0.02, window=2.0)
        lag.start()
        await asyncio.sleep(0.1)
        quiet = lag.recent()
        time.sleep(0.25)  # our own work holds the loop
        await asyncio.sleep(0.05)
        blocked = lag.recent()
        lag.stop()
        assert quiet < 0.1
        return blocked

    assert asyncio.run(main()) >= 0.2


def test_site_latency_subtracts_or_ignores_our_lag() -> None:
    crawler = make_crawler(IMAGECRAWL_TUNING={"pacing_latency_margin_seconds": 0.1})
    crawler.stats.open_spider()
    runtime = runtime_for(crawler)
    now = time.monotonic()
    assert runtime.site_latency(0.05, now) == pytest.approx(0.05)  # no lag measured
    runtime.lag.record(0.04, now)
    assert runtime.site_latency(0.05, now) == pytest.approx(0.01)
    runtime.lag.record(0.5, now)
    assert runtime.site_latency(0.6, now) is None  # the sample says nothing about the site
    assert crawler.stats.get_value("imagecrawl/pacing/latency_ignored/loop_lag") == 1


@contextmanager
def burners(n: int) -> Iterator[None]:
    """``n`` processes spinning on the CPU: both cores saturated by someone else."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.e2e
def test_a_busy_crawler_on_busy_cores_does_not_slow_down_for_a_steady_site(tmp_path: Path) -> None:
    # a steady site: 50 ms for every answer, whatever the load
    sb = start_sandbox(items=20, log_path=tmp_path / "site.jsonl", extra_args=["--latency", "0.05"])
    try:
        with burners(2):
            result = crawl(
                tmp_path,
                [sb.url("?i={i}")],
                120,
                {
                    "IMAGECRAWL_MAX_RATE_PER_SITE": 40,
                    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 40,
                    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 8,
                    "IMAGECRAWL_TUNING": {"pacing_latency_margin_seconds": 0.1},
                },
                args={"busy": "0.3"},  # our own work holds the loop 0.3 s of every 0.6 s
            )
    finally:
        sb.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stats.get("pacing_load/ok") == 120
    assert "imagecrawl/pacing/decrease/latency" not in result.stats, result.stats
    assert result.stats.get("imagecrawl/pacing/latency_ignored/loop_lag", 0) > 0
