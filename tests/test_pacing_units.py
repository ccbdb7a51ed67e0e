"""The pure pacing logic (no crawler, no server): Retry-After parsing, the AIMD controller, the gate,
the ban state machine, configs read from settings, response classification, the sandbox's bucket."""

from __future__ import annotations

import email.utils
import itertools
import math
import random

import pytest
from scrapy.settings import Settings

from imagecrawl.distributed.ratelimit import RateConfig
from imagecrawl.guard.downloadermiddlewares.netguard import NetGuardConfig
from imagecrawl.optout.budget import PolicyFileConfig
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.pacing import (
    AimdConfig,
    AimdController,
    BanConfig,
    BanState,
    BanTracker,
    Feedback,
    InProcessGate,
    Signal,
    Verdict,
    parse_retry_after,
    site_of_host,
)
from imagecrawl.pacing.aimd import STARTUP_MAX_STEPS, Adjustment
from imagecrawl.pacing.circuit import CircuitConfig
from imagecrawl.pacing.config import PacingConfig, RetryConfig, ban_config_from_settings, circuit_config_from_settings
from imagecrawl.pacing.downloadermiddlewares.bans import BansConfig, classify_response
from imagecrawl.pacing.frontier import FrontierConfig
from imagecrawl.pacing.signals import classify_exception, classify_status
from imagecrawl.report.extensions.monitor import MonitorConfig
from imagecrawl.report.extensions.progress import ProgressConfig
from imagecrawl.report.extensions.report import ReportConfig
from imagecrawl.storage.stores import S3Config
from imagecrawl.tuning import tuning
from tests.crawlers import project_settings
from tests.sandbox.misbehave import (
    MisbehaveConfig,
    Misbehaviour,
    max_rate_per_second,
    overloaded_seconds,
    requests_inside_windows,
)

# --- Retry-After ----------------------------------------------------------------------------------


def test_retry_after_seconds_date_past_garbage_and_cap() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now, 3600).seconds == 120  # type: ignore[union-attr]
    assert parse_retry_after(b" 2 ", now, 3600).seconds == 2  # type: ignore[union-attr]
    date = email.utils.formatdate(now + 30, usegmt=True)
    got = parse_retry_after(date, now, 3600)
    assert got is not None and abs(got.seconds - 30) < 1.01 and not got.capped
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now, 3600).seconds == 0  # type: ignore[union-attr]
    assert parse_retry_after("-5", now, 3600).seconds == 0  # type: ignore[union-attr]
    assert parse_retry_after("soon", now, 3600) is None
    assert parse_retry_after("", now, 3600) is None
    assert parse_retry_after(None, now, 3600) is None
    capped = parse_retry_after("99999999", now, 3600)
    assert capped is not None and capped.capped and capped.seconds == 3600
    assert parse_retry_after("inf", now, 3600).capped  # type: ignore[union-attr]


# --- site keys ------------------------------------------------------------------------------------


def test_site_key_host_or_registered_domain() -> None:
    assert site_of_host("IMG.Example.co.uk", "host") == "img.example.co.uk"
    assert site_of_host("img.example.co.uk", "domain") == "example.co.uk"
    assert site_of_host("a.b.example.com", "domain") == "example.com"
    assert site_of_host("127.0.0.1", "domain") == "127.0.0.1"
    assert site_of_host("localhost", "domain") == "localhost"


# --- AIMD -----------------------------------------------------------------------------------------

CFG = AimdConfig(start_rate=1.0, max_rate=100.0, max_concurrency=8, step_seconds=1.0)


def _answer_at_rate(c: AimdController, start: float, end: float) -> Adjustment | None:
    """Healthy answers arriving at the controller's current rate from ``start`` to ``end`` (the rate
    held requests back all along); the last adjustment made."""
    last = None
    t = start
    while t < end:
        c.rate_limited = True
        adj = c.on_success(now=t)
        last = adj or last
        t += 1.0 / c.rate
    return last


