"""The site-aware frontier's pure core (imagecrawl.pacing.frontier) with the real pacing gate and an
injected clock: the order within a site, fair turns across ready sites, waiting sites holding nothing,
releases waking a full site, the spill to disk and back, persistence, read-ahead, the dead-site circuit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from imagecrawl.pacing import AimdConfig, Feedback, InProcessGate, Signal
from imagecrawl.pacing.circuit import Circuit, CircuitConfig, CircuitState
from imagecrawl.pacing.frontier import RELEASE_FALLBACK_SECONDS, Frontier, FrontierConfig
from imagecrawl.pacing.gate import POLL_SECONDS
from imagecrawl.pacing.spill import SpillStore


def gate(rate: float = 1000.0, concurrency: int = 8, circuit: CircuitConfig | None = None) -> InProcessGate:
    aimd = AimdConfig(
        start_rate=rate, max_rate=rate, min_rate=0.01, start_concurrency=concurrency, max_concurrency=concurrency
    )
    return InProcessGate(aimd=aimd, jitter=0.0, circuit=circuit or CircuitConfig())


def admit_with(g: InProcessGate):  # type: ignore[no-untyped-def]
    def admit(site: str, now: float) -> float | None:
        wait = g.acquire(site, now)
        if wait > 0 and not math.isinf(wait) and g.sites[site].held_by_window:
            return None
        return wait

    return admit


def frontier(
    g: InProcessGate, tmp_path: Path | None = None, drops: list[tuple[str, int, str]] | None = None, **config: int
) -> Frontier[str]:
    return Frontier(
        admit_with(g),
        g.peek_wait,
        FrontierConfig(**config),
        spill=(lambda: SpillStore(tmp_path / "spill.sqlite3")) if tmp_path else None,
        encode=lambda r: r.encode(),
        decode=lambda b: b.decode(),
        on_drop=lambda site, n, why: (drops if drops is not None else []).append((site, n, why)),
    )


def drain(f: Frontier[str], now: float, span: float = 0.05) -> list[str]:
    """Everything the frontier lets out from ``now`` to ``now + span``, following its wake-ups."""
    out = []
    t = now
    while True:
        while (got := f.pop(t)) is not None:
            out.append(got[1])
        wake = f.next_wake()
        if wake is None or wake > now + span:
            return out
        t = max(t, wake)


def test_within_a_site_priority_first_then_the_key_order() -> None:
    f = frontier(gate())
    for seq, (prio, name) in enumerate([(0, "a"), (5, "b"), (0, "c"), (5, "d")]):
        f.push("s", (-prio, 0, seq), name, 0.0)
    assert drain(f, 0.0) == ["b", "d", "a", "c"]
    assert len(f) == 0


def test_ready_sites_take_turns() -> None:
    f = frontier(gate())
    for i in range(3):
        for site in ("x", "y", "z"):
            f.push(site, (0, 0, i), f"{site}{i}", 0.0)
    # one per site per turn, in the order the sites arrived
    assert drain(f, 0.0)[:6] == ["x0", "y0", "z0", "x1", "y1", "z1"]


def test_a_waiting_site_holds_nothing_and_goes_when_its_gate_opens() -> None:
    g = gate(rate=2.0)  # one request every ~0.5 s per site
    f = frontier(g)
    for i in range(3):
        f.push("slow", (0, 0, i), f"slow{i}", 0.0)
    f.push("other", (0, 0, 0), "other0", 0.0)
    assert drain(f, 0.0) == ["slow0", "other0"]  # slow1 waits; other is not held behind it
    wake = f.next_wake()
    assert wake is not None and 0.49 < wake < 0.52
    assert f.pop(wake - 0.01) is None
    assert drain(f, wake) == ["slow1"]
    assert len(f) == 1


def test_a_full_site_waits_for_a_release_not_a_timer() -> None:
    g = gate(concurrency=1)
    f = frontier(g)
    f.push("s", (0, 0, 0), "a", 0.0)
    f.push("s", (0, 0, 1), "b", 0.0)
    assert drain(f, 0.0) == ["a"]
    assert f.pop(0.1) is None  # the one slot is taken
    assert f.next_wake() == pytest.approx(RELEASE_FALLBACK_SECONDS, abs=0.01)  # the fallback, should a release be lost
    g.release("s", 0.0, 0.2)
    f.released("s", 0.2)
    assert f.next_wake() == pytest.approx(0.2)
    assert drain(f, 0.2) == ["b"]


def test_a_delayed_request_waits_for_its_time() -> None:
    f = frontier(gate())
    f.push("s", (0, 0, 0), "retry", 0.0, due=3.0)
    assert len(f) == 1 and f.pop(1.0) is None
    assert f.next_wake() == 3.0
    assert drain(f, 3.0) == ["retry"]


def test_a_given_up_site_drops_its_queue_and_later_requests() -> None:
    g = gate(concurrency=1, circuit=CircuitConfig(failures=1, cooloff_seconds=1.0, max_probes=1))
    drops: list[tuple[str, int, str]] = []
    f = frontier(g, drops=drops)
    for i in range(5):
        f.push("dead", (0, 0, i), f"d{i}", 0.0)
    f.push("live", (0, 0, 0), "l0", 0.0)
    assert drain(f, 0.0) == ["d0", "l0"]
    g.release("dead", 0.0, 0.1)
    g.feedback("dead", Feedback(Signal.CONNECTION, 0.0, answer=False), 0.1)  # opens the circuit
    f.released("dead", 0.1)
    assert f.pop(0.5) is None  # cooling off
    assert drain(f, 1.2) == ["d1"]  # the probe
    g.release("dead", 1.2, 1.3)
    g.feedback("dead", Feedback(Signal.TIMEOUT, 1.2, answer=False), 1.3)  # the probe failed: dead
    f.released("dead", 1.3)
    assert g.dead("dead")
    assert drain(f, 1.3) == []
    assert drops == [("dead", 3, "given up")]
    assert not f.push("dead", (0, 0, 9), "late", 2.0)
    assert len(f) == 0


def test_past_the_memory_limit_requests_wait_on_disk_and_come_back_in_order(tmp_path: Path) -> None:
    f = frontier(gate(concurrency=1000), tmp_path, memory_limit=10, keep_per_site=2)
    n_sites, per_site = 20, 15
    for i in range(per_site):
        for s in range(n_sites):
            f.push(f"site{s}", (0, 0, i), f"site{s}/{i:02d}", 0.0)
    assert len(f) == n_sites * per_site
    assert f.in_memory <= max(10, 2 * n_sites)
    assert f.on_disk >= n_sites * per_site - max(10, 2 * n_sites)
    got = drain(f, 0.0)
    assert len(got) == n_sites * per_site
    for s in range(n_sites):
        mine = [g for g in got if g.startswith(f"site{s}/")]
        assert mine == sorted(mine)  # the site's own order, across memory and disk
    assert len(f) == 0 and f.on_disk == 0
    f.close(remove=True)
    assert not (tmp_path / "spill.sqlite3").exists()


def test_a_request_that_cannot_be_encoded_stays_in_memory(tmp_path: Path) -> None:
    f: Frontier[str] = Frontier(
        admit_with(gate()),
        gate().peek_wait,
        FrontierConfig(memory_limit=1, keep_per_site=0),
        spill=lambda: SpillStore(tmp_path / "s.sqlite3"),
        encode=lambda r: None if r.startswith("x") else r.encode(),
        decode=lambda b: b.decode(),
    )
    for name in ("a", "xb", "c"):
        f.push("s", (0, 0, len(name)), name, 0.0)
    assert f.unspillable == 1 and f.on_disk == 1
    assert sorted(drain(f, 0.0)) == ["a", "c", "xb"]


def test_persist_and_load_keep_every_sites_queue(tmp_path: Path) -> None:
    f = frontier(gate(), tmp_path)
    for i in range(4):
        f.push("a", (0, 0, i), f"a{i}", 0.0)
        f.push("b", (-1, 0, i), f"b{i}", 0.0)
    f.push("a", (0, 0, 99), "a-retry", 0.0, due=50.0)
    assert [f.pop(0.0), f.pop(0.0)] == [("a", "a0"), ("b", "b0")]
    assert f.persist() == 0
    f.close(remove=False)
    again = frontier(gate(), tmp_path)
    assert again.load(0.0) == 7
    assert len(again) == 7
    got = drain(again, 0.0)
    assert [g for g in got if g.startswith("a")] == ["a1", "a2", "a3", "a-retry"]
    assert [g for g in got if g.startswith("b")] == ["b1", "b2", "b3"]
    assert again.tick >= f.tick  # keys given after the resume come after the saved ones


def test_read_ahead_counts_only_each_sites_next_requests() -> None:
    f = frontier(gate(rate=0.01), read_ahead=20, lookahead_per_site=4)
    for i in range(1000):  # one slow site holding a long run of the list
        f.push("slow", (0, 0, i), f"s{i}", 0.0)
    assert f.wants_more()  # it counts as 4
    for s in range(4):
        for i in range(4):
            f.push(f"site{s}", (0, 0, i), "r", 0.0)
    assert not f.wants_more()  # 4 + 16 = 20
    drain(f, 0.0)  # each site sends one, and the slow one only one
    assert f.wants_more()


def test_circuit_opens_probes_with_a_doubling_cooloff_and_gives_up() -> None:
    c = Circuit(CircuitConfig(failures=2, cooloff_seconds=1.0, max_probes=3))
    assert c.gate(0.0) == (0.0, None)
    assert c.failed(0.0, 0.1, "connection") is None
    change = c.failed(0.0, 0.2, "connection")
    assert change is not None and change.new is CircuitState.OPEN
    assert c.gate(0.5)[0] == pytest.approx(0.7)
    wait, change = c.gate(1.2)
    assert wait == 0.0 and change is not None and change.new is CircuitState.HALF_OPEN
    assert c.granted()  # the probe
    assert c.gate(1.3)[0] is None  # one probe at a time: wait for its release
    assert c.failed(0.0, 1.4, "timeout") is None  # an older request's failure is not the probe's
    change = c.failed(1.2, 1.5, "timeout")
    assert change is not None and change.new is CircuitState.OPEN
    assert c.open_until == pytest.approx(3.5)  # 2 s: doubled
    c.gate(3.5)
    c.granted()
    c.failed(3.5, 3.6, "timeout")
    assert c.open_until == pytest.approx(7.6)
    c.gate(7.6)
    c.granted()
    change = c.failed(7.6, 7.7, "timeout")
    assert change is not None and change.new is CircuitState.DEAD
    assert c.gate(100.0)[0] == math.inf


def test_any_answer_closes_the_circuit() -> None:
    c = Circuit(CircuitConfig(failures=1))
    c.failed(0.0, 0.0, "timeout")
    c.gate(5.0)
    c.granted()
    change = c.answered()
    assert change is not None and change.new is CircuitState.CLOSED
    assert c.gate(5.1) == (0.0, None)
    assert c.failed(5.1, 5.2, "timeout") is not None  # counting starts again (failures=1)


def test_the_gate_feeds_the_circuit_and_gives_up_a_dead_site() -> None:
    g = gate(circuit=CircuitConfig(failures=2, cooloff_seconds=1.0, max_probes=1))
    for t in (0.0, 0.01):
        assert g.acquire("d", t) == 0
        g.release("d", t, t + 0.05)
        g.feedback("d", Feedback(Signal.CONNECTION, t, answer=False), t + 0.05)
    assert 0.9 < g.acquire("d", 0.1) <= 1.0  # open: wait for the cool-off
    assert g.acquire("d", 1.1) == 0  # the probe
    assert g.acquire("d", 1.15) == POLL_SECONDS and g.sites["d"].held_by_window  # one probe at a time
    assert g.acquire("d", 1.15, policy=True) == 0  # the robots.txt the probe waits for is no second probe
    g.release("d", 1.1, 1.2)
    g.feedback("d", Feedback(Signal.TIMEOUT, 1.1, answer=False), 1.2)
    assert g.acquire("d", 5.0) == math.inf and g.dead("d")
    kinds = [e.kind for e in g.drain_events()]
    assert kinds.count("circuit/opened") == 1 and "circuit/dead" in kinds and "circuit/probes" in kinds


def test_idle_sites_with_nothing_to_remember_are_forgotten() -> None:
    g = gate(rate=1000.0)
    for site in ("done", "busy", "crawl-delay", "paused"):
        assert g.acquire(site, 0.0) == 0
        g.release(site, 0.0, 0.1)
    g.set_floor_interval("crawl-delay", 2.0)
    g.feedback("paused", Feedback(Signal.THROTTLED, 0.0, retry_after=1000.0), 0.1)
    assert g.acquire("busy", 50.0) == 0  # in flight
    assert g.forget_idle(100.0, 60.0, keep=lambda site: False) == 1
    assert set(g.sites) == {"busy", "paused"}
    assert set(g.learned) == {"crawl-delay"}  # compacted, its Crawl-delay kept
    g.release("busy", 50.0, 50.1)
    assert g.forget_idle(100.0, 60.0, keep=lambda site: site == "busy") == 0  # the frontier still queues for it
    assert g.forget_idle(200.0, 60.0, keep=lambda site: False) == 1
    assert set(g.sites) == {"paused"}  # a running pause is remembered in full
    assert set(g.learned) == {"crawl-delay"}  # a Crawl-delay is remembered as long as the crawl
    assert g.acquire("crawl-delay", 200.0) == 0
    assert g.sites["crawl-delay"].controller.floor_interval == 2.0
    g.release("crawl-delay", 200.0, 200.1)
    assert g.acquire("crawl-delay", 200.5) > 1.5  # the floor holds after the state came back


def test_settled_sites_keep_only_their_learned_rate_and_pending_state_stays_whole() -> None:
    aimd = AimdConfig(start_rate=4.0, max_rate=20.0, min_rate=0.01, start_concurrency=2, max_concurrency=4)
    g = InProcessGate(aimd=aimd, jitter=0.0)
    for site in ("learned", "paused", "failing", "queued"):
        assert g.acquire(site, 0.0) == 0
        g.release(site, 0.0, 0.1)
    g.feedback("learned", Feedback(Signal.THROTTLED, 0.0), 0.1)  # a cut: a rate and a ceiling learned
    rate, ceiling = g.sites["learned"].controller.rate, g.sites["learned"].controller.ceiling
    assert ceiling is not None and rate < 4.0
    g.feedback("paused", Feedback(Signal.THROTTLED, 0.0, retry_after=100.0), 0.1)
    g.feedback("failing", Feedback(Signal.CONNECTION, 0.0, answer=False), 0.1)  # one failure counted
    queued = lambda site: site == "queued"  # noqa: E731
    # not settled for long enough yet: nothing is compacted
    assert g.forget_idle(5.0, 300.0, queued) == 0
    assert set(g.sites) == {"learned", "paused", "failing", "queued"} and not g.learned
    # settled: only the learned rate is kept; a pending pause, a circuit failure, queued requests keep all
    assert g.forget_idle(20.0, 300.0, queued) == 0
    assert set(g.learned) == {"learned"} and set(g.sites) == {"paused", "failing", "queued"}
    assert g.held() == 4 and g.answered("learned")
    assert g.sites["paused"].paused_until > 100.0 and g.acquire("paused", 50.0) > 50.0
    assert g.sites["failing"].circuit.failures == 1
    # the next request brings the full state back with the learned rate, ceiling and concurrency
    assert g.acquire("learned", 21.0) == 0
    c = g.sites["learned"].controller
    assert (c.rate, c.ceiling) == (rate, ceiling) and "learned" not in g.learned
    assert c.concurrency == 1  # the learned concurrency, not the start's 2
    assert g.acquire("learned", 21.0) == POLL_SECONDS and g.sites["learned"].held_by_window
    g.release("learned", 21.0, 21.05)
    assert g.acquire("learned", 21.05) > 0.9 / rate - 0.05  # spaced at the learned rate, not the start's
    # the pause is over: now the paused site is compacted too; long idle, learned rates are dropped
    assert g.forget_idle(150.0, 300.0, lambda site: False) == 0
    assert {"paused", "learned", "queued"} <= set(g.learned) and set(g.sites) == {"failing"}
    assert g.forget_idle(400.0, 300.0, lambda site: False) == 3
    assert not g.learned and set(g.sites) == {"failing"} and not g.answered("paused")


def test_the_frontier_forgets_empty_sites_but_not_dropped_ones() -> None:
    g = gate(concurrency=1, circuit=CircuitConfig(failures=1, max_probes=1, cooloff_seconds=0.0))
    f = frontier(g)
    f.push("a", (0, 0, 0), "a0", 0.0)
    f.push("b", (0, 0, 0), "b0", 0.0)
    assert drain(f, 0.0) == ["a0", "b0"]
    assert f.holds("a") is False and f.forget_empty() == 2
    f.drop("dead", "dead_site")
    assert f.forget_empty() == 0 and f.holds("dead")
    assert not f.push("dead", (0, 0, 1), "late", 1.0)


def test_broken_connections_slow_a_site_but_never_cut_it_off() -> None:
    """A site that accepts connections and then breaks some of them (resets, cut bodies) is alive: the
    errors count as congestion for pacing, never towards the dead-site circuit."""
    from scrapy.exceptions import DownloadFailedError, ResponseDataLossError
    from twisted.internet.error import ConnectionLost, ConnectionRefusedError

    from imagecrawl.pacing.signals import classify_exception

    for exc in (ConnectionLost(), ResponseDataLossError(), DownloadFailedError()):
        assert classify_exception(exc) is Signal.BROKEN
    assert classify_exception(ConnectionRefusedError()) is Signal.CONNECTION
    g = gate(circuit=CircuitConfig(failures=2, cooloff_seconds=1.0, max_probes=1))
    t = 0.0
    for _ in range(6):
        assert g.acquire("flaky", t) == 0
        g.release("flaky", t, t + 0.1)
        g.feedback("flaky", Feedback(Signal.BROKEN, t, answer=False), t + 0.1)
        t += 0.2
    assert g.site("flaky").circuit.state is CircuitState.CLOSED
    for _ in range(2):  # two refused connections in a row do open it
        g.feedback("flaky", Feedback(Signal.CONNECTION, t, answer=False), t + 0.1)
    assert g.site("flaky").circuit.state is CircuitState.OPEN


def test_the_spill_file_keeps_in_memory_only_the_ids_of_sites_with_requests_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "spill.sqlite3"
    f: Frontier[str] = Frontier(
        lambda site, now: 0.0,
        lambda site, now: 0.0,
        FrontierConfig(memory_limit=0, keep_per_site=0),
        spill=lambda: SpillStore(path),
        encode=str.encode,
        decode=bytes.decode,
    )
    for i in range(3):
        for site in ("a", "b", "c"):
            f.push(site, (0, 0, i), f"{site}{i}", 0.0)
    store = f.spill_store()
    assert set(store.site_ids) == {"a", "b", "c"} and f.on_disk == 9
    got = [f.pop(1.0) for _ in range(3)]
    assert got == [("a", "a0"), ("b", "b0"), ("c", "c0")]  # each read back its whole batch
    assert not store.site_ids  # nothing of them on disk now
    f.push("a", (0, 0, 9), "a9", 1.0)  # back on disk under the same id
    assert set(store.site_ids) == {"a"} and f.on_disk == 1
    assert f.drop("b", "banned") == 2 and "b" not in store.site_ids
    store.set_meta("tick", 0)
    f.close(remove=False)
    again: Frontier[str] = Frontier(
        lambda site, now: 0.0,
        lambda site, now: 0.0,
        FrontierConfig(memory_limit=0, keep_per_site=0),
        spill=lambda: SpillStore(path),
        encode=str.encode,
        decode=bytes.decode,
    )
    assert again.load(2.0) == 1  # the queued rows of the file, whose ids were no longer in memory
    assert again.pop(2.0) == ("a", "a9")
    again.close(remove=True)
