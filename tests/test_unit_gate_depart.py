"""InProcessGate.depart: a request that leaves late (it waited for robots.txt) is counted in the cap window
at its real departure, never twice, and waits while the window holds the cap without it."""

from __future__ import annotations

import pytest

from imagecrawl.pacing import AimdConfig, InProcessGate
from imagecrawl.pacing.circuit import CircuitConfig


def capped_gate(cap: float = 3.0) -> InProcessGate:
    aimd = AimdConfig(start_rate=cap, max_rate=cap, min_rate=0.01, start_concurrency=8, max_concurrency=8)
    return InProcessGate(aimd=aimd, jitter=0.0, circuit=CircuitConfig())


def fill(g: InProcessGate, site: str, times: list[float]) -> None:
    for t in times:
        assert g.acquire(site, t) == 0.0, t


def test_a_late_departure_replaces_its_own_grant_in_the_window() -> None:
    g = capped_gate()
    fill(g, "a", [20.0, 20.34, 20.68])  # the cap: 3 in the window
    # (it leaves an interval, 1/3 s, after the last request that started since its grant)
    assert g.depart("a", 20.0, 20.9) == pytest.approx(20.68 + 1 / 3 - 20.9)
    assert g.depart("a", 20.0, 21.05) == 0.0  # its own grant does not count against it
    assert list(g.sites["a"].recent) == [20.34, 20.68, 21.05]  # counted once, at its real departure


def test_a_late_departure_waits_while_others_fill_the_window() -> None:
    g = capped_gate()
    window = 1.0 + g.window_guard
    fill(g, "a", [9.0])
    fill(g, "a", [10.0, 10.34, 10.68])  # 9.0 has left the window: three others hold the cap
    assert list(g.sites["a"].recent) == [10.0, 10.34, 10.68]
    assert g.depart("a", 9.0, 10.8) == pytest.approx(10.0 + window - 10.8)
    assert list(g.sites["a"].recent) == [10.0, 10.34, 10.68]  # not counted while it waits
    later = 10.0 + window + 0.001
    assert g.depart("a", 9.0, later) == 0.0
    assert list(g.sites["a"].recent) == [10.34, 10.68, later]


def test_a_departure_on_time_is_not_counted_again() -> None:
    g = capped_gate()
    fill(g, "a", [5.0])
    assert g.depart("a", 5.0, 5.001) == 0.0
    assert list(g.sites["a"].recent) == [5.0]


def test_a_wait_of_the_cap_window_is_never_zero_without_a_grant() -> None:
    """A grant leaves the window when t + window <= now: a time kept as still inside (t > now - window)
    whose end computes as exactly ``now`` was a wait of 0.0, which callers take as "go", with nothing
    counted, and every call at that instant went too (the simulated crawl sent 140 requests at once)."""
    g = capped_gate(cap=3.0)
    window = 1.0 + g.window_guard
    first = 2.9040787574867943  # with now = first + window: first > now - window, first + window - now == 0.0
    now = first + window
    assert first > now - window and first + window - now == 0.0
    fill(g, "a", [first, first + 0.34, first + 0.68])
    state = g.sites["a"]
    granted = state.granted
    for _ in range(5):
        if g.acquire("a", now) == 0.0:
            granted += 1
        assert state.granted == granted  # a 0 is a grant that was counted
    assert len([t for t in state.recent if t + window > now]) <= 3


def test_a_late_departure_of_a_crawl_delay_site_waits_for_others_not_for_itself() -> None:
    g = capped_gate(cap=10.0)
    g.set_floor_interval("a", 5.0)  # Crawl-delay: 5
    fill(g, "a", [100.0])
    # 50 ms late (a busy event loop): nothing went since its grant, so it goes now ...
    assert g.depart("a", 100.0, 100.05) == 0.0
    # ... and the next request keeps the Crawl-delay from its real departure
    assert g.peek_wait("a", 100.05) >= 5.0 - 1e-9
    # granted before the Crawl-delay was known, then its robots.txt and tdmrep.json went: a floor after them
    g2 = capped_gate(cap=10.0)
    fill(g2, "b", [200.0])
    g2.set_floor_interval("b", 5.0)
    assert g2.acquire("b", 200.3, policy=True) == 0.0
    assert g2.depart("b", 200.0, 200.5) == pytest.approx(200.3 + 5.0 * 1.01 - 200.5)


def test_a_crawl_delay_is_stretched_by_at_most_two_percent_the_controllers_interval_by_its_jitter() -> None:
    aimd = AimdConfig(start_rate=4.0, max_rate=4.0, min_rate=0.01, start_concurrency=1, max_concurrency=1)
    g = InProcessGate(aimd=aimd, jitter=0.1, circuit=CircuitConfig())
    spacings = []
    for site, floor in (("floor", 5.0), ("rate", 0.0)):
        g.set_floor_interval(site, floor)
        for k in range(200):
            t = 1000.0 * (k + 1)
            assert g.acquire(site, t) == 0.0
            spacings.append((site, g.sites[site].next_at - t))
            g.release(site, t, t)
    floors = [d for s, d in spacings if s == "floor"]
    rates = [d for s, d in spacings if s == "rate"]
    assert min(floors) >= 5.0 * 1.01 and max(floors) <= 5.0 * 1.03 + 1e-9
    assert min(rates) >= 0.25 * 1.01 and max(rates) <= 0.25 * 1.11 + 1e-9 and max(rates) > 0.25 * 1.05