def test_startup_grows_only_when_the_rate_binds_and_is_capped() -> None:
    c = AimdController(CFG, now=0.0)
    assert c.on_success(now=1.5) is None  # the rate never held anything back
    adj = _answer_at_rate(c, 1.6, 2.7)
    # the answer at 2.6 s comes two half steps after the last change: it grows by both (no more)
    assert adj is not None and adj.kind == "increase" and c.rate == pytest.approx(CFG.startup_factor**2)
    _answer_at_rate(c, 2.7, 60.0)
    assert c.rate == 100.0


def test_the_rate_grows_no_faster_than_the_site_answers() -> None:
    """A rate the crawl does not use (something else holds the requests back) is not a rate the site
    has shown it can take: it grows to at most the start-up factor times what was answered."""
    c = AimdController(CFG, now=0.0)
    c.rate = 50.0
    for t in range(1, 30):  # the rate says "binding", but only 2 answers a second come back
        c.rate_limited = True
        c.on_success(now=float(t))
        c.on_success(now=t + 0.5)
    assert c.rate == pytest.approx(50.0)
    slow = AimdController(CFG, now=0.0)
    for t in range(1, 30):
        slow.rate_limited = True
        slow.on_success(now=float(t))
    # the first answer, a second (two half steps) after the start, grows a used rate by both; then the
    # rate is no longer used (1 answer/s), and it stays
    assert slow.rate <= CFG.startup_factor**STARTUP_MAX_STEPS * 1.0 + 1e-9


def test_startup_concurrency_grows_by_the_startup_factor_then_by_one() -> None:
    c = AimdController(CFG, now=0.0)
    seen = [c.concurrency]
    for t in range(1, 6):
        c.concurrency_limited = True
        c.on_success(now=float(t))
        seen.append(c.concurrency)
    assert seen == [1, 2, 3, 5, 8, 8]  # ceil(c * 1.5), at least +1, capped at max_concurrency 8
    c.on_congestion("429", sent_at=6.0, now=6.0)
    assert c.concurrency == 5
    c.concurrency_limited = True
    c.on_success(now=7.5)
    assert c.concurrency == 6  # after congestion: one at a time


def test_congestion_cuts_once_per_epoch_and_recovers_toward_the_ceiling() -> None:
    c = AimdController(CFG, now=0.0)
    c.rate = c.ceiling = 20.0  # past the start-up: the site served 20/s for ten seconds
    for k in range(200):
        c.on_success(now=k / 20)
    c.concurrency = 4
    adj = c.on_congestion("429", sent_at=9.0, now=10.0)
    assert adj is not None and c.rate == pytest.approx(14.0) and c.concurrency == 2
    assert c.ceiling == 20.0
    # answers to requests sent before the cut are old news
    assert c.on_congestion("429", sent_at=9.5, now=10.2) is None
    assert c.rate == pytest.approx(14.0)
    rates = []
    for t in range(11, 40):
        _answer_at_rate(c, t - 0.999, float(t))
        c.rate_limited = True
        c.on_success(now=float(t))
        rates.append(c.rate)
    assert rates[0] > 14.0
    assert rates[5] >= 0.9 * 20 - 1e-9  # fast recovery to 90% of the ceiling
    # then a slow creep: at most 1% of the ceiling per step while below it
    steps = [b - a for a, b in itertools.pairwise(rates[6:]) if a < 20.0]
    assert steps and max(steps) <= 0.2 + 1e-9


def test_latency_spike_is_congestion_and_flat_latency_is_not() -> None:
    g = InProcessGate(aimd=AimdConfig(start_rate=10, max_rate=10, max_concurrency=4))
    for i in range(20):
        g.feedback("s", Feedback(Signal.OK, sent_at=i, latency=0.05), now=i + 0.05)
    assert not g.drain_events() or all("decrease" not in e.kind for e in g.drain_events())
    for i in range(20, 30):
        g.feedback("s", Feedback(Signal.OK, sent_at=i, latency=1.5), now=i + 1.5)
    kinds = [e.kind for e in g.drain_events()]
    assert "pacing/decrease/latency" in kinds


