"""The Redis pieces on their own, against a real ``redis-server`` on loopback: the shared dedupe ledger
(atomic claims, dead workers' claims lapse), the shared rate gate (GCRA spacing across threads, shared
cuts and pauses), ``imagecrawl seed``, and seeds fed into a running crawl."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from imagecrawl.distributed.config import CrawlKeys, alive_prefix, ledger_prefix
from imagecrawl.distributed.ledger import RedisLedger
from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.distributed.seeds import push_seeds

from .conftest import REPO, run_crawl
from .distributed_util import RedisServer, check_gallery_store, per_second

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def _ledger(client: redis.Redis, prefix: str, owner: str, alive: float = 30.0) -> RedisLedger:
    ledger = RedisLedger(client, ledger_prefix(prefix, "/store"), owner, alive_prefix(prefix), alive)
    ledger.heartbeat(force=True)
    return ledger


def test_ledger_claims_are_atomic_and_lapse_with_their_worker(client: redis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a = _ledger(client, prefix, "worker-a", alive=0.5)
    b = _ledger(client, prefix, "worker-b")
    assert a.duplicate_reason("s1", "id1") is None
    assert a.reserve("s1", "id1", "http://x/1.png")
    assert a.reserve("s1", "id1", "http://x/1.png"), "claiming one's own claim again is fine"
    assert a.duplicate_reason("s1", "id1") == "sha256"
    assert not b.reserve("s1", "other-id"), "another worker cannot claim the same image"
    assert not b.reserve("s2", "id1"), "nor the same record id"
    assert b.duplicate_reason("s1", "x") == "sha256" and b.duplicate_reason("s9", "id1") == "id"
    assert b.has_id("id1") and b.has_url("http://x/1.png") and not b.has_url("http://x/2.png")

    time.sleep(0.7)  # worker-a stopped renewing: its claims count no more
    assert b.duplicate_reason("s1", "id1") is None
    assert b.reserve("s1", "id1", "http://x/1.png")
    b.commit_shard("g/date=2026-01-01/part-b-1.parquet", [("s1", "id1", 7, "http://x/1.png")])
    assert b.known_shards() == {"g/date=2026-01-01/part-b-1.parquet"}
    assert a.duplicate_reason("s1", "zz") == "sha256" and a.has_id("id1") and a.has_url("http://x/1.png")
    assert not a.reserve("s1", "id1")
    b.release("s3", "id3")  # releasing what one does not hold is a no-op
    assert b.count() == 1


def test_ledger_race_every_image_claimed_once(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    shas = [f"sha{i}" for i in range(200)]
    won: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        c = redis.Redis.from_url(redis_server.url)
        ledger = _ledger(c, prefix, name)
        mine = [s for s in shas if ledger.duplicate_reason(s, "id-" + s) is None and ledger.reserve(s, "id-" + s)]
        with lock:
            won[name] = mine
        c.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = Counter(s for mine in won.values() for s in mine)
    assert set(claimed) == set(shas) and set(claimed.values()) == {1}


def test_gcra_spaces_all_workers_under_the_cap(client: redis.Redis, redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = RateConfig(cap=20.0)
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def worker() -> None:
        limiter = RedisRateLimiter(redis.Redis.from_url(redis_server.url), prefix, config)
        while time.monotonic() < stop:
            wait = limiter.acquire("example.org")
            if wait == 0:
                with lock:
                    grants.append(time.time())
            else:
                time.sleep(min(wait, 0.05))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grants.sort()
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    _, sliding = per_second(grants)
    assert sliding <= 20, sliding
    assert len(grants) >= 2.5 * 20 / 1.1 * 0.8, len(grants)  # and not much slower than that
    assert min(gaps) > 0.03, min(gaps)  # 1.1/20 s apart on Redis's clock; thread wake-up jitter aside


def test_one_workers_429_slows_everyone(client: redis.Redis, redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = RateConfig(cap=10.0, increase_per_second=0.5)
    a = RedisRateLimiter(client, prefix, config)
    b = RedisRateLimiter(redis.Redis.from_url(redis_server.url), prefix, config)  # another worker
    assert a.rate("site") == 10.0
    assert a.congestion("site") == pytest.approx(7.0)
    assert a.congestion("site") is None, "one burst of 429s is one cut"
    assert b.rate("site") == pytest.approx(7.0), "the other worker slows down too"
    time.sleep(1.05)
    assert b.healthy("site") > 7.0, "healthy answers let the shared rate grow back"
    assert a.pause("site", 0.6)
    assert not a.pause("site", 0.1), "a shorter pause never shortens a longer one"
    wait = b.acquire("site")
    assert 0.3 < wait <= 0.6, wait
    assert b.paused_for("site") > 0.3
    time.sleep(wait + 0.05)
    assert b.acquire("site") == 0.0


def test_seed_cli(redis_server: RedisServer, client: redis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "imagecrawl.cli", "seed", "--redis", redis_server.url, "--prefix", prefix, "gallery"]
    run = subprocess.run(
        [*cmd, "http://a.example/1", '{"url": "http://a.example/2", "meta": {"k": 1}}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pushed 2 seed(s)" in run.stdout
    keys = CrawlKeys(prefix, "gallery")
    assert client.llen(keys.seeds) == 2
    bad = subprocess.run([*cmd, "ftp://nope"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "not an http(s) URL" in bad.stderr
    client.sadd(keys.seen, "fp")
    reset = subprocess.run([*cmd, "--reset"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "reset" in reset.stdout
    assert client.llen(keys.seeds) == 0 and not client.exists(keys.seen)


def test_pushed_seeds_are_crawled(tmp_path: Path, redis_server: RedisServer, sandbox_site: Any) -> None:
    """A worker started on the gallery's first page only (max_pages=1) also crawls a pushed page 2."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    c = redis.Redis.from_url(redis_server.url)
    assert push_seeds(c, CrawlKeys(prefix, "gallery"), [sandbox_site.url("gallery/?page=2")]) == 1
    store = tmp_path / "store"
    result = run_crawl(
        "gallery",
        store=store,
        args={"profile": "sandbox", "start_url": sandbox_site.url("gallery/"), "max_pages": 1},
        settings={"IMAGECRAWL_REDIS_URL": redis_server.url, "IMAGECRAWL_REDIS_PREFIX": prefix},
    )
    assert result.stats["imagecrawl/distributed/seeds/fed"] == 1
    assert result.stats["imagecrawl/pages/gallery/listings"] == 2
    check_gallery_store(store, 40, 7)
    assert c.llen(CrawlKeys(prefix, "gallery").seeds) == 0


