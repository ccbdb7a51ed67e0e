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