def test_floor_interval_caps_the_rate() -> None:
    c = AimdController(CFG, now=0.0, floor_interval=0.0)
    c.rate = 50
    c.set_floor_interval(2.0)  # Crawl-delay: 2
    assert c.max_rate == pytest.approx(0.5) and c.interval == pytest.approx(2.0)


# --- the gate -------------------------------------------------------------------------------------


def test_the_cap_window_holds_for_high_caps_and_does_not_cap_them_lower() -> None:
    """A cap of 1000 req/s: never more than 1000 starts within any 1 s (+ guard), and not fewer either
    (the window is kept by time, not as a fixed number of grants)."""
    g = InProcessGate(aimd=AimdConfig(start_rate=1000, max_rate=1000, max_concurrency=64), jitter=0.0)
    times = _grants(g, "s", 0.0, 3.0, dt=0.0001)
    window = 1.0 + g.window_guard
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        assert i - j + 1 <= 1000
    assert len(times) >= 2500
    assert len(g.sites["s"].recent) <= 1000


def test_revoke_undoes_the_last_grant() -> None:
    g = InProcessGate(aimd=AimdConfig(start_rate=2, max_rate=2, start_concurrency=2, max_concurrency=2), jitter=0.0)
    assert g.acquire("s", 10.0) == 0.0
    s = g.sites["s"]
    before = (s.in_flight, s.granted, list(s.recent), s.next_at)
    assert g.acquire("s", 10.6) == 0.0
    g.revoke("s")
    assert (s.in_flight, s.granted, list(s.recent), s.next_at) == before
    assert g.acquire("s", 10.6) == 0.0  # the slot is there again


def test_a_grant_may_come_a_little_early_but_the_rate_holds() -> None:
    """Woken up to the grant tolerance early, a request goes (no second timer); over time the
    spacing still holds the rate."""
    # the cap (1000) is far: the spacing of the rate (100/s) is what holds
    g = InProcessGate(aimd=AimdConfig(start_rate=100, max_rate=1000, max_concurrency=8), jitter=0.0)
    assert g.acquire("s", 0.0) == 0.0
    g.release("s", 0.0, 0.0)
    assert g.acquire("s", 0.0101 - 0.002) == 0.0  # 2 ms early: within min(5 ms, interval / 4)
    g.release("s", 0.0, 0.0)
    assert g.acquire("s", 0.0101 + 0.001) > 0  # 9 ms early: not
    times = _grants(g, "s", 1.0, 11.0, dt=0.0007)
    assert 100 * 10 / 1.011 - 5 <= len(times) <= 100 * 10 / 1.01 + 5


def _grants(gate: InProcessGate, site: str, start: float, end: float, dt: float = 0.001) -> list[float]:
    out = []
    t = start
    while t < end:
        if gate.acquire(site, t) == 0:
            out.append(t)
            gate.release(site, t, t)
        t += dt
    return out


def test_gate_never_exceeds_the_rate_cap() -> None:
    gate = InProcessGate(aimd=AimdConfig(start_rate=5, max_rate=5, max_concurrency=4), rng=random.Random(1))
    grants = _grants(gate, "a", 0, 10)
    assert 40 <= len(grants) <= 50
    assert max_rate_per_second(grants) <= 5


def test_gate_concurrency_and_independent_sites() -> None:
    gate = InProcessGate(aimd=AimdConfig(start_rate=100, max_rate=100, start_concurrency=2, max_concurrency=2))
    assert gate.acquire("a", 0.0) == 0
    assert gate.acquire("a", 0.5) == 0
    assert gate.acquire("a", 1.0) > 0  # two in flight
    assert gate.acquire("b", 1.0) == 0  # another site is not held up
    gate.release("a", 0.0, 1.1)
    assert gate.acquire("a", 1.2) == 0


