"""Three workers, one Redis, one sandbox site with a rate cap: the site sees one polite crawler.

Each worker is ``scrapy crawl gallery`` in its own process (as on three machines), sharing the frontier,
the dedupe ledger and the per-site rate gate through a real ``redis-server`` on loopback. The sandbox's
own request log is the judge: requests per second summed over all workers, URLs fetched, and the store.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.pacing.sitekey import site_of_url
from tests.sandbox.testing import SandboxProcess

from .conftest import read_store
from .distributed_util import (
    RedisServer,
    WorkerProcess,
    check_gallery_store,
    new_prefix,
    per_second,
    redis_settings,
    requests_by_worker,
    start_workers,
    wait_workers,
    worker_of,
    worker_stats,
)
from .servers import SandboxFactory

pytestmark = pytest.mark.e2e

CAP = 10.0  # requests/second the site allows (its 429 bucket) and the crawl's configured cap
ITEMS, SEED = 40, 7
WORKERS = ("w1", "w2", "w3")
#: site-wide files each worker reads once for itself (robots.txt, TDMRep)
PER_WORKER = ("/robots.txt", "/.well-known/tdmrep.json")


@pytest.fixture
def capped_site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    """A fresh site per test (its rate bucket and request log start empty)."""
    return sandbox_factory.start(items=ITEMS, seed=SEED, extra_args=["--rate-limit", str(CAP)], name="capped-site")


def _settings(redis_server: RedisServer, prefix: str, store: Path) -> dict[str, Any]:
    return redis_settings(
        redis_server,
        prefix,
        store,
        CAP,
        {
            "CONCURRENT_REQUESTS": 3,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 3,
            "IMAGECRAWL_TUNING": {"redis_lease_seconds": 6},
        },
    )


def _check_worker(w: WorkerProcess) -> dict[str, Any]:
    stats = worker_stats(w)
    assert stats.get("finish_reason") == "finished", stats
    return stats


def _check_rate(requests: list[dict[str, Any]]) -> tuple[int, int]:
    """The site's own log: requests started in each second, all workers together, stay under the cap."""
    times = [r["t"] for r in requests]
    buckets, sliding = per_second(times)
    worst = max(buckets.values())
    gaps = sorted(round(b - a, 3) for a, b in itertools.pairwise(sorted(times)))[:12]
    assert worst <= CAP * 1.05, f"{worst} requests in one second (cap {CAP}): {sorted(buckets.items())}; gaps {gaps}"
    assert not [r for r in requests if r["status"] == 429], "the site had to refuse requests"
    return worst, sliding


def _check_store(store: Path) -> list[str]:
    """Every gallery image once (near copies dropped), and no two stored images near each other."""
    shards = check_gallery_store(store, ITEMS, SEED)
    stored = read_store(store, columns=["image_phash"]).column("image_phash").to_pylist()
    close = [(a, b) for i, a in enumerate(stored) for b in stored[i + 1 :] if _distance(a, b) <= 8]
    assert close == [], "near duplicates were written (by different workers)"
    return shards


def _distance(a: int, b: int) -> int:
    return ((a ^ b) & (2**64 - 1)).bit_count()


def _start_together(
    tmp_path: Path, redis_server: RedisServer, site: SandboxProcess, prefix: str, settings: dict[str, Any]
) -> list[WorkerProcess]:
    """Start the workers with the site paused for all of them (the shared gate), and open it once every
    worker is up: processes start at different speeds on a busy machine, a crawl should not depend on it."""
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_server.url), prefix, RateConfig(cap=CAP))
    host = site_of_url(site.base_url)
    limiter.pause(host, 120)
    start = site.url("gallery/")
    workers = start_workers(
        WORKERS, "gallery", tmp_path / "workers", args={"profile": "sandbox", "start_url": start}, settings=settings
    )
    deadline = time.monotonic() + 120
    while not all("Shared frontier" in w.log_text() for w in workers):
        assert time.monotonic() < deadline, [w.log_text()[-2000:] for w in workers]
        assert all(w.process.poll() is None for w in workers), [w.log_text()[-3000:] for w in workers]
        time.sleep(0.1)
    limiter.resume(host)
    return workers


