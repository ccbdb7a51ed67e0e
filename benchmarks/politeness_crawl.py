"""What ``benchmarks/politeness.py`` crawls with: the three crawlers' settings and one ``pacing_load``
crawl in a subprocess (its final stats read back from ``IMAGECRAWL_STATS_FILE``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO
from tests.crawlers import setting_text

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
IMAGECRAWL = "imagecrawl"
SCENARIOS: dict[str, dict[str, str]] = {
    "Scrapy defaults": SCRAPY_DEFAULTS,
    "Scrapy AutoThrottle": {**SCRAPY_DEFAULTS, "AUTOTHROTTLE_ENABLED": "True"},
    IMAGECRAWL: {
        "ITEM_PIPELINES": "{}",
        # the operator owns this site: caps raised well above its capacity, which stays hidden
        "IMAGECRAWL_MAX_RATE_PER_SITE": "200",
        "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "16",
        "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "2",
        "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
    },
}


def slug(*parts: str) -> str:
    """A file name for a crawl (``c12 / imagecrawl #2`` -> ``c12_imagecrawl_2``)."""
    return re.sub(r"[^\w.-]+", "_", " ".join(parts)).strip("_")


def crawl(
    name: str,
    url: str,
    settings: dict[str, str],
    seconds: float,
    workdir: Path,
    spider_args: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], float]:
    """One ``pacing_load`` crawl of ``url`` (a template with ``{i}``) for ``seconds``: its exit status,
    final stats and wall time.  ``spider_args``: more ``-a NAME=VALUE`` for the spider."""
    stats_file = workdir / f"{slug(name)}.stats.json"
    stats_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "pacing_load", "-a", f"urls={url}"]
    cmd += ["-a", "n=1000000"]  # the spider generates them lazily
    for key, value in (spider_args or {}).items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    merged = {
        "SPIDER_MODULES": "tests.pacing_spider",
        "CLOSESPIDER_TIMEOUT": str(seconds),
        "IMAGECRAWL_STORE": str(workdir / "store"),
        "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
        "IMAGECRAWL_STATS_FILE": str(stats_file),
        "LOG_LEVEL": "WARNING",
        "TELNETCONSOLE_ENABLED": "False",
        **settings,
    }
    for key, value in merged.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 120)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 4):  # 4: a crawl that stored nothing (this spider stores nothing)
        sys.stderr.write(proc.stderr[-3000:])
    print(f"  {name}: crawl took {wall:.0f}s (exit {proc.returncode})", file=sys.stderr)
    stats: dict[str, Any] = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return proc.returncode, stats, wall