def test_retry_after_closes_the_gate_until_it_expires() -> None:
    gate = InProcessGate(aimd=AimdConfig(start_rate=100, max_rate=100, max_concurrency=4))
    assert gate.acquire("a", 0.0) == 0
    gate.release("a", 0.0, 0.1)
    gate.feedback("a", Feedback(Signal.THROTTLED, sent_at=0.0, latency=0.1, retry_after=3.0), now=0.1)
    assert gate.acquire("a", 0.2) == pytest.approx(2.9)
    assert gate.peek_wait("a", 1.0) == pytest.approx(2.1)
    assert _grants(gate, "a", 0.2, 3.09) == []
    assert gate.acquire("a", 3.11) == 0
    assert any(e.kind == "pacing/retry_after" for e in gate.drain_events())


# --- bans -----------------------------------------------------------------------------------------

BANS = BanConfig(burst=3, burst_429=6, soft_threshold=2, cooldown_seconds=10, max_cooldown_seconds=25, max_probes=3)


def test_burst_bans_cooldown_doubles_probe_then_abandon() -> None:
    b = BanTracker(BANS)
    assert b.on_verdict(Verdict.STATUS_403, 0, 1).new is BanState.SUSPECT  # type: ignore[union-attr]
    b.on_verdict(Verdict.STATUS_403, 0, 1)
    t = b.on_verdict(Verdict.STATUS_401, 0, 1)
    assert t is not None and t.new is BanState.BANNED and t.until == 11
    assert b.gate(5)[0] == pytest.approx(6)
    assert b.on_verdict(Verdict.STATUS_403, 0.5, 6) is None  # stale: sent before the ban
    wait, t = b.gate(11)
    assert wait == 0 and t is not None and t.new is BanState.PROBING
    assert b.granted() is True
    assert b.gate(11.1)[0] > 0  # one probe at a time
    t = b.on_verdict(Verdict.STATUS_403, 11, 12)
    assert t is not None and t.new is BanState.BANNED and t.until == 12 + 20  # doubled
    b.gate(32)
    b.granted()
    t = b.on_verdict(Verdict.CHALLENGE, 32, 33)
    assert t is not None and t.until == 33 + 25  # capped
    b.gate(58)
    b.granted()
    t = b.on_verdict(Verdict.ERROR, 58, 59)
    assert t is not None and t.new is BanState.ABANDONED
    assert math.isinf(b.gate(1000)[0])


def test_healthy_probe_resumes_and_healthy_answer_clears_suspicion() -> None:
    b = BanTracker(BANS)
    b.on_verdict(Verdict.SOFT, 0, 1)
    assert b.state is BanState.SUSPECT
    b.on_verdict(Verdict.HEALTHY, 0, 1)
    assert b.state is BanState.HEALTHY
    assert b.on_verdict(Verdict.CHALLENGE, 1, 2).new is BanState.BANNED  # type: ignore[union-attr]
    b.gate(12)
    b.granted()
    assert b.on_verdict(Verdict.NEUTRAL, 12, 12.5) is None  # a 404 says nothing
    t = b.on_verdict(Verdict.HEALTHY, 12, 13)
    assert t is not None and t.new is BanState.HEALTHY and b.bans == 0


def test_gate_with_bans_lets_only_probes_through_and_resumes_slowly() -> None:
    gate = InProcessGate(aimd=AimdConfig(start_rate=50, max_rate=50, max_concurrency=4), bans=BANS)
    gate.site("s").controller.rate = 40
    gate.verdict("s", Verdict.CHALLENGE, 0, 1)
    assert gate.state_of("s") is BanState.BANNED
    assert _grants(gate, "s", 1, 10.99) == []
    assert gate.acquire("s", 11.0) == 0  # the probe
    assert gate.acquire("s", 11.5) > 0
    gate.release("s", 11.0, 11.6)
    gate.verdict("s", Verdict.HEALTHY, 11.0, 11.6)
    assert gate.state_of("s") is BanState.HEALTHY
    assert gate.site("s").controller.rate < 40 * 0.7
    kinds = [e.kind for e in gate.drain_events()]
    assert kinds.count("bans/banned") == 1 and "bans/probes" in kinds and "bans/recovered" in kinds
    assert not gate.all_abandoned()


# --- configs and classification -------------------------------------------------------------------