def test_three_workers_one_polite_crawler(
    tmp_path: Path, redis_server: RedisServer, capped_site: SandboxProcess
) -> None:
    prefix = new_prefix()
    store = tmp_path / "store"
    settings = _settings(redis_server, prefix, store)
    workers = _start_together(tmp_path, redis_server, capped_site, prefix, settings)
    wait_workers(workers, 150)
    stats = [_check_worker(w) for w in workers]

    requests = capped_site.requests()
    worst, sliding = _check_rate(requests)
    # Each worker that fetched anything read the site's robots.txt and TDMRep file for itself; every other
    # URL was fetched once.
    paths = Counter(r["path"] + ("?" + r["query"] if r["query"] else "") for r in requests)
    for per_worker in PER_WORKER:
        assert paths.pop(per_worker, 0) <= len(WORKERS)
    assert [p for p, n in paths.items() if n > 1] == []
    assert sum(1 for p in paths if p.startswith("/gallery/item/")) == ITEMS

    # Each worker wrote its own shards (its id in their names) into the one store.
    shards = _check_store(store)
    agents = requests_by_worker(requests)
    image_fetchers = {worker_of(r) for r in requests if r["path"].startswith("/images/")}
    writers = {w for w in WORKERS for s in shards if f"-{w}-" in s}
    assert all(any(f"-{w}-" in s for w in WORKERS) for s in shards), shards
    # a worker whose every image turned out a duplicate of another worker's writes no shard
    assert writers and writers <= image_fetchers, (writers, image_fetchers, shards)
    assert len(agents) >= 2, f"the work was not shared: {agents}"
    # every request went through the pacing middleware's gate, shared through Redis
    assert sum(s.get("imagecrawl/pacing/requests", 0) for s in stats) == len(requests)
    assert sum(s.get("imagecrawl/dedupe/dropped/near", 0) for s in stats) >= 1
    for w, st in zip(workers, stats, strict=True):
        print(
            f"\n{w.name}: {st.get('elapsed_time_seconds')}s, idle waits {st.get('imagecrawl/distributed/idle_waits')}"
        )
    print(
        f"\nrate: cap {CAP}/s, worst second {worst}, worst sliding 1 s window {sliding}, "
        f"{len(requests)} requests; per worker {dict(agents)}; shards {len(shards)}"
    )
    client = redis.Redis.from_url(redis_server.url)
    assert client.zcard(f"{prefix}:crawl:gallery:leases") == 0
    assert client.zcard(f"{prefix}:crawl:gallery:sites") == 0
    assert int(client.get(f"{prefix}:crawl:gallery:queued") or 0) == 0
    assert list(client.scan_iter(match=f"{prefix}:crawl:gallery:q:*")) == []


def test_killed_worker_loses_nothing(tmp_path: Path, redis_server: RedisServer, capped_site: SandboxProcess) -> None:
    prefix = new_prefix()
    store = tmp_path / "store"
    settings = _settings(redis_server, prefix, store)
    start = capped_site.url("gallery/")
    workers = start_workers(
        WORKERS, "gallery", tmp_path / "workers", args={"profile": "sandbox", "start_url": start}, settings=settings
    )
    client = redis.Redis.from_url(redis_server.url)
    owners = f"{prefix}:crawl:gallery:lease:owner"
    deadline = time.monotonic() + 90
    # Kill a worker mid-crawl while it holds work: leases in Redis and items not yet in the store.
    while True:
        if len(capped_site.requests()) >= 25:
            holders = Counter(o.decode().split("-")[1] for o in client.hvals(owners))
            victim = next((w for w in workers if holders.get(w.name)), None)
            if victim is not None:
                held = holders[victim.name]
                break
        assert time.monotonic() < deadline, "the crawl never got going"
        assert all(w.process.poll() is None for w in workers), [w.log_text()[-2000:] for w in workers]
        time.sleep(0.05)
    survivors = [w for w in workers if w is not victim]
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    killed_at = time.time()
    wait_workers(survivors, 150)
    stats = [_check_worker(w) for w in survivors]
    assert sum(s.get("imagecrawl/distributed/leases/reclaimed", 0) for s in stats) >= held

    requests = capped_site.requests()
    _check_rate(requests)
    _check_store(store)
    # A URL fetched twice was one the dead worker had fetched and never finished; nothing else repeats.
    by_path: dict[str, list[str]] = {}
    for r in requests:
        if r["path"] not in PER_WORKER:
            by_path.setdefault(r["path"] + "?" + r["query"], []).append(r["ua"])
    repeated = {p: uas for p, uas in by_path.items() if len(uas) > 1}
    assert all(any(ua.endswith(f"+{victim.name})") for ua in uas) for uas in repeated.values()), repeated
    assert all(r["t"] < killed_at for r in requests if r["ua"].endswith(f"+{victim.name})"))
    print(f"\nkilled {victim.name} holding {held} lease(s); {len(repeated)} URL(s) fetched again by survivors")
