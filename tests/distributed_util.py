"""Test helpers for distributed crawls: a real Debian ``redis-server`` on a free loopback port, crawl
workers as background processes, per-second request counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import LOOPBACK, REPO, free_port, stop_process


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> object:
        import redis

        return redis.Redis.from_url(self.url)


def start_redis(directory: Path) -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    process = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, process)


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
        cmd += ["-a", f"{key}={value}"]
    merged = {
        **LOOPBACK,
        "IMAGECRAWL_WORKER_ID": name,
        "IMAGECRAWL_CONTACT": name,
        "IMAGECRAWL_STATS_FILE": str(stats_file),
        **(settings or {}),
    }
    for key, value in merged.items():
        cmd += ["-s", f"{key}={value}"]
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