def test_configs_from_settings() -> None:
    s = Settings(
        project_settings(
            **{
                "IMAGECRAWL_MAX_RATE_PER_SITE": "7.5",
                "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "3",
                "CONCURRENT_REQUESTS_PER_DOMAIN": "4",
                "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "100",
                "IMAGECRAWL_PACING_SITE_KEY": "domain",
                "DOWNLOAD_DELAY": "0.25",
                "RETRY_TIMES": "5",
                "RETRY_HTTP_CODES": "429,503",
                "IMAGECRAWL_BAN_HEALTHY_MARKERS": '{"example.com": "class=\\"card\\""}',
                "IMAGECRAWL_TUNING": {"ban_cooldown_seconds": "2", "ban_max_probes": "4"},
            }
        )
    )
    p = PacingConfig.from_settings(s)
    assert p.aimd.max_rate == 7.5 and p.aimd.max_concurrency == 3
    assert p.aimd.start_rate == 7.5  # never above the cap
    assert p.site_key == "domain" and p.floor_interval == 0.25
    b = ban_config_from_settings(s)
    assert b.cooldown_seconds == 2 and b.max_probes == 4 and b.cooldown(3) == 8
    r = RetryConfig.from_settings(s)
    assert r.times == 5 and r.http_codes == {429, 503}
    assert all(0.5 <= r.backoff(1, random.Random(i)) / r.backoff_seconds <= 1 for i in range(20))
    assert r.backoff(20, random.Random(0)) <= r.max_backoff_seconds
    bc = BansConfig.from_settings(s)
    assert bc.healthy_markers["example.com"].search('<a class="card">')
    with pytest.raises(ValueError):
        PacingConfig.from_settings(Settings(project_settings(IMAGECRAWL_PACING_SITE_KEY="ip")))


def test_classify() -> None:
    assert classify_status(429) is Signal.THROTTLED and classify_status(503) is Signal.UNAVAILABLE
    assert classify_status(504) is Signal.GATEWAY and classify_status(404) is Signal.NEUTRAL
    assert classify_status(200) is Signal.OK
    from scrapy.exceptions import DownloadTimeoutError
    from twisted.internet.error import ConnectionRefusedError

    assert classify_exception(DownloadTimeoutError()) is Signal.TIMEOUT
    assert classify_exception(ConnectionRefusedError()) is Signal.CONNECTION
    assert classify_exception(ValueError()) is Signal.NEUTRAL
    markers = BansConfig.from_settings(Settings(project_settings())).challenge_markers
    assert "_cf_chl_opt" in markers
    assert classify_response(403, {"cf-mitigated": "challenge"}, None, markers, None) is Verdict.CHALLENGE
    page = "<html><head><title>Just a moment...</title></head></html>"
    assert classify_response(200, {}, page, markers, None) is Verdict.CHALLENGE
    assert classify_response(403, {}, "nope", markers, None) is Verdict.STATUS_403
    import re

    card = re.compile('class="card"')
    assert classify_response(200, {}, "<div class=grid></div>", markers, card) is Verdict.SOFT
    assert classify_response(200, {}, '<a class="card">', markers, card) is Verdict.HEALTHY
    assert classify_response(200, {}, None, markers, card) is Verdict.HEALTHY  # binary: not checked
    assert classify_response(404, {}, "", markers, None) is Verdict.NEUTRAL


# --- the sandbox's side ---------------------------------------------------------------------------


def test_sandbox_bucket_retry_after_and_ban() -> None:
    m = Misbehaviour(MisbehaveConfig(capacity=5, burst=5, retry_after=2))
    answers = [m.admit("a", 0.0) for _ in range(6)]
    assert [a is None for a in answers] == [True] * 5 + [False]
    assert answers[5] is not None and answers[5].status == 429 and answers[5].headers["Retry-After"] == "2"
    assert m.admit("a", 1.0) is not None  # inside the announced window
    assert m.admit("b", 1.0) is None  # another site has its own bucket
    assert m.admit("a", 2.1) is None
    banned = Misbehaviour(MisbehaveConfig(ban_mode="challenge", ban_rate=2, ban_seconds=5))
    assert [banned.admit("a", t) is None for t in (0.0, 0.1, 0.2, 0.3)] == [True, True, False, False]
    ans = banned.admit("a", 4.0)
    assert ans is not None and ans.headers["cf-mitigated"] == "challenge"
    assert banned.admit("a", 5.3) is None


