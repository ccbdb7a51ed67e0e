"""Pacing against the sandbox, measured from the server's own request log: the rate cap, Crawl-delay,
backoff retries, Retry-After windows (seconds and HTTP date), convergence to a hidden capacity.

One crawl serves several sites at once (one sandbox process per site, each on its own loopback
address or host name), which also shows that a paused site does not hold up the others.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.misbehave import max_rate_per_second, requests_inside_windows
from tests.sandbox.testing import SandboxProcess, start_sandbox

from .conftest import CrawlResult, run_crawl

pytestmark = pytest.mark.e2e

#: Test crawls: fast for loopback; the caps under test are set per test.
PACE: dict[str, str] = {
    "SPIDER_MODULES": "tests.pacing_spider",
    "IMAGECRAWL_MAX_RATE_PER_SITE": "50",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "8",
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "2",
    "IMAGECRAWL_TUNING": {
        "pacing_min_rate_per_second": "0.02",
        "retry_backoff_seconds": "0.5",
        "retry_max_backoff_seconds": "4",
        "ban_cooldown_seconds": "1",
    },
}


@contextmanager
def sites(tmp_path: Path, *specs: tuple[str, list[str]]) -> Iterator[list[SandboxProcess]]:
    """One sandbox per ``(host, flags)``; ``host`` is the loopback address it binds."""
    with ExitStack() as stack:
        out = []
        for n, (host, flags) in enumerate(specs):
            sb = start_sandbox(items=20, log_path=tmp_path / f"site{n}.jsonl", extra_args=["--host", host, *flags])
            stack.callback(sb.stop)
            out.append(sb)
        yield out


def crawl(tmp_path: Path, urls: list[str], n: int, settings: dict[str, Any], **kw: Any) -> CrawlResult:
    return run_crawl(
        "pacing_load",
        store=tmp_path / "store",
        args={"urls": ",".join(urls), "n": n, **kw.pop("args", {})},
        settings=merge_settings(PACE, {k: setting_text(v) for k, v in settings.items()}),
        timeout=150,
        **kw,
    )


def gaps(records: list[dict[str, Any]]) -> list[float]:
    starts = sorted(r["t"] for r in records)
    return [b - a for a, b in itertools.pairwise(starts)]


def test_cap_crawl_delay_retries_and_retry_after(tmp_path: Path) -> None:
    with sites(
        tmp_path,
        ("127.0.0.1", []),  # plain: only the cap holds us back
        ("127.0.0.2", ["--crawl-delay", "0.5"]),
        ("127.0.0.3", ["--status-paths"]),  # /status/503 every time
        ("127.0.0.4", ["--capacity", "3", "--capacity-burst", "2", "--retry-after", "2"]),
        ("127.0.0.5", ["--capacity", "3", "--capacity-burst", "2", "--retry-after", "2", "--retry-after-date"]),
        ("127.0.0.6", ["--status-paths"]),  # /status/429 with an absurd Retry-After
    ) as (plain, delayed, failing, limited, dated, absurd):
        urls = [
            plain.url("?i={i}"),
            delayed.url("?i={i}"),
            failing.url("status/503"),  # one page (the repeats are filtered)
            limited.url("?i={i}"),
            dated.url("?i={i}"),
            absurd.url("status/429?retry_after=99999999"),  # one page
        ]
        n = 24
        result = crawl(
            tmp_path,
            urls,
            n,
            {
                "IMAGECRAWL_MAX_RATE_PER_SITE": 4,
                "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 4,
                "RETRY_TIMES": 2,
                "IMAGECRAWL_TUNING": {"retry_backoff_seconds": 0.4, "retry_after_max_seconds": 3},
            },
        )
        logs = {
            name: sb.wait_for_requests(n + 1)
            for name, sb in zip(("plain", "delayed", "limited", "dated"), (plain, delayed, limited, dated), strict=True)
        }
        failing_log = failing.wait_for_requests(1 + 3)
        absurd_log = absurd.wait_for_requests(1 + 3)
    stats = result.stats

    # the cap: never more than 4 requests in any second, and it is used, not undershot
    times = [r["t"] for r in logs["plain"]]
    assert max_rate_per_second(times) == 4

    # Crawl-delay 0.5 s is a floor even though the cap allows 4/s (robots.txt comes first)
    assert logs["delayed"][0]["path"] == "/robots.txt"
    assert min(gaps(logs["delayed"])[1:]) >= 0.45
    assert stats["imagecrawl/pacing/crawl_delay"] == 1

    # 503 every time: the page is tried 1 + 2 times, with growing backoff, then given up
    tries = [r for r in failing_log if r["path"] == "/status/503"]
    assert [r["status"] for r in tries] == [503] * 3
    first, second = gaps(tries)
    assert first >= 0.2 and second >= 0.4, (first, second)  # 0.4 * 2**(k-1) with equal jitter
    assert stats["imagecrawl/retry/reason_count/503"] == 2
    assert stats["imagecrawl/retry/max_reached/503"] == 1
    assert stats["imagecrawl/pacing/decrease/503"] >= 1

    # an absurd Retry-After is capped (3 s here), logged and counted - and still honoured up to the cap
    tries = [r for r in absurd_log if r["path"] == "/status/429"]
    assert len(tries) == 3 and min(gaps(tries)) >= 3
    assert stats["imagecrawl/pacing/retry_after_capped"] == 3
    assert "capped at 3s" in result.stderr

    # Retry-After: the sites pushed back, nobody came back inside a window, nothing was lost
    for name in ("limited", "dated"):
        statuses = [r["status"] for r in logs[name]]
        assert 429 in statuses, f"{name}: the site never pushed back, the check proves nothing"
        assert requests_inside_windows(logs[name], 2.0) == 0, name
    assert stats["imagecrawl/pacing/retry_after"] >= 2
    assert stats["pacing_load/ok"] == 4 * n  # every page of the four healthy sites, retries included

    # a paused site did not hold up the others: the plain site finished at about its own pace
    # ((n + 1) requests 0.25-0.28 s apart, plus room for a loaded machine)
    assert max(times) - min(times) < (n + 1) / 4 * 1.15 + 3


def test_converges_to_the_sites_capacity(tmp_path: Path) -> None:
    capacity = 10
    # Retry-After 1 s on every 429 (against bare 429s the pacer stays further below C: not checked here)
    flags = ["--capacity", str(capacity), "--capacity-burst", str(capacity), "--retry-after", "1"]
    with sites(tmp_path, ("127.0.0.1", flags)) as (sb,):
        result = crawl(tmp_path, [sb.url("?i={i}")], 220, {"IMAGECRAWL_PACING_START_RATE_PER_SECOND": 1})
        records = sb.wait_for_requests(221)
    assert result.stats["pacing_load/ok"] == 220
    t0 = min(r["t"] for r in records)
    t_end = max(r["t"] for r in records)
    warm = 10.0
    late = [r for r in records if r["t"] >= t0 + warm]
    ok_rate = sum(r["status"] == 200 for r in late) / (t_end - t0 - warm)
    share_429 = sum(r["status"] == 429 for r in late) / len(late)
    assert ok_rate >= 0.8 * capacity, ok_rate
    assert share_429 <= 0.05, share_429


def test_a_redirect_is_paced_as_the_site_it_is_sent_to(tmp_path: Path) -> None:
    """The origin has no Crawl-delay and redirects every page to a site asking for 1.5 s: the requests
    that reach the target are spaced by its Crawl-delay (Scrapy's redirect copies the origin's meta, so
    a site key kept in meta charged them to the origin)."""
    from urllib.parse import quote

    with sites(tmp_path, ("127.0.0.1", []), ("127.0.0.2", ["--crawl-delay", "1.5"])) as (origin, target):
        n = 4
        to = quote(target.url("?i={i}"), safe="{}")
        result = crawl(
            tmp_path,
            [origin.url(f"redirect?to={to}")],
            n,
            {"IMAGECRAWL_MAX_RATE_PER_SITE": 8, "IMAGECRAWL_PACING_START_RATE_PER_SECOND": 8},
        )
        landed = [r for r in target.wait_for_requests(n + 1) if r["path"] == "/"]
        sent = [r for r in origin.requests() if r["path"] == "/redirect"]
    assert len(sent) == n and len(landed) == n, (sent, landed)
    assert min(gaps(landed)) >= 1.4, gaps(landed)
    # ...and the origin's own pace is its own: its Crawl-delay-free pages are not held 1.5 s apart
    assert max(gaps(sent)) < 1.0, gaps(sent)
    assert result.stats["pacing_load/ok"] == n
