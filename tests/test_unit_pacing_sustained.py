"""What the controller does between the end of the start-up and the next congestion, with an injected
clock: the sustained rate (a lower bound of the site's capacity, however large its bucket's savings),
the bound it puts on growth once a site has pushed back, the settling climb from the start-up's guess;
and the gate's spacing of requests held by one Retry-After pause. The site is the sandbox's own token
bucket (tests/sandbox/misbehave.py) driven by the virtual clock."""

from __future__ import annotations

import itertools

import pytest

from imagecrawl.pacing import AimdConfig, AimdController, Feedback, InProcessGate, Signal
from imagecrawl.pacing.aimd import SETTLE_GROWTH, SUSTAINED_HEADROOM
from tests.pacing_sim import short_crawl
from tests.sandbox.config import MisbehaveConfig
from tests.sandbox.misbehave import Misbehaviour

CFG = AimdConfig(start_rate=2.0, max_rate=200.0, max_concurrency=16)


def _bucket(capacity: float, burst: float) -> Misbehaviour:
    return Misbehaviour(MisbehaveConfig(capacity=capacity, burst=burst))


def _send(c: AimdController, site: Misbehaviour, start: float, end: float, rate: float) -> tuple[float, int]:
    """Requests at ``rate`` from ``start`` to ``end``; the site's 200s go to the controller as answers.
    Returns the time after the last and how many were refused."""
    t, refused = start, 0
    while t < end:
        if site.admit("s", t) is None:
            c.on_success(now=t)
        else:
            refused += 1
        t += 1.0 / rate
    return t, refused


@pytest.mark.parametrize(("capacity", "burst"), [(12.0, 12.0), (12.0, 1.0), (5.0, 5.0), (20.0, 10.0)])
def test_the_sustained_rate_never_passes_the_capacity_whatever_the_bucket_saved(capacity: float, burst: float) -> None:
    """A bucket of up to a second of capacity: after a pause (the bucket full) a crawl at twice the
    capacity is served the whole burst at once; the sustained rate stays at or under C all along, and
    once the site has been kept busy for the whole window it is close to C."""
    c = AimdController(CFG, now=0.0)
    site = _bucket(capacity, burst)
    t = 0.0
    for rate, seconds in ((2 * capacity, 3.0), (1.5 * capacity, 4.0), (0.5 * capacity, 3.0), (3 * capacity, 10.0)):
        end = t + seconds
        while t < end:
            t, _ = _send(c, site, t, min(end, t + 0.25), rate)
            assert c.sustained(t) <= capacity + 1e-9, (t, rate)
    assert c.sustained(t) >= 0.85 * capacity  # ten seconds busy: within W / (W + 1) of C


def test_the_sustained_rate_is_zero_without_answers() -> None:
    c = AimdController(CFG, now=5.0)
    assert c.sustained(5.0) == 0.0
    assert c.sustained(9.0) == 0.0


def test_after_a_congestion_the_rate_never_grows_past_the_headroom_over_what_the_site_sustained() -> None:
    """The issue's site (C = 12, a bucket of C): the start-up met its first 429 after the burst, the cut
    went to what the last seconds served (the burst in it), and a Retry-After pause filled the bucket
    again. The climb that follows is served in full until the bucket is drained, and must not pass
    1.25 x what the site has shown it sustains - at most 1.25 C, so no second holds more than 1.25 C + 1."""
    capacity = 12.0
    c = AimdController(CFG, now=0.0)
    site = _bucket(capacity, capacity)
    t, refused = 0.0, 0
    while not refused:  # the start-up: the rate climbs until the bucket is drained
        c.rate_limited = True
        t, refused = _send(c, site, t, t + 0.1, c.rate)
    assert c.ceiling is None and c.rate > capacity
    c.on_congestion("429", sent_at=t - 0.05, now=t)
    assert c.settling
    t += 2.0  # a Retry-After pause: the bucket saves up its whole burst
    c.note_pause(t - 2.0, t)
    peak = 0.0
    for _ in range(20):
        rate = c.rate
        c.rate_limited = True
        t, refused = _send(c, site, t, t + 1.0, rate)
        peak = max(peak, c.rate)
        assert c.rate <= max(rate, SUSTAINED_HEADROOM * c.best_sustained) + 1e-9
        if refused:
            break
    assert peak <= SUSTAINED_HEADROOM * capacity + 1e-9


