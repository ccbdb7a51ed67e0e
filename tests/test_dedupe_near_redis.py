"""RedisNearIndex against a real redis-server subprocess on loopback."""

from __future__ import annotations

import random
import shutil

import pytest

from imagecrawl.dedupe.near import NearIndex
from tests.test_dedupe_near import MAX64, MIN64, brute, clustered_hashes, queries

redis = pytest.importorskip("redis", reason="the redis client is not installed (uv sync --extra redis)")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server binary not found (apt-get install -y redis-server)"
)


@pytest.fixture()
def namespace(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}:{random.getrandbits(32):08x}"


def test_two_clients_see_each_other(redis_url: str, namespace: str) -> None:
    from imagecrawl.distributed.near_index import RedisNearIndex

    a = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    b = RedisNearIndex(redis.Redis.from_url(redis_url, decode_responses=True), namespace=namespace)
    assert isinstance(a, NearIndex)
    assert a.query(0x1234, 4) is None
    a.add("from-a", 0x1234)
    assert b.query(0x1235, 4) == ("from-a", 1)
    b.add_many([("from-b", 0x7777_0000), ("from-a", 0x9999)])  # "from-a" already stored: ignored
    assert a.query(0x7777_0001, 2) == ("from-b", 1)
    assert a.query(0x9999, 0) is None
    assert len(a) == len(b) == 2
    a.close()
    b.close()


def test_matches_brute_force_and_reopens(redis_url: str, namespace: str) -> None:
    from imagecrawl.distributed.near_index import RedisNearIndex

    rng = random.Random(11)
    hashes = clustered_hashes(rng, 4000)
    items = [(f"rec-{i}", h) for i, h in enumerate(hashes)]
    writer = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    reader = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace, bands=3)
    stored: list[tuple[str, int]] = []
    # streaming: the writer adds, the other client queries right after each batch
    for start in range(0, 3000, 500):
        writer.add_many(items[start : start + 500])
        stored += items[start : start + 500]
        for q in queries(rng, hashes, 20):
            assert reader.query(q, 10) == brute(stored, q, 10)
    for key, h in items[3000:3200]:
        writer.add(key, h)
        stored.append((key, h))
    qs = queries(rng, hashes, 200)
    expected = [brute(stored, q, k) for q in qs for k in (3, 10, 13)]
    assert [reader.query(q, k) for q in qs for k in (3, 10, 13)] == expected
    fresh = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    assert len(fresh) == 3200
    assert [fresh.query(q, k) for q in qs for k in (3, 10, 13)] == expected


def test_edge_values(redis_url: str, namespace: str) -> None:
    from imagecrawl.distributed.near_index import RedisNearIndex

    index = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    index.add_many([("zero", 0), ("minus1", -1), ("min", MIN64), ("max", MAX64)])
    other = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    assert [other.query(h, 0) for h in (0, -1, MIN64, MAX64)] == [
        ("zero", 0),
        ("minus1", 0),
        ("min", 0),
        ("max", 0),
    ]
    assert other.query(1, 0) is None
    with pytest.raises(ValueError):
        index.add("two\nlines", 5)


def test_large_batches_and_many_log_entries(redis_url: str, namespace: str) -> None:
    from imagecrawl.distributed.near_index import RedisNearIndex

    rng = random.Random(5)
    items = [(f"k{i}", rng.getrandbits(64)) for i in range(2500)]  # 3 script calls
    index = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    index.add_many(items)
    for key, h in items[:150]:  # 150 single-add log entries: more than one LRANGE page
        index.add(key + "-single", h ^ 1)
    fresh = RedisNearIndex(redis.Redis.from_url(redis_url), namespace=namespace)
    assert len(fresh) == len(index) == 2650
    for key, h in items[:150:7]:
        assert fresh.query(h, 0) == (key, 0)
        assert fresh.query(h ^ 1, 0) == (key + "-single", 0)


def test_dead_workers_closest_claim_does_not_hide_a_live_near_copy(redis_url: str, namespace: str) -> None:
    """A worker claims image X and dies; a survivor keeps X's near copy Y; X comes back (its lease) and
    is fetched again: X's own dead claim is the closest hit, but Y (live) makes X a near duplicate."""
    from imagecrawl.distributed.ledger import RedisLedger
    from imagecrawl.distributed.near_index import RedisNearIndex

    def ledger(owner: str) -> RedisLedger:
        client = redis.Redis.from_url(redis_url)
        led = RedisLedger(client, f"{namespace}:ledger:", owner, f"{namespace}:alive:", alive_seconds=30)
        led.heartbeat(force=True)
        led.enable_near(RedisNearIndex(redis.Redis.from_url(redis_url), namespace=f"{namespace}:near"))
        return led

    dead, live = ledger("dead"), ledger("live")
    x, y = 0x0F0F_0000_1234_5678, 0x0F0F_0000_1234_567B  # 2 bits apart
    assert dead.reserve("sha-x", "gallery:x", None, x)
    redis.Redis.from_url(redis_url).delete(f"{namespace}:alive:dead")  # its heartbeat stopped
    assert live.near_duplicate(y, 8) is None  # X's claim is a dead worker's: Y may be kept
    assert live.reserve("sha-y", "gallery:y", None, y)
    # X again (redone by the survivor): the closest hit is X itself, unclaimed; Y counts
    assert live.near_duplicate(x, 8) == ("gallery:y", 2)
    assert live.near_duplicate(x ^ (1 << 40), 0) is None
    assert [k for k, _ in live.near.query_all(x, 8)] == ["gallery:x", "gallery:y"]
