"""Test helpers for distributed crawls: crawl workers as background processes, per-second request counts
(the ``redis_server`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.crawlers import merge_settings, setting_text

from .conftest import LOOPBACK, REPO
from .servers import RedisServer as RedisServer  # the redis_server fixture's type, for the test modules
from .servers import start_redis as start_redis


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stats_file: Path

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.stats_file.read_text())) if self.stats_file.exists() else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_worker(
    name: str,
    spider: str,
    directory: Path,
    *,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> WorkerProcess:
    """``scrapy crawl SPIDER`` in the background as worker ``name`` (its UA says so: ``+name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stats_file = directory / f"{name}.stats.json"
    log = directory / f"{name}.log"
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in (args or {}).items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    merged = merge_settings(
        LOOPBACK,
        {"IMAGECRAWL_WORKER_ID": name, "IMAGECRAWL_CONTACT": name, "IMAGECRAWL_STATS_FILE": str(stats_file)},
        settings or {},
    )
    for key, value in merged.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    with log.open("wb") as fh:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    return WorkerProcess(name, process, log, stats_file)


def per_second(times: list[float]) -> tuple[dict[int, int], int]:
    """Requests per calendar second, and the most requests in any sliding one-second window."""
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t)] = buckets.get(int(t), 0) + 1
    ordered = sorted(times)
    most, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= 1.0:
            lo += 1
        most = max(most, hi - lo + 1)
    return buckets, most


def check_gallery_store(store: Path, items: int, seed: int) -> list[str]:
    """The store holds each gallery image group (an original, its exact and near copies, see
    tests/expect.py) exactly once, and no image twice. Returns the shard file names."""
    from tests.sandbox.catalog import build_catalog

    from .conftest import read_store
    from .expect import expected_rows

    catalog = build_catalog(items, seed)
    expected = expected_rows(catalog, catalog.entries("gallery"), lambda e: f"gallery:{e.id}")
    shas = read_store(store, columns=["image_sha256"]).column("image_sha256").to_pylist()
    twice = sorted(sha[:12] for sha, n in Counter(shas).items() if n > 1)
    assert not twice, f"an image was written twice: {twice}"
    groups = [expected.sha_to_group.get(sha) for sha in shas]
    assert None not in groups, "the store holds bytes the gallery never served"
    kept = Counter(g for g in groups if g)
    missing = sorted(g for g in expected.groups if g not in kept)
    extra = {g: [e.id for e in expected.groups[g]] for g, n in kept.items() if n > 1}
    assert not missing and not extra, (
        f"gallery image groups missing: {missing}; kept twice (group: its entries): {extra}"
    )
    return [p.name for p in store.rglob("*.parquet")]
