"""The pacing middleware's gate shared through Redis (:class:`imagecrawl.distributed.gate.RedisGate`),
against a real ``redis-server``: each "worker" has its own in-process gate (AIMD, bans) and all of them
together stay under the site's cap; one worker's Retry-After or ban keeps every worker away."""

from __future__ import annotations

import math
import threading
import time
import uuid

import redis

from imagecrawl.distributed.gate import RedisGate
from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
from imagecrawl.pacing import AimdConfig, BanConfig, Feedback, InProcessGate, Signal, Verdict
from imagecrawl.pacing.circuit import CircuitConfig, CircuitState

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


def _shared_gate(server: RedisServer, prefix: str, concurrency: int = 2) -> RedisGate:
    local = InProcessGate(
        aimd=AimdConfig(start_rate=4.0, max_rate=CAP, start_concurrency=concurrency, max_concurrency=4),
        jitter=0.0,
    )
    return RedisGate(local, RedisRateLimiter(redis.Redis.from_url(server.url), prefix, RateConfig(cap=CAP)))


def _granted(gate: RedisGate, site: str, timeout: float = 3.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        wait, _shared = gate.admit(site, now)
        if wait == 0:
            return now
        time.sleep(min(wait, 0.05))
    raise AssertionError("no grant")


def test_one_controller_per_site_cut_once_by_the_429s_worker(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a, b = _shared_gate(redis_server, prefix), _shared_gate(redis_server, prefix)
    sent_a = _granted(a, "site")
    sent_b = _granted(b, "site")
    a.release("site", sent_a, time.monotonic())
    a.feedback("site", Feedback(Signal.THROTTLED, sent_a, 0.01), time.monotonic())
    cut = a.local.sites["site"].controller.rate
    assert cut < 4.0
    # b's answer to a request sent before the cut does not cut the site's one controller again
    b.release("site", sent_b, time.monotonic())
    b.feedback("site", Feedback(Signal.THROTTLED, sent_b, 0.01), time.monotonic())
    assert b.local.sites["site"].controller.rate == cut
    assert b.limiter.rate("site") == cut
    # a third worker starting now paces at the shared rate, not at its own start rate
    c = _shared_gate(redis_server, prefix)
    c.admit("site", time.monotonic())
    assert c.local.sites["site"].controller.rate == cut


def test_the_sites_concurrency_holds_for_all_workers(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a, b = _shared_gate(redis_server, prefix, concurrency=2), _shared_gate(redis_server, prefix, concurrency=2)
    first = _granted(a, "site")
    _granted(b, "site")
    time.sleep(0.5)  # the rate slot is free again; only the concurrency can say no
    wait, shared = b.admit("site", time.monotonic())
    assert wait > 0 and not shared, "a third request while two of the site's are in flight"
    wait, shared = a.admit("site", time.monotonic())
    assert wait > 0 and not shared
    a.release("site", first, time.monotonic())
    _granted(b, "site")


def test_a_retry_after_holds_a_request_granted_before_it(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a, b = _shared_gate(redis_server, prefix), _shared_gate(redis_server, prefix)
    sent_a = _granted(a, "site")
    granted_b = _granted(b, "site")
    # a's 429 comes while b's request is on its way to the network (granted a moment ago, not late)
    a.announce_pause("site", 1.0)
    assert 0.8 < b.depart("site", granted_b, time.monotonic()) <= 1.0
    a.release("site", sent_a, time.monotonic())
    a.feedback("site", Feedback(Signal.THROTTLED, sent_a, 0.01, retry_after=1.0), time.monotonic())
    b.release("site", granted_b, time.monotonic())  # b's request was held back, never sent
    time.sleep(0.4)  # b's own spacing is over: only the shared pause says no
    wait, shared = b.admit("site", time.monotonic())
    assert shared and 0.3 < wait <= 0.6, wait


def test_a_workers_dead_site_probe_does_not_wait_behind_the_others(redis_server: RedisServer) -> None:
    """Each worker's dead-site circuit probes for itself: its probe is not held back by the site's shared
    concurrency, which another worker's hanging request fills (a silent site would take twice as long
    to be given up)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    circuit = CircuitConfig(failures=2, cooloff_seconds=0.2, max_probes=2)

    def gate() -> RedisGate:
        local = InProcessGate(
            aimd=AimdConfig(start_rate=CAP, max_rate=CAP, start_concurrency=1, max_concurrency=1),
            jitter=0.0,
            circuit=circuit,
        )
        return RedisGate(local, RedisRateLimiter(redis.Redis.from_url(redis_server.url), prefix, RateConfig(cap=CAP)))

    a, b = gate(), gate()
    _granted(a, "site")  # a's request hangs: the site's one concurrency slot is taken
    time.sleep(0.2)
    wait, shared = b.admit("site", time.monotonic())
    assert wait > 0 and not shared, "b's ordinary request waits for the site's concurrency"
    for _ in range(2):  # b's own requests failed to connect: its circuit opens
        now = time.monotonic()
        b.feedback("site", Feedback(Signal.CONNECTION, now, None, answer=False), now)
    assert b.local.sites["site"].circuit.state is CircuitState.OPEN
    time.sleep(0.5)  # the cool-off is over: b's probe goes although a's request still holds the slot
    _granted(b, "site", timeout=1.0)
    assert b.local.sites["site"].circuit.state is CircuitState.HALF_OPEN


class _Stats:
    """The counters a crawler's stats collector would keep (RedisGate only increments)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc_value(self, key: str, count: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + count


def _circuit_gate(server: RedisServer, prefix: str, circuit: CircuitConfig, concurrency: int = 4) -> RedisGate:
    local = InProcessGate(
        aimd=AimdConfig(start_rate=CAP, max_rate=CAP, start_concurrency=concurrency, max_concurrency=concurrency),
        jitter=0.0,
        circuit=circuit,
    )
    limiter = RedisRateLimiter(redis.Redis.from_url(server.url), prefix, RateConfig(cap=CAP))
    return RedisGate(local, limiter, stats=_Stats())


def _no_answer(gate: RedisGate, sent_at: float) -> None:
    now = time.monotonic()
    gate.release("site", sent_at, now)
    gate.feedback("site", Feedback(Signal.CONNECTION, sent_at, None, answer=False), now)


def test_the_workers_dead_site_failures_count_together_and_one_probe_goes(redis_server: RedisServer) -> None:
    """The circuit is one per site over all workers: failures split between two workers open it as one
    process's would; after the cool-off one probe goes, the other worker waits for it (counted), and
    when the probes fail the site is given up for both, counted once."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = CircuitConfig(failures=4, cooloff_seconds=0.8, max_probes=2)
    a, b = _circuit_gate(redis_server, prefix, config), _circuit_gate(redis_server, prefix, config)
    sent = [_granted(a, "site"), _granted(b, "site"), _granted(a, "site"), _granted(b, "site")]
    for gate, at in zip((a, b, a, b), sent, strict=True):
        _no_answer(gate, at)
    # two failures each: open for both (a worker alone would need four); a reads it before its next grant
    assert b.local.sites["site"].circuit.state is CircuitState.OPEN
    time.sleep(0.3)
    wait, _ = a.admit("site", time.monotonic())
    assert a.local.sites["site"].circuit.state is CircuitState.OPEN
    assert 0.3 < wait <= 0.5, wait

    time.sleep(wait + 0.05)
    probe = _granted(a, "site", timeout=1.0)
    assert a.local.sites["site"].circuit.state is CircuitState.HALF_OPEN
    wait, shared = b.admit("site", time.monotonic())
    assert 0 < wait <= 0.5 and not shared, "a's probe is out: b sends none"
    assert b.stats.values.get("imagecrawl/distributed/probe_waits") == 1
    _no_answer(a, probe)
    # the failed probe opens the circuit again, twice as long, for both
    wait, _ = b.admit("site", time.monotonic())
    assert b.local.sites["site"].circuit.state is CircuitState.OPEN
    assert 1.4 < wait <= 1.6, wait

    time.sleep(wait + 0.05)
    probe = _granted(b, "site", timeout=1.0)
    wait, _ = a.admit("site", time.monotonic())
    assert wait > 0
    _no_answer(b, probe)
    for gate in (a, b):
        assert math.isinf(gate.admit("site", time.monotonic())[0])
        assert gate.dead("site")
    assert [a.give_up("site"), b.give_up("site")] == [True, False], "the site is counted once"
    events = [e.kind for g in (a, b) for e in g.drain_events()]
    assert events.count("circuit/opened") == 2 and events.count("circuit/dead") == 1, events


def test_an_answer_from_any_worker_closes_the_shared_circuit(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = CircuitConfig(failures=2, cooloff_seconds=0.2, max_probes=3)
    a, b = _circuit_gate(redis_server, prefix, config), _circuit_gate(redis_server, prefix, config)
    first, second = _granted(a, "site"), _granted(b, "site")
    _no_answer(a, first)
    # b's request was answered in between: the failures are no longer in a row
    now = time.monotonic()
    b.release("site", second, now)
    b.feedback("site", Feedback(Signal.OK, second, 0.01), now)
    _no_answer(a, _granted(a, "site"))
    assert a.local.sites["site"].circuit.state is CircuitState.CLOSED
    _no_answer(a, _granted(a, "site"))
    assert a.local.sites["site"].circuit.state is CircuitState.OPEN
    time.sleep(0.25)
    probe = _granted(b, "site", timeout=1.0)
    now = time.monotonic()
    b.release("site", probe, now)
    b.feedback("site", Feedback(Signal.OK, probe, 0.01), now)
    assert _granted(a, "site", timeout=1.0) > 0
    assert a.local.sites["site"].circuit.state is CircuitState.CLOSED


def test_a_site_full_of_other_workers_requests_is_asked_again_later_and_later(redis_server: RedisServer) -> None:
    """No 50 ms polling while another worker's requests fill the site: the wait doubles (counted), up to
    a bound, and starts again from the first once a request got through."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a = _circuit_gate(redis_server, prefix, CircuitConfig(), concurrency=1)
    b = _circuit_gate(redis_server, prefix, CircuitConfig(), concurrency=1)
    held = _granted(a, "site")
    time.sleep(0.2)
    waits = [b.admit("site", time.monotonic())[0] for _ in range(6)]
    assert waits == sorted(waits) and waits[0] < waits[-1] <= 1.0, waits
    assert waits[1] == 2 * waits[0]
    assert b.stats.values["imagecrawl/distributed/concurrency_waits"] == 6
    a.release("site", held, time.monotonic())
    _granted(b, "site")
    b.local.sites["site"].in_flight = 0  # (b's request ended without an answer to count)
    b.release("site", time.monotonic(), time.monotonic())
    held = _granted(a, "site")
    time.sleep(0.2)
    assert b.admit("site", time.monotonic())[0] == waits[0]


def test_the_shared_controller_keeps_its_containers(redis_server: RedisServer) -> None:
    """A controller read from Redis keeps the kinds of its time containers: its pauses (a list it pops
    from the front) stay a list after another worker's 429 with a Retry-After, and it keeps working."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a, b = _shared_gate(redis_server, prefix), _shared_gate(redis_server, prefix)
    for gate in (a, b):
        sent = _granted(gate, "site")
        now = time.monotonic()
        gate.release("site", sent, now)
        gate.feedback("site", Feedback(Signal.THROTTLED, sent, 0.01, retry_after=0.05), now)
        time.sleep(0.3)
    controller = b.local.sites["site"].controller
    assert type(controller._pauses) is type(a.local.sites["site"].controller._pauses)
    assert len(controller._pauses) >= 1
    controller.goodput(time.monotonic() + 3600)  # pops the old pauses from the front
