"""The progress line during a crawl of the sandbox: at INFO by default, as PROGRESS at LOG_LEVEL=WARNING
(no WARNING in a healthy crawl), silent at ERROR; the last line says how many rows are new."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .conftest import run_crawl

LINE = re.compile(
    r"\[imagecrawl\.report\.extensions\.progress\] INFO: Progress (?P<clock>\d+:\d\d:\d\d): (?P<items>[\d,]+)"
    r"(?: of (?P<total>[\d,]+))? images \((?P<rate>[\d.]+) images/s(?:, ETA (?P<eta>\d+:\d\d:\d\d))?\); "
    r"committed (?P<rows>[\d,]+) rows in (?P<shards>[\d,]+) shards, "
    r"outbox (?P<outbox>\d+) shards?; dupes (?P<dupes>[\d,]+), known skipped (?P<known>[\d,]+), "
    r"opt-out (?P<optout>[\d,]+), 429s (?P<s429>[\d,]+) \| (?P<sites>.+?)(?P<final> \(final\))?$"
)


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def test_progress_line_during_a_sandbox_crawl(tmp_path: Path, sandbox_site: Any) -> None:
    api = sandbox_site.base_url.rstrip("/")
    result = run_crawl(
        "civitai",
        store=tmp_path / "store",
        args={"api_url": api, "limit": 5},
        # a slower crawl (one request at a time, 50 ms apart) so several lines appear while it runs
        settings={
            "IMAGECRAWL_PROGRESS_INTERVAL_SECONDS": "0.5",
            "CONCURRENT_REQUESTS_PER_DOMAIN": "1",
            "DOWNLOAD_DELAY": "0.05",
        },
    )
    matches = [m for line in result.stderr.splitlines() if (m := LINE.search(line))]
    assert len(matches) >= 3, result.stderr[-3000:]
    final = matches[-1]
    assert final["final"] and not any(m["final"] for m in matches[:-1])
    stats = result.stats
    assert _num(final["items"]) == stats["item_scraped_count"]
    assert _num(final["rows"]) == stats["imagecrawl/store/rows_committed"] > 0
    assert _num(final["shards"]) == stats["imagecrawl/store/shards_committed"]
    assert _num(final["dupes"]) == sum(v for k, v in stats.items() if k.startswith("imagecrawl/dedupe/dropped/"))
    assert final["outbox"] == "0" and final["optout"] == "0" and final["s429"] == "0"
    # while running: the counts only grow, and the sandbox is shown with its current rate and state
    items = [_num(m["items"]) for m in matches]
    assert items == sorted(items) and items[0] < items[-1]
    netloc = api.removeprefix("http://")
    running = matches[:-1]
    assert all(re.fullmatch(rf"{re.escape(netloc)} [\d.]+ req/s ok", m["sites"]) for m in running)
    assert any(float(m["sites"].split()[1]) > 0 for m in running)
    assert any(float(m["rate"]) > 0 for m in running)


def test_progress_line_has_the_total_and_an_eta_and_the_first_shard_commits_early(
    tmp_path: Path, sandbox_site: Any
) -> None:
    result = run_crawl(
        "civitai",
        store=tmp_path / "store",
        args={"api_url": sandbox_site.base_url.rstrip("/"), "limit": 5, "max_items": 30},
        settings={
            "IMAGECRAWL_PROGRESS_INTERVAL_SECONDS": "0.3",
            "CONCURRENT_REQUESTS_PER_DOMAIN": "1",
            "DOWNLOAD_DELAY": "0.1",
            "IMAGECRAWL_TUNING": {"first_shard_max_rows": "4"},
        },
    )
    matches = [m for line in result.stderr.splitlines() if (m := LINE.search(line))]
    assert len(matches) >= 3 and all(m["total"] == "30" for m in matches), result.stderr[-3000:]
    running = [m for m in matches[:-1] if float(m["rate"]) > 0 and _num(m["items"]) < 30]
    assert running and all(m["eta"] for m in running)
    # the first shard was committed after 4 rows, while the crawl went on: a running line shows it
    pairs = [(_num(m["items"]), _num(m["rows"])) for m in matches[:-1]]
    assert any(rows == 4 and items > 4 for items, rows in pairs), pairs
    stats = result.stats
    assert stats["imagecrawl/store/shards_committed"] == 2  # the early one, then the rest
    assert stats["imagecrawl/store/rows_committed"] == stats["item_scraped_count"] > 4


def test_progress_line_shows_at_warning_and_a_healthy_crawl_warns_nothing(tmp_path: Path, sandbox_site: Any) -> None:
    store = tmp_path / "store"
    args = {"api_url": sandbox_site.base_url.rstrip("/"), "limit": 5, "max_items": 5}
    settings = {"IMAGECRAWL_PROGRESS_INTERVAL_SECONDS": "0.2", "LOG_LEVEL": "WARNING"}
    result = run_crawl("civitai", store=store, args=args, settings=settings)
    rows = result.stats["imagecrawl/store/rows_committed"]
    assert rows > 0
    lines = result.stderr.splitlines()
    progress = [line for line in lines if "[imagecrawl.report.extensions.progress] PROGRESS: Progress" in line]
    assert progress and progress[-1].endswith("(final)"), result.stderr[-3000:]
    assert f"PROGRESS: {rows} new rows stored in {store}" in result.stderr
    assert not [line for line in lines if " WARNING: " in line or " ERROR: " in line], result.stderr[-3000:]
    assert "log_count/WARNING" not in result.stats
    # the same crawl again: nothing new, and it says so
    again = run_crawl("civitai", store=store, args=args, settings=settings)
    assert f"PROGRESS: 0 new rows stored in {store}" in again.stderr


def test_progress_line_is_quiet_at_error(tmp_path: Path, sandbox_site: Any) -> None:
    result = run_crawl(
        "civitai",
        store=tmp_path / "store",
        args={"api_url": sandbox_site.base_url.rstrip("/"), "limit": 5, "max_items": 5},
        settings={"IMAGECRAWL_PROGRESS_INTERVAL_SECONDS": "0.2", "LOG_LEVEL": "ERROR"},
    )
    assert result.stats["item_scraped_count"] > 0
    assert "Progress" not in result.stderr
    assert "imagecrawl.report.extensions.progress" not in result.stderr
