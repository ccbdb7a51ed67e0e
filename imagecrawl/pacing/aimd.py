"""The per-site AIMD controller: a request rate and a concurrency, adjusted from the site's own signals.

Pure logic, no Scrapy and no clock of its own: every method takes ``now`` (monotonic seconds).

* Start-up: while no congestion was ever seen, the rate grows by ``startup_factor`` per half step
  (TCP's slow start, bounded by ``max_rate``: a short crawl spends little of itself climbing; an
  answer grows it by the half steps since the last change, up to ``STARTUP_MAX_STEPS``), only
  while the rate is what holds requests back; so does the concurrency (at least +1), while the
  concurrency is what holds them back.
* A rate the crawl does not use (because the concurrency or the spider holds it back: the answers of
  a step came to less than ``USED_SHARE`` of it - in start-up, of the rate a smoothed latency ago,
  when the answers were sent) grows to at most ``startup_factor`` times what the
  site actually answered: it is not a rate the site has shown it can take, so it does not pile up into
  a burst when that limit opens.
* Congestion (429, 503/502/504, timeouts, connection errors, latency well above the site's
  baseline): rate and concurrency are cut multiplicatively by ``decrease_factor``, at most once per
  adjustment epoch: answers to requests sent before the last cut are old news and do not cut again.
  The rate at the cut is remembered as the ``ceiling``, or what the site served if less: after a
  previous cut, the answers since it over the time since (a second of each Retry-After pause counted:
  what a token bucket saves up in a pause is not capacity), when the rate right after that cut was
  not below them (else they measured the crawl's climb, not the site). A site that served clearly
  less than was sent has shown its capacity: the rate goes to ``SERVED_MARGIN`` of it instead of the
  cut. The first congestion ends the start-up: the rate goes to ``STARTUP_CUT`` of what the last 2 s
  served, the ceiling to ``STARTUP_CEILING`` times it (a bucket's burst let the climbing rate through
  until it was drained: the rate that met the 429 can be twice the capacity, the last answers are
  above it too; a small bucket answered 429 as soon as the rate passed it, and the answers lag).
* Settling, from the start-up's end to the next congestion: the start-up's cut is a guess (a bucket
  of one token and a bucket of a second of a lower capacity answer the climb alike), so a used rate
  grows by ``SETTLE_GROWTH`` per step until the next congestion measures the site.
* Once a site has pushed back, the rate never grows past ``SUSTAINED_HEADROOM`` times the best
  sustained rate it has shown (:meth:`AimdController.sustained`: a lower bound of its capacity that a
  token bucket's savings of up to a second cannot inflate), so no second holds more than about
  1.25 x its capacity + 1, even when a Retry-After pause filled the bucket again.
* Healthy and flat latency: below ``recover_ratio * ceiling`` the rate closes half the gap per step
  (fast recovery to a rate known to work); near the ceiling it creeps up by ``probe_fraction`` of
  the ceiling per step, and past the ceiling unharmed the step doubles after ``PROBE_DOUBLING_AFTER``
  steps (the site may have grown, or the ceiling was an underestimate) up to ``PROBE_CAP`` times it,
  held there ``PROBE_HOLD_STEPS`` steps before it becomes the new ceiling - a CUBIC-like sawtooth that
  spends most of its time just under capacity.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from imagecrawl import defaults
from imagecrawl.tuning import DEFAULTS

#: a smoothed latency older than this many steps no longer holds growth back
STALE_LATENCY_STEPS = 5
#: of a Retry-After pause, the part a site is taken to save up capacity in (its burst)
PAUSE_SAVINGS_SECONDS = 1.0
#: the first congestion (the end of the start-up) cuts the rate to this share of what the site served
#: over the last 2 s, if that is below the usual cut: a token bucket's burst let a climbing rate through
#: until it was drained, so the rate that met the 429 may be twice the capacity, and the last seconds'
#: answers (the burst included) are still above it; the climb back must stay within 1.25 C
STARTUP_CUT = 0.85
#: ... and the ceiling it climbs back towards is what they served, times this (the ramp's answers lag
#: behind it: a site with a small bucket answered 429 as soon as the rate passed its capacity)
STARTUP_CEILING = 1.1
#: a start-up answer grows the rate by the half steps since the last change, at most this many
STARTUP_MAX_STEPS = 2.0
#: start-up steps are this fraction of a step
STARTUP_STEP = 0.5
#: a step whose answers came to this share of the rate used the rate (it was what held requests back)
USED_SHARE = 0.7
#: a cut whose served rate is below this share of the rate knows the site's capacity ...
SATURATED_SHARE = 0.9
#: ... and goes this far under it
SERVED_MARGIN = 0.95
#: after the first congestion (the end of the start-up) and until the next, a used rate grows by this
#: factor per step: the start-up's cut is a guess (a bucket of one token and a bucket of a second of
#: capacity end the start-up alike, the first several times below its capacity), the next congestion
#: measures the site
SETTLE_GROWTH = 1.25
#: once a congestion was seen, the rate never grows past this many times the best sustained rate the
#: site has shown (:meth:`AimdController.sustained`, about 10/11 of the capacity of a busy site), so no
#: second holds more than 1.25 x its capacity + 1
SUSTAINED_HEADROOM = 1.3
#: the longest window the sustained rate is measured over, in steps
SUSTAINED_STEPS = 10
#: steps past the last ceiling after which the probing steps double
PROBE_DOUBLING_AFTER = 10
#: probing goes at most this far above the last ceiling ...
PROBE_CAP = 1.15
#: ... until it held there this many steps without congestion
PROBE_HOLD_STEPS = 20


#: with no start rate given, a site starts at this share of its cap (a cap raised for a site you own starts fast)
START_RATE_SHARE = 0.25
#: a site starts with this many requests at once
START_CONCURRENCY = 1
#: below this share of the last ceiling the rate closes half the gap per step (fast recovery)
RECOVER_RATIO = 0.95
#: near the ceiling the rate creeps up by this share of the ceiling per step
PROBE_FRACTION = 0.01
#: the window over which the goodput (answers per second) is measured, and a cut settles
GOODPUT_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AimdConfig:
    """The controller's parameters. Defaults: the add-on's settings (imagecrawl/defaults.py), the tuning
    (imagecrawl/tuning.py) and the constants above, never restated."""

    start_rate: float = defaults.IMAGECRAWL_MAX_RATE_PER_SITE * START_RATE_SHARE
    min_rate: float = DEFAULTS.pacing_min_rate_per_second
    max_rate: float = defaults.IMAGECRAWL_MAX_RATE_PER_SITE
    start_concurrency: int = START_CONCURRENCY
    max_concurrency: int = min(defaults.IMAGECRAWL_MAX_CONCURRENCY_PER_SITE, defaults.CONCURRENT_REQUESTS_PER_DOMAIN)
    decrease_factor: float = DEFAULTS.pacing_decrease_factor
    startup_factor: float = DEFAULTS.pacing_startup_factor
    recover_ratio: float = RECOVER_RATIO
    probe_fraction: float = PROBE_FRACTION
    step_seconds: float = DEFAULTS.pacing_step_seconds
    latency_factor: float = DEFAULTS.pacing_latency_factor
    latency_margin_seconds: float = DEFAULTS.pacing_latency_margin_seconds
    goodput_window_seconds: float = GOODPUT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.max_rate:
            raise ValueError("need 0 < min_rate <= max_rate")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")
        if self.max_concurrency < 1 or self.start_concurrency < 1:
            raise ValueError("concurrencies must be >= 1")
        if self.startup_factor <= 1:
            raise ValueError("startup_factor must be > 1")


@dataclass(slots=True)
class Adjustment:
    """What a feedback call changed (for logs and stats); ``kind`` is ``increase`` or ``decrease``."""

    kind: str
    reason: str
    rate: float
    concurrency: int


class AimdController:
    # one per site in use: no __dict__ (imagecrawl.pacing.gate compacts idle sites further)
    __slots__ = (
        "_answers",
        "_cut_answers",
        "_cut_rate",
        "_pauses",
        "_probe_step",
        "_rate_before",
        "_step_answers",
        "_steps_at_cap",
        "_steps_past_ceiling",
        "_used_from",
        "baseline",
        "best_sustained",
        "ceiling",
        "concurrency",
        "concurrency_limited",
        "config",
        "created",
        "floor_interval",
        "last_change",
        "last_cut",
        "rate",
        "rate_limited",
        "settling",
        "srtt",
        "srtt_at",
    )

    def __init__(self, config: AimdConfig, now: float, floor_interval: float = 0.0) -> None:
        self.config = config
        self.floor_interval = floor_interval  # robots.txt Crawl-delay / DOWNLOAD_DELAY
        self.rate = min(config.start_rate, self.max_rate)
        self.concurrency = min(config.start_concurrency, config.max_concurrency)
        self.ceiling: float | None = None
        self._probe_step = 0.0
        self.last_change = now
        self.last_cut = -math.inf
        self.baseline: float | None = None
        self.srtt: float | None = None
        self.srtt_at = -math.inf  # when the last latency sample came (samples can be withheld)
        self.rate_limited = False
        self.concurrency_limited = False
        self.created = now
        self._answers: deque[float] = deque()  # when recent non-congested answers arrived
        self._pauses: list[tuple[float, float]] = []  # Retry-After pauses (no demand then): few
        self._steps_past_ceiling = 0
        self._steps_at_cap = 0
        self._step_answers = 0  # healthy answers since the last step
        self._cut_answers = 0  # healthy answers since the last cut
        self._cut_rate = 0.0  # the rate right after the last cut
        self._rate_before = math.inf  # the rate before the last increase
        self._used_from = -math.inf  # the start of the first step's use (on_success)
        #: between the first congestion and the next: the rate grows by SETTLE_GROWTH per step
        self.settling = False
        #: the best sustained rate the site has shown (a lower bound of its capacity), 0 until measured
        self.best_sustained = 0.0

    def note_pause(self, start: float, end: float) -> None:
        """The site was closed (Retry-After) from ``start`` to ``end``: not a lack of capacity."""
        self._pauses.append((start, end))

    def goodput(self, now: float, window: float | None = None) -> float | None:
        """Answers per second that were not pushed back, over the last ``window`` seconds (default:
        the goodput window; None until half of it has passed).  A site's capacity shows here, and a
        token bucket's burst averages out of it."""
        longest = self.config.goodput_window_seconds
        window = longest if window is None else min(window, longest)
        while self._answers and self._answers[0] < now - longest:
            self._answers.popleft()
        # a pause since the last cut is kept however old: the answers since the cut are measured over
        # the time since, without it (a pause forgotten early made a site of 12/s look like 11/s)
        while self._pauses and self._pauses[0][1] < min(now - longest, self.last_cut):
            self._pauses.pop(0)
        start = max(now - window, self.created)
        paused = sum(max(0.0, min(b, now) - max(a, start)) for a, b in self._pauses)
        span = now - start - paused
        answers = sum(1 for t in self._answers if t >= start)
        if span < window / 2 or answers < 5:
            return None  # too little history (or demand) to say anything about capacity
        return answers / span

    def sustained(self, now: float) -> float:
        """A lower bound of the site's capacity from its answers: the most answers within a window
        ending ``now`` (1 to SUSTAINED_STEPS steps long), over the window's length plus
        PAUSE_SAVINGS_SECONDS. A token bucket of up to a second of its capacity C serves at most C x
        (W + 1) in any W seconds, whatever the crawl sent; a window of pure burst does not count as
        capacity. 0 when nothing was answered."""
        step = self.config.step_seconds
        longest = min(SUSTAINED_STEPS * step, self.config.goodput_window_seconds, now - self.created)
        if longest <= 0:
            return 0.0
        ages: list[float] = []  # of the answers within the longest window, youngest first
        for t in reversed(self._answers):
            if now - t >= longest:
                break
            ages.append(now - t)
        best, i, k = 0.0, 0, 1
        while True:
            window = min(k * step, longest)
            while i < len(ages) and ages[i] < window:
                i += 1
            best = max(best, i / (window + PAUSE_SAVINGS_SECONDS))
            if window >= longest:
                return best
            k += 1

    # --- bounds -------------------------------------------------------------------------------

    @property
    def max_rate(self) -> float:
        cap = self.config.max_rate
        if self.floor_interval > 0:
            cap = min(cap, 1.0 / self.floor_interval)
        return max(cap, 1e-6)

    def set_floor_interval(self, seconds: float) -> None:
        self.floor_interval = max(0.0, seconds)
        self.rate = min(self.rate, self.max_rate)

    @property
    def interval(self) -> float:
        """Seconds between two request starts at the current rate."""
        return 1.0 / min(self.rate, self.max_rate)

    # --- latency ------------------------------------------------------------------------------

    def observe_latency(self, latency: float, now: float | None = None, measured: float | None = None) -> bool:
        """Track smoothed latency and a slowly drifting baseline; True if latency is spiking.

        ``latency`` is the site's share (the crawler's own recent event-loop lag taken out); ``measured``,
        when given, is the latency as measured, which the baseline (the least latency seen) is taken
        from: a correction that took out a lag the answer never waited for made a 94 ms site look like a
        4 ms one, and every later, true sample "not flat", so its rate never grew again."""
        if latency < 0:
            return False
        if now is not None:
            self.srtt_at = now
        self.srtt = latency if self.srtt is None else 0.8 * self.srtt + 0.2 * latency
        floor = latency if measured is None else max(latency, measured)
        if self.baseline is None or floor < self.baseline:
            self.baseline = floor
        else:
            # Let the baseline creep up very slowly so a site that became slower for good
            # is not punished forever.
            self.baseline += (floor - self.baseline) * 0.002
        return self.latency_spiking()

    def latency_spiking(self) -> bool:
        if self.srtt is None or self.baseline is None:
            return False
        c = self.config
        return self.srtt > self.baseline * c.latency_factor + c.latency_margin_seconds

    def latency_flat(self, now: float | None = None) -> bool:
        """Latency near the baseline, or no recent sample to say otherwise: the crawler withholds
        samples taken while its own event loop lagged, and a smoothed latency from before that is no
        evidence that the site is slow now."""
        if self.srtt is None or self.baseline is None:
            return True
        if now is not None and now - self.srtt_at > STALE_LATENCY_STEPS * self.config.step_seconds:
            return True
        c = self.config
        return self.srtt <= self.baseline * (1 + (c.latency_factor - 1) / 4) + c.latency_margin_seconds / 2

    # --- feedback -----------------------------------------------------------------------------

    def on_congestion(self, reason: str, sent_at: float, now: float) -> Adjustment | None:
        """Cut rate and concurrency, unless this answers a request sent before the last cut."""
        if sent_at < self.last_cut:
            return None
        c = self.config
        # The ceiling is what worked: the current rate, or the rate the site actually served lately
        # if that is lower (a token bucket's burst lets a too-high rate through for a while).
        # In start-up the rate was climbing: only the last two seconds say what the site served.
        # Within the goodput window of start-up or of the last cut, the long window would average in
        # the slow seconds before it (and pin the ceiling far below the site's capacity): the last
        # two seconds say what the site served.
        startup = self.ceiling is None
        settling = startup or now - self.last_cut < c.goodput_window_seconds
        served = self.goodput(now, 2.0 if settling else None)
        since = now - self.last_cut
        if not startup and math.isfinite(since) and since >= 2 * c.step_seconds and self._cut_answers >= 5:
            # Between two congestions the site served what it can take, plus what a pause (Retry-After)
            # let it save up - a short window just after a pause counts those savings as capacity. Over
            # the whole time since the last cut, a pause counts as time for what a site typically
            # saves (a token bucket of about a second of its capacity), not for the rest of it.
            idle = sum(max(0.0, min(b, now) - max(a, self.last_cut) - PAUSE_SAVINGS_SECONDS) for a, b in self._pauses)
            window = max(c.step_seconds, since - idle)
            since_cut = self._cut_answers / window
            # ... if the crawl kept it busy all along: a rate that started below what the site then
            # served (the last cut went too low) measured the crawl's own climb, not the site
            if self._cut_rate >= SATURATED_SHARE * since_cut:
                served = min(served if served is not None else math.inf, since_cut)
            else:  # and the long window would average in that climb too: the last 2 s say more
                served = self.goodput(now, 2.0)
        self.ceiling = self.rate if served is None else max(c.min_rate, min(self.rate, served))
        self._probe_step = 0.0
        self._steps_past_ceiling = 0
        self._steps_at_cap = 0
        rate = min(self.rate, self.max_rate)
        if not startup and served is not None and served < SATURATED_SHARE * rate:
            # the site answered clearly less than was sent: what it served is its capacity (a drained
            # token bucket refills at exactly that pace), so go just under it
            self.rate = max(c.min_rate, served * SERVED_MARGIN)
        else:
            self.rate = max(c.min_rate, min(rate, self.ceiling) * c.decrease_factor)
        if startup and served is not None:
            # the end of the start-up: the rate goes well under what the last seconds served (a
            # bucket's burst is in it), the ceiling a little above it (the ramp's answers lag)
            self.rate = max(c.min_rate, min(rate * c.decrease_factor, served * STARTUP_CUT))
            self.ceiling = max(self.ceiling, min(rate, served * STARTUP_CEILING))
        # the start-up's cut is a guess: from what was served, or (a 429 before enough answers to go
        # by, such as a first request that arrived on the heels of the robots.txt fetch) the rate
        self.settling = startup
        self._cut_rate = self.rate
        self.concurrency = max(1, math.floor(self.concurrency * c.decrease_factor))
        self.last_cut = now
        self.last_change = now
        self._step_answers = 0
        self._cut_answers = 0
        self.rate_limited = self.concurrency_limited = False
        return Adjustment("decrease", reason, self.rate, self.concurrency)

    def on_success(self, now: float, sent_at: float | None = None) -> Adjustment | None:
        """A healthy answer (to a request sent at ``sent_at``): grow by one step if a step has passed,
        the limit was binding and latency is flat."""
        c = self.config
        if not self._answers and self.ceiling is None and sent_at is not None and sent_at > self.last_change:
            # the site's first healthy answer: what its requests used is measured from when the first
            # of them went, not from the site's first contact (its robots.txt and tdmrep.json went
            # then, at its pace, and their time made a used start rate look unused for a second)
            self._used_from = sent_at
        self._answers.append(now)
        while self._answers[0] < now - c.goodput_window_seconds:
            self._answers.popleft()
        self._step_answers += 1
        self._cut_answers += 1
        elapsed = now - self.last_change
        # start-up (no congestion seen yet) takes half steps: a short crawl spends little of itself there
        step = c.step_seconds * (STARTUP_STEP if self.ceiling is None else 1.0)
        if elapsed < step:
            return None
        if not self.latency_flat(now):
            return None
        grew = False
        if self.rate_limited and self.rate < self.max_rate:
            # what the site answered in this step, times the start-up factor, bounds the new rate
            used = self._step_answers / max(now - max(self.last_change, self._used_from), 1e-9)
            # a rate the crawl used (spacing jitter and latency keep the answers a little under it) may
            # grow by its full step; one it did not use grows to what was used, times the start-up factor.
            # In start-up the answers of this step were sent a latency earlier, when the climbing rate
            # was lower (by the factor of the half steps the latency spans, at most back to the rate
            # before the last increase): measured against the rate now, a site of a few hundred ms
            # seemed not to use its rate, and the climb crawled at 1.05 x per half step, past the
            # first five seconds.
            reference = self.rate
            if self.ceiling is None and self.srtt is not None:
                lagged = self.rate / c.startup_factor ** (self.srtt / step)
                reference = max(lagged, min(self.rate, self._rate_before))
            bound = math.inf if used >= USED_SHARE * reference else used * c.startup_factor
            new = min(self.max_rate, self._next_rate(elapsed / step), max(self.rate, bound))
            if self.ceiling is not None:
                # once the site has pushed back, never past what it has shown it sustains, plus headroom
                self.best_sustained = max(self.best_sustained, self.sustained(now))
                new = min(new, max(self.rate, SUSTAINED_HEADROOM * self.best_sustained))
            grew = new > self.rate
            if grew:
                self._rate_before = self.rate
            self.rate = new
        if self.concurrency_limited and self.concurrency < c.max_concurrency:
            if self.ceiling is None:
                self.concurrency = max(self.concurrency + 1, math.ceil(self.concurrency * c.startup_factor))
            else:
                self.concurrency += 1
            self.concurrency = min(self.concurrency, c.max_concurrency)
            grew = True
        self.rate_limited = self.concurrency_limited = False
        self._step_answers = 0
        self.last_change = now
        if not grew:
            return None
        return Adjustment("increase", "healthy", self.rate, self.concurrency)

    def _next_rate(self, steps: float = 1.0) -> float:
        c = self.config
        r = self.rate
        if self.ceiling is None:
            # by the time that passed: an answer that comes a little after the step's end does not
            # lose the growth of the rest of it (at low rates answers are far apart)
            return r * c.startup_factor ** min(max(steps, 1.0), STARTUP_MAX_STEPS)
        if self.settling:
            # the start-up's cut was a guess: grow until the next congestion measures the site (the
            # sustained bound keeps a bucket's savings from passing for capacity)
            return r * SETTLE_GROWTH ** min(max(steps, 1.0), STARTUP_MAX_STEPS)
        target = self.ceiling * c.recover_ratio
        if r < target:
            return max(r + (target - r) / 2, min(target, r + c.probe_fraction * self.ceiling))
        if r < self.ceiling:
            self._probe_step = c.probe_fraction * self.ceiling
            return min(r + self._probe_step, self.ceiling)
        # Past the last known ceiling without trouble: creep on; after ten steps the site may
        # really have grown, so the steps start doubling - but never past PROBE_CAP x the ceiling
        # (a token bucket's burst hides the limit for a while), until the rate held there for
        # PROBE_HOLD_STEPS steps: then the site has shown it takes it, and that is the new ceiling.
        self._steps_past_ceiling += 1
        step = c.probe_fraction * self.ceiling
        if self._steps_past_ceiling > PROBE_DOUBLING_AFTER:
            step = max(self._probe_step * 2, step)
        self._probe_step = step
        cap = self.ceiling * PROBE_CAP
        if r >= cap:
            self._steps_at_cap += 1
            if self._steps_at_cap >= PROBE_HOLD_STEPS:
                self.ceiling, self._steps_at_cap, self._steps_past_ceiling = r, 0, 0
            return r
        return min(r + step, cap)

    def resume_after_ban(self, now: float) -> None:
        """After a ban: start again slowly, well under the rate that got us banned."""
        c = self.config
        self.ceiling = max(c.min_rate, self.rate * c.decrease_factor)
        self.rate = max(c.min_rate, min(c.start_rate, self.ceiling * c.decrease_factor))
        self.concurrency = 1
        self.settling = False
        self.last_change = now
        self.last_cut = now
        self._step_answers = 0