def test_log_measures() -> None:
    assert max_rate_per_second([0, 0.25, 0.5, 0.75, 1.0, 1.25]) == 4
    assert max_rate_per_second([0, 0.1, 0.2]) == 3
    records: list[dict[str, object]] = [
        {"t": 0.0, "dur": 0.0, "status": 200},
        {"t": 1.0, "dur": 0.01, "status": 429},
        {"t": 1.5, "dur": 0.0, "status": 429},
        {"t": 3.2, "dur": 0.0, "status": 200},
    ]
    assert requests_inside_windows(records, 2.0) == 1
    assert overloaded_seconds(records) == 1


def test_ceiling_is_what_the_site_served_not_the_rate_a_burst_let_through() -> None:
    c = AimdController(CFG, now=0.0)
    c.ceiling = 25.0  # past start-up
    c.rate = 30.0
    for k in range(200):  # the site served 20/s over the last 10 s
        c.on_success(now=k / 20)
    c.note_pause(10.0, 11.0)  # a Retry-After pause is not missing capacity
    for k in range(20):
        c.on_success(now=11 + k / 20)
    c.on_congestion("429", sent_at=11.9, now=12.0)
    assert c.ceiling is not None and 19 <= c.ceiling <= 21
    # the site served clearly less than was sent: that is its capacity, and the rate goes just under it
    from imagecrawl.pacing.aimd import SERVED_MARGIN

    assert c.rate == pytest.approx(SERVED_MARGIN * c.ceiling)


def test_crawl_delay_floor_is_sequential_and_counts_from_the_end_of_a_request() -> None:
    gate = InProcessGate(aimd=AimdConfig(start_rate=50, max_rate=50, start_concurrency=4, max_concurrency=4))
    gate.set_floor_interval("s", 2.0)
    assert gate.acquire("s", 0.0) == 0
    assert gate.acquire("s", 2.5) > 0  # one at a time
    gate.release("s", 0.0, 3.0)  # the answer came late
    assert gate.acquire("s", 4.0) == pytest.approx(1.0)  # 2 s after the end, not after the start
    assert gate.acquire("s", 5.0) == 0


def test_a_stale_latency_does_not_hold_growth_back_forever() -> None:
    """Samples taken while the crawler's own loop lagged are withheld; the last slow smoothed latency
    from before must not freeze the rate and concurrency for the rest of the crawl."""
    c = AimdController(CFG, now=0.0)
    for k in range(10):
        c.observe_latency(0.05, now=k * 0.1)
    for k in range(10):
        c.observe_latency(2.0, now=1.0 + k * 0.1)
    assert not c.latency_flat(now=2.5)
    c.concurrency_limited = True
    assert c.on_success(now=2.5) is None  # fresh and slow: no growth
    c.concurrency_limited = True
    adj = c.on_success(now=2.0 + 5 * CFG.step_seconds + 0.1)  # no sample since: stale
    assert adj is not None and adj.kind == "increase"


def test_the_first_answer_measures_use_from_its_own_request_not_the_sites_first_contact() -> None:
    """robots.txt and tdmrep.json took the site's first second at a start rate of 2/s: the first image,
    sent at 1.0 s and answered at 1.3 s, used that rate; measured from the first contact it looked
    unused, and the start-up stayed at 2/s for another second."""
    cfg = AimdConfig(start_rate=2.0, max_rate=200.0, max_concurrency=16, step_seconds=1.0)
    c = AimdController(cfg, now=0.0)
    c.rate_limited = True
    adj = c.on_success(now=1.3, sent_at=1.0)
    assert adj is not None and adj.kind == "increase" and c.rate > 2.0
    # without the send time (as before): one answer over 1.3 s is not a used 2/s
    d = AimdController(cfg, now=0.0)
    d.rate_limited = True
    assert d.on_success(now=1.3) is None and d.rate == 2.0


