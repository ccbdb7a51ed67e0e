"""The pacing middleware's gate shared through Redis (:class:`imagecrawl.distributed.gate.RedisGate`),
against a real ``redis-server``: each "worker" has its own in-process gate (AIMD, bans) and all of them
together stay under the site's cap; one worker's Retry-After or ban keeps every worker away."""

from __future__ import annotations

import threading
import time
import uuid

import redis

from imagecrawl.distributed.gate import RedisGate
from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.pacing import AimdConfig, BanConfig, Feedback, InProcessGate, Signal, Verdict

from .distributed_util import RedisServer, per_second

CAP = 10.0


def _gate(server: RedisServer, prefix: str, bans: BanConfig | None = None) -> RedisGate:
    local = InProcessGate(
        aimd=AimdConfig(start_rate=CAP, max_rate=CAP, start_concurrency=4, max_concurrency=4),
        bans=bans or BanConfig(),
        jitter=0.0,
    )
    return RedisGate(local, RedisRateLimiter(redis.Redis.from_url(server.url), prefix, RateConfig(cap=CAP)))


def test_workers_together_stay_under_the_cap(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def worker() -> None:
        gate = _gate(redis_server, prefix)  # each at the full cap on its own
        while time.monotonic() < stop:
            now = time.monotonic()
            wait = gate.acquire("site", now)
            if wait == 0:
                with lock:
                    grants.append(time.time())
                gate.release("site", now, time.monotonic())
                gate.feedback("site", Feedback(Signal.OK, now, 0.01), time.monotonic())
            else:
                time.sleep(min(wait, 0.05))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, sliding = per_second(grants)
    assert sliding <= CAP, sliding
    assert len(grants) >= 2.5 * CAP / 1.1 * 0.7, len(grants)


def test_one_workers_retry_after_and_ban_keep_everyone_away(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bans = BanConfig(burst=2, cooldown_seconds=1.5, max_cooldown_seconds=10.0)
    a, b = _gate(redis_server, prefix, bans), _gate(redis_server, prefix, bans)
    now = time.monotonic()
    assert a.acquire("site", now) == 0
    a.release("site", now, now)
    a.feedback("site", Feedback(Signal.THROTTLED, now, 0.01, retry_after=0.8), time.monotonic())
    wait = b.acquire("site", time.monotonic())
    assert 0.5 < wait <= 0.8, wait
    assert b.limiter.rate("site") < CAP, "the 429 cut the shared rate"
    time.sleep(wait + 0.05)

    now = time.monotonic()
    for _ in range(2):
        a.verdict("site", Verdict.STATUS_403, now, time.monotonic())
    assert str(a.state_of("site")) in ("banned", "BanState.BANNED")
    wait = b.acquire("site", time.monotonic())
    assert 1.0 < wait <= 1.5, wait
    assert b.peek_wait("site", time.monotonic()) > 1.0