def test_settling_grows_a_used_rate_by_its_factor_within_the_sustained_bound() -> None:
    """A bucket of one token ends the start-up like a large bucket of a lower capacity: the cut from
    what the last 2 s served is a guess, often far under the capacity. Until the next congestion a
    used rate grows by SETTLE_GROWTH per step, as far as the sustained bound lets it."""
    c = AimdController(CFG, now=0.0)
    site = _bucket(12.0, 1.0)
    t = 0.0
    for rate in (2.0, 3.0, 4.5, 6.75, 10.0):  # the start-up's half steps
        c.rate = rate
        t, _ = _send(c, site, t, t + 0.5, rate)
    c.rate = 15.0
    c.on_congestion("429", sent_at=t - 0.01, now=t)
    assert c.settling and c.rate < 0.7 * 12.0  # the guess: well under C
    rates = [c.rate]
    for _ in range(12):
        before = c.rate
        c.rate_limited = True
        t, refused = _send(c, site, t, t + 1.0, before)
        assert refused == 0
        assert c.rate <= before * SETTLE_GROWTH**2 + 1e-9
        assert c.rate <= max(before, SUSTAINED_HEADROOM * c.best_sustained) + 1e-9
        rates.append(c.rate)
    assert all(b >= a for a, b in itertools.pairwise(rates))
    assert rates[-1] >= 1.4 * rates[0]  # it climbs, not creeps by 1 % of a wrong ceiling
    c.on_congestion("429", sent_at=t, now=t + 0.01)
    assert not c.settling  # the next congestion measured the site


def test_requests_held_by_one_pause_leave_spaced_not_back_to_back() -> None:
    """Requests granted just before a Retry-After came back are held until the pause ends; they leave
    one interval apart (a bucket of one token answers 429 to all but the first of a pair)."""
    config = AimdConfig(start_rate=10.0, max_rate=200.0, start_concurrency=8, max_concurrency=8)
    gate = InProcessGate(aimd=config, jitter=0.0)
    granted: list[float] = []
    now = 0.0
    while len(granted) < 4 and now < 10:
        wait = gate.acquire("s", now)
        if wait == 0:
            granted.append(now)
        else:
            now += wait
    gate.feedback("s", Feedback(Signal.THROTTLED, sent_at=0.0, retry_after=2.0), now)
    pause_end = now + 2.0
    interval = gate.sites["s"].controller.interval
    departed = []
    clock = now + 0.05
    pending = list(granted[1:])  # the first one left at once; the others were held by the pause
    while pending and clock < pause_end + 10:
        for g in list(pending):
            if gate.depart("s", g, clock) == 0:
                departed.append(clock)
                pending.remove(g)
        clock += 0.001
    assert not pending
    assert departed[0] >= pause_end
    gaps = [b - a for a, b in itertools.pairwise(departed)]
    assert gaps and min(gaps) >= interval - 0.0015


def test_one_token_buckets_are_crawled_faster_than_the_start_ups_guess() -> None:
    """Sites with a bucket of one token and no Retry-After: the climb after the start-up reaches them
    (the creep of 1 % of a ceiling of what the ramp served left them near 0.5 C), and stays polite."""
    for capacity, latency in ((7.0, 0.03), (12.0, 0.3), (20.0, 0.1)):
        out = short_crawl(capacity, 1.0, 2.0, 0.0, 1000, latency=latency, seed=1)
        assert out.goodput >= 0.6, (capacity, out)
        assert out.share_429 <= 0.02 and out.peak_after_5s <= 1.25 * capacity + 1, (capacity, out)


def test_a_429_before_any_answer_to_go_by_is_followed_by_the_settling_climb_too() -> None:
    """A first request that arrives on the heels of the robots.txt fetch at a bucket of one token is
    refused at once: the start-up ends at its start rate with nothing served to measure. The rate
    climbs from there (it crept by 1 % of that start rate per second before: a site of 12/s crawled at
    3/s), within the sustained bound."""
    c = AimdController(CFG, now=0.0)
    site = _bucket(12.0, 1.0)
    assert site.admit("s", 0.0) is None  # robots.txt
    c.on_congestion("429", sent_at=0.001, now=0.005)  # the first page, 1 ms after it
    assert site.admit("s", 0.001) is not None  # (the site did refuse it)
    assert c.settling and c.rate < CFG.start_rate
    t = 0.5
    for _ in range(20):
        before = c.rate
        c.rate_limited = True
        t, refused = _send(c, site, t, t + 1.0, before)
        assert refused == 0 and c.rate <= max(before, SUSTAINED_HEADROOM * c.best_sustained) + 1e-9
    assert c.rate >= 1.5 * CFG.start_rate  # (the creep: about 1.15 x)