def test_the_baseline_is_the_least_latency_measured_not_one_a_lag_correction_made_up() -> None:
    """A sample from which the crawler's recent loop lag (90 ms) was taken out, though the answer never
    waited for it, says 10 ms for a 100 ms site: as the baseline it made every later, true sample "not
    flat", and the rate never grew again. The baseline comes from the latency as measured."""
    c = AimdController(CFG, now=0.0)
    c.observe_latency(0.01, now=0.1, measured=0.1)
    assert c.baseline == pytest.approx(0.1)
    for k in range(10):
        c.observe_latency(0.1, now=0.2 + k * 0.1, measured=0.1)
    assert c.latency_flat(now=1.2)
    c.rate_limited = True
    c._step_answers = 5  # the rate was used
    adj = c.on_success(now=1.2)
    assert adj is not None and adj.kind == "increase"
    # the corrected sample as the baseline: never flat
    d = AimdController(CFG, now=0.0)
    d.observe_latency(0.01, now=0.1)
    for k in range(10):
        d.observe_latency(0.1, now=0.2 + k * 0.1)
    assert not d.latency_flat(now=1.2)
    # a site that really slows down is still seen: corrected samples well above the measured baseline
    for k in range(20):
        c.observe_latency(0.6, now=2.0 + k * 0.1, measured=0.62)
    assert c.latency_spiking()


def test_probing_past_the_ceiling_stops_at_the_probe_cap_until_the_site_has_shown_it_takes_it() -> None:
    from imagecrawl.pacing.aimd import PROBE_CAP, PROBE_HOLD_STEPS

    c = AimdController(CFG, now=0.0)
    c.rate = 20.0
    c.ceiling = 25.0  # past the start-up (whose end is followed by a climb of its own: settling)
    c.on_congestion("429", sent_at=0.0, now=0.0)  # no goodput history: the ceiling is the rate
    assert c.ceiling == 20.0
    rates = []
    t = 1.0
    while c.ceiling == 20.0 and t < 100:
        _answer_at_rate(c, t - 0.999, t)
        rates.append(c.rate)
        t += 1.0
    cap = 20.0 * PROBE_CAP
    assert max(rates) <= cap + 1e-9
    assert rates.count(cap) >= PROBE_HOLD_STEPS - 2  # held at the cap ...
    assert c.ceiling == pytest.approx(cap)  # ... then the site has shown it takes it
    _answer_at_rate(c, t, t + 3.0)
    assert c.rate > cap  # and probing goes on from there


def test_a_second_cut_soon_after_start_up_measures_the_last_seconds_not_the_ramp() -> None:
    """Without Retry-After the 429s keep coming for a moment after the first cut: the second cut must
    not average the slow start-up seconds into the ceiling (that pinned the rate near C/2)."""
    c = AimdController(AimdConfig(start_rate=1.0, max_rate=100.0, max_concurrency=8), now=0.0)
    t = 0.0
    while c.rate < 20:  # slow start to 20/s with the answers it gets
        _answer_at_rate(c, t, t + 1.0)
        t += 1.0
    for k in range(40):  # two seconds served at 20/s
        c.on_success(now=t + k * 0.05)
    t += 2.0
    c.on_congestion("429", sent_at=t - 0.1, now=t)
    first = c.ceiling
    for k in range(28):  # the site serves 14/s right after the cut
        c.on_success(now=t + k / 14)
    c.on_congestion("429", sent_at=t + 0.5, now=t + 2.0)
    assert first is not None and c.ceiling is not None
    assert c.ceiling >= 12.0  # what the last seconds served, not the ~8/s average since the start


# --- short crawls on sites the controller has not seen (virtual time: tests/pacing_sim.py) --------------