def test_a_run_on_a_drained_frontier_says_so_and_names_the_reset(
    tmp_path: Path, redis_server: RedisServer, sandbox_site: Any
) -> None:
    """Run a crawl to its end, then again with a higher max_items: the second run finds the frontier
    drained, crawls nothing, and says how to start afresh; after the reset it crawls again."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = {"IMAGECRAWL_REDIS_URL": redis_server.url, "IMAGECRAWL_REDIS_PREFIX": prefix}
    args = {"profile": "sandbox", "start_url": sandbox_site.url("gallery/"), "max_pages": 1}
    first = run_crawl("gallery", store=tmp_path / "store", args={**args, "max_items": 3}, settings=settings)
    assert first.stats["imagecrawl/parquet/rows"] == 3 and "imagecrawl/distributed/drained" not in first.stats
    again = run_crawl("gallery", store=tmp_path / "store", args={**args, "max_items": 6}, settings=settings)
    assert again.stats["imagecrawl/distributed/drained"] == 1
    assert "imagecrawl/parquet/rows" not in again.stats
    [line] = [line for line in again.stderr.splitlines() if "already drained" in line]
    assert " WARNING: " in line and f"imagecrawl seed --redis {redis_server.url} gallery --reset" in line
    cmd = [sys.executable, "-m", "imagecrawl.cli", "seed", "--redis", redis_server.url, "--prefix", prefix]
    subprocess.run([*cmd, "gallery", "--reset"], cwd=REPO, capture_output=True, text=True, check=True)
    after = run_crawl("gallery", store=tmp_path / "store", args={**args, "max_items": 6}, settings=settings)
    # crawled again: new rows (max_items counts the images already stored too), no drained warning
    assert after.stats["imagecrawl/parquet/rows"] > 0 and "imagecrawl/distributed/drained" not in after.stats


def test_workers_and_forget_runs_take_turns_in_redis(
    client: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from scrapy.settings import Settings

    from imagecrawl.distributed.forgetlock import hold
    from imagecrawl.errors import StoreError

    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings({"IMAGECRAWL_REDIS_URL": redis_server.url, "IMAGECRAWL_REDIS_PREFIX": prefix})
    writer = _ledger(client, prefix, "run-a")
    writer.register_writer()
    busy = r"distributed crawl worker run-a \(host .*\) is writing into this store now"
    with pytest.raises(StoreError, match=busy), hold(settings, "/store"):
        pass
    writer.close()
    # a worker that died without closing (its alive key gone) does not hold the store
    dead = _ledger(redis.Redis.from_url(redis_server.url), prefix, "run-dead")
    dead.register_writer()
    client.delete(alive_prefix(prefix) + "run-dead")

    started = threading.Event()
    registered: list[float] = []

    def worker() -> None:
        late = _ledger(redis.Redis.from_url(redis_server.url), prefix, "run-b")
        started.set()
        late.register_writer(poll_seconds=0.05)  # waits while the forget run holds the store
        registered.append(time.monotonic())
        late.close()

    with hold(settings, "/store"):
        with pytest.raises(StoreError, match="another forget run holds this store"), hold(settings, "/store"):
            pass
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait(10)
        time.sleep(0.5)
        assert registered == []
        released = time.monotonic()
    thread.join(10)
    assert registered and registered[0] >= released
    assert "A forget run is rewriting this store" in caplog.text
    assert client.hkeys(ledger_prefix(prefix, "/store") + "writers") == []  # run-dead pruned, run-b closed