@pytest.mark.parametrize(
    ("capacity", "burst", "retry_after", "share", "n", "latency"),
    [
        (12, 12, 2.0, 0.5, 300, 0.03),  # a few hundred images, Retry-After on half the 429s
        (6, 6, 1.0, 0.5, 200, 0.3),  # a slow site
        (9, 4, 1.0, 1.0, 300, 0.1),  # a small bucket
    ],
)
def test_a_short_crawl_reaches_the_sites_pace_soon_and_stays_polite(
    capacity: float, burst: float, retry_after: float, share: float, n: int, latency: float
) -> None:
    from tests.pacing_sim import short_crawl

    runs = [short_crawl(capacity, burst, retry_after, share, n, latency=latency, seed=s) for s in range(3)]
    assert sorted(r.goodput for r in runs)[1] >= 0.8, runs
    for r in runs:
        assert r.share_429 <= 0.02 and r.inside_retry_after == 0, r
        assert r.peak_after_5s <= 1.25 * capacity + 1, r


def test_start_up_grows_by_the_full_factor_each_half_step_while_the_rate_is_used() -> None:
    c = AimdController(CFG, now=0.0)
    _answer_at_rate(c, 0.01, 3.0)
    # answers a little under the rate (spacing jitter, latency) still count as using it
    assert c.rate >= CFG.start_rate * CFG.startup_factor**3 - 1e-9


def test_a_cut_takes_the_answers_since_the_last_cut_not_the_savings_a_pause_let_through() -> None:
    """A site that saved up during a Retry-After pause serves more than its capacity while the rate
    climbs past it, until the savings are spent; the ceiling counts the answers since the last cut over
    the time since (a second of each pause counted), so it lands at the capacity, not at that pace."""
    from imagecrawl.pacing.aimd import SERVED_MARGIN

    c = AimdController(CFG, now=0.0)
    c.rate = c.ceiling = 16.0 / CFG.decrease_factor
    c.on_congestion("429", sent_at=0.0, now=0.0)  # the last cut: 16/s, with a 2 s pause
    assert c.rate == pytest.approx(16.0)
    c.note_pause(0.0, 2.0)
    t = 2.0
    while t < 4.5:  # the site's own 12/s ...
        c.on_success(now=t)
        t += 1 / 12
    while t < 8.5:  # ... then 15/s while the 12 it saved are spent
        c.on_success(now=t)
        t += 1 / 15
    c.on_congestion("429", sent_at=t, now=t)
    assert c.ceiling is not None and 11.0 <= c.ceiling <= 13.0  # not the 15/s of the last two seconds
    assert c.rate == pytest.approx(SERVED_MARGIN * c.ceiling)


def test_the_configs_field_defaults_are_the_settings_defaults() -> None:
    """The typed configs take their field defaults from imagecrawl/defaults.py and imagecrawl/tuning.py: a
    config built from the project's settings equals one built with no arguments (nothing restated)."""
    s = Settings(project_settings())
    assert ban_config_from_settings(s) == BanConfig()
    assert circuit_config_from_settings(s) == CircuitConfig()
    retry = RetryConfig.from_settings(s)  # RETRY_ENABLED, RETRY_HTTP_CODES, RETRY_PRIORITY_ADJUST: Scrapy's defaults
    assert retry == RetryConfig(enabled=True, http_codes=retry.http_codes, priority_adjust=retry.priority_adjust)
    assert 429 in retry.http_codes and retry.priority_adjust == -1
    assert PacingConfig.from_settings(s) == PacingConfig()  # the AIMD controller's parameters included
    assert PacingConfig().aimd.start_rate == s.getfloat("IMAGECRAWL_MAX_RATE_PER_SITE") / 4
    for config in (
        MonitorConfig,
        ProgressConfig,
        ReportConfig,
        NetGuardConfig,
        PolicyFileConfig,
        RateConfig,
        BansConfig,
        FrontierConfig,
    ):
        built = config.from_settings(s) if hasattr(config, "from_settings") else None
        if built is not None:
            assert built == config(), config.__name__
    assert FrontierConfig().memory_limit == tuning(s).frontier_memory_requests
    assert S3Config().max_attempts == tuning(s).s3_max_attempts and S3Config().use_ssl is s.getbool("AWS_USE_SSL")
    assert OptOutConfig().directives == frozenset(s.getlist("IMAGECRAWL_OPTOUT_DIRECTIVES"))
