"""The rate gate: per-site admission (rate, concurrency, Retry-After pause, ban state) behind a small
interface, so a shared implementation (e.g. Redis + GCRA in Lua, for many workers) can replace the
in-process one.

    wait = gate.acquire(site, now)      # 0.0: go (a slot is taken); > 0: ask again later; inf: never
    gate.release(site, sent_at, now)    # the request left the network (response or error)
    gate.feedback(site, Feedback(...), now)
    gate.verdict(site, Verdict.X, sent_at, now)

Pure: no Scrapy, no clock of its own, no I/O.  What changed is reported as :class:`Event` objects
(``drain_events()``) that the Scrapy shell logs once and counts.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from imagecrawl import defaults
from imagecrawl.pacing.aimd import AimdConfig, AimdController
from imagecrawl.pacing.bans import BanConfig, BanState, BanTracker, Transition, Verdict
from imagecrawl.pacing.circuit import Circuit, CircuitChange, CircuitConfig, CircuitState
from imagecrawl.tuning import DEFAULTS

#: How long a request held by a full concurrency window (or an in-flight probe) waits at most before
#: asking again; the pacing middleware wakes it as soon as a request of its site is released
#: (``SiteState.held_by_window`` says which wait it is).
POLL_SECONDS = 0.25
#: A request may start this much before its spacing says (at most a quarter of the interval): a
#: waiting request woken a little late does not lose its turn, and at high rates requests are granted
#: in small bursts instead of each waiting for a timer of its own. The cap per window still holds.
GRANT_TOLERANCE_SECONDS = 0.005
#: A request that leaves this much after its grant (it waited for robots.txt) is checked again on the
#: way out: a Retry-After that came meanwhile, and the cap as the site counts arrivals.
LATE_SECONDS = 0.02
#: the most a floor (Crawl-delay, DOWNLOAD_DELAY) is stretched at random, as a share of it
FLOOR_JITTER = 0.02
#: A site idle this long with nothing pending (no request in flight or queued, healthy, circuit closed,
#: no pause, its spacing and cap window over) keeps only its learned rate (:class:`Learned`, about 0.2 KB
#: instead of about 3 KB); its full state comes back with its next request.
COMPACT_AFTER_SECONDS = 10.0


class Signal(enum.StrEnum):
    OK = "ok"  # a healthy answer
    NEUTRAL = "neutral"  # an answer that says nothing about load (404, 500, ...)
    THROTTLED = "429"
    UNAVAILABLE = "503"
    GATEWAY = "5xx-gateway"  # 502 / 504 / 522 / 524
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # could not connect: refused, DNS failure, no route
    BROKEN = "broken"  # connected, then the connection broke (reset, lost, data loss): the site is there


CONGESTION = frozenset(
    {Signal.THROTTLED, Signal.UNAVAILABLE, Signal.GATEWAY, Signal.TIMEOUT, Signal.CONNECTION, Signal.BROKEN}
)
#: no answer at all: what the dead-site circuit counts
NO_ANSWER = frozenset({Signal.TIMEOUT, Signal.CONNECTION})


@dataclass(frozen=True, slots=True)
class Feedback:
    signal: Signal
    sent_at: float
    latency: float | None = None
    retry_after: float | None = None  # seconds, already parsed and capped
    #: an HTTP answer (any status: the site is alive); False for a download error
    answer: bool = True
    #: the latency as measured, before the crawler's own event-loop lag was taken out of ``latency``
    measured: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth one log line and a counter: ``kind`` names the stat."""

    site: str
    kind: str  # e.g. "pacing/decrease/429", "pacing/retry_after", "bans/banned"
    message: str
    value: float | None = None


class RateGate(Protocol):
    """What the pacing and ban middlewares need of a gate: :class:`InProcessGate`, or a gate shared
    between processes that wraps one (``IMAGECRAWL_PACING_GATE_FACTORY``)."""

    @property
    def sites(self) -> dict[str, SiteState]: ...
    def state_of(self, site: str) -> BanState: ...
    def all_abandoned(self) -> bool: ...
    def acquire(self, site: str, now: float, policy: bool = False) -> float: ...
    def dead(self, site: str) -> bool: ...
    def depart(self, site: str, granted_at: float, now: float) -> float: ...
    def ended(self, site: str, now: float) -> None: ...
    def forget_idle(self, now: float, idle_seconds: float, keep: Callable[[str], bool]) -> int: ...
    def held(self) -> int: ...
    def answered(self, site: str) -> bool: ...
    def peek_wait(self, site: str, now: float) -> float: ...
    def revoke(self, site: str) -> None: ...
    def release(self, site: str, sent_at: float, now: float) -> None: ...
    def feedback(self, site: str, fb: Feedback, now: float) -> None: ...
    def verdict(self, site: str, verdict: Verdict, sent_at: float, now: float) -> None: ...
    def set_floor_interval(self, site: str, seconds: float) -> None: ...
    def drain_events(self) -> list[Event]: ...


@dataclass(slots=True)
class SiteState:
    controller: AimdController
    ban: BanTracker
    next_at: float = 0.0
    in_flight: int = 0
    paused_until: float = 0.0
    granted: int = 0
    #: grant times within the last cap window (1 s + guard), at most floor(cap) of them
    recent: deque[float] = field(default_factory=deque)
    #: the last wait was for a free concurrency slot (or the probe in flight), not for time
    held_by_window: bool = False
    #: next_at before the last grant, for :meth:`InProcessGate.revoke`
    prev_next_at: float = 0.0
    #: the dead-site circuit (connection refused, timeouts, DNS failures in a row)
    circuit: Circuit = field(default_factory=lambda: Circuit(CircuitConfig()))
    #: the site has answered at least once (any HTTP status)
    answered: bool = False
    #: when a request of the site was last let through or ended
    last_used: float = 0.0
    #: when the last request of the site was granted, or left late (:meth:`InProcessGate.depart`)
    last_start: float = -math.inf


@dataclass(slots=True)
class Learned:
    """What an idle site with nothing pending keeps: its learned rate (:data:`COMPACT_AFTER_SECONDS`).
    Nothing of a pause, a ban or the circuit is lost: a site with any of them is never compacted."""

    rate: float
    concurrency: int
    ceiling: float | None
    floor_interval: float  # Crawl-delay (robots.txt is not read again)
    answered: bool
    last_used: float

    @classmethod
    def of(cls, s: SiteState) -> Learned:
        c = s.controller
        return cls(c.rate, c.concurrency, c.ceiling, c.floor_interval, s.answered, s.last_used)

    def restore(self, s: SiteState) -> None:
        c = s.controller
        c.ceiling = self.ceiling
        if self.floor_interval > c.floor_interval:
            c.set_floor_interval(self.floor_interval)
        c.rate = min(self.rate, c.max_rate)
        c.concurrency = min(self.concurrency, c.config.max_concurrency)
        s.answered = self.answered
        s.last_used = self.last_used


#: InProcessGate's own default: see its ``window_guard``
WINDOW_GUARD_SECONDS = 0.15


@dataclass
class InProcessGate:
    """One process's gate; state per site lives as long as the crawl (not tied to Scrapy's slots)."""

    aimd: AimdConfig = field(default_factory=AimdConfig)
    bans: BanConfig = field(default_factory=BanConfig)
    jitter: float = DEFAULTS.pacing_jitter  # spacing is stretched by up to this fraction, never shortened
    #: The cap holds in any window of 1 s + this guard (requests may reach the wire a little late
    #: or early, and the site counts arrivals).
    window_guard: float = WINDOW_GUARD_SECONDS
    default_floor_interval: float = defaults.DOWNLOAD_DELAY
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    rng: random.Random = field(default_factory=random.Random)
    #: a settled site keeps only its :class:`Learned` rate after this many idle seconds
    compact_after: float = COMPACT_AFTER_SECONDS
    #: the full state of the sites in use (or with a pause, ban, open circuit, ... pending)
    sites: dict[str, SiteState] = field(default_factory=dict)
    #: the learned rates of idle sites with nothing pending (compacted by :meth:`forget_idle`)
    learned: dict[str, Learned] = field(default_factory=dict)
    _events: list[Event] = field(default_factory=list)

    def site(self, site: str, now: float = 0.0) -> SiteState:
        state = self.sites.get(site)
        if state is None:
            state = SiteState(
                AimdController(self.aimd, now, self.default_floor_interval),
                BanTracker(self.bans),
                circuit=Circuit(self.circuit),
            )
            record = self.learned.pop(site, None)
            if record is not None:
                record.restore(state)
            self.sites[site] = state
        return state

    # --- admission ----------------------------------------------------------------------------

    def acquire(self, site: str, now: float, policy: bool = False) -> float:
        """0: go (a slot is taken, release it when the request ends); > 0: ask again in that many
        seconds (``held_by_window``: or as soon as a request of the site is released); inf: never.

        A ``policy`` fetch (robots.txt and the like, which the site's other requests wait for) is
        spaced, capped and paused like any request but takes no concurrency slot and is no probe, so a
        request waiting for it never blocks it; it is not released."""
        s = self.site(site, now)
        s.held_by_window = False
        if self.circuit.enabled:
            cwait, change = s.circuit.gate(now)
            if change is not None:
                self._circuit_event(site, change)
            if cwait is None:  # the probe is out: the next release wakes us
                if not policy:
                    s.held_by_window = True
                    return POLL_SECONDS
            elif cwait > 0:
                return cwait
        wait, t = s.ban.gate(now)
        if t is not None:
            self._transition(site, s, t, now)
        if wait > 0:
            if s.ban.state is BanState.PROBING:  # the ban probe is out
                if not policy:
                    s.held_by_window = True
                    return POLL_SECONDS
            else:
                return wait
        if now < s.paused_until:
            return s.paused_until - now
        # A probe goes alone; so does a site with a Crawl-delay (or DOWNLOAD_DELAY) floor.
        sequential = s.ban.state is BanState.PROBING or s.controller.floor_interval > 0
        limit = 1 if sequential else s.controller.concurrency
        if not policy and s.in_flight >= limit:
            s.controller.concurrency_limited = True
            s.held_by_window = True
            return POLL_SECONDS
        interval = max(s.controller.interval, s.controller.floor_interval)
        early = 0.0 if sequential else min(GRANT_TOLERANCE_SECONDS, interval / 4)
        if now < s.next_at - early:
            s.controller.rate_limited = True
            return s.next_at - now
        # The cap as the site would count it: at most floor(cap) starts within any 1 s (+ guard).
        # Only grants inside the window are kept, so this is O(1) and bounded by the cap.
        window = 1.0 + self.window_guard
        recent = s.recent
        # (t + window <= now, not t <= now - window: a grant kept by the one and whose end the other
        # computes as now is a wait of 0.0, which callers take as a grant that was never counted)
        while recent and recent[0] + window <= now:
            recent.popleft()
        per_window = math.floor(s.controller.max_rate)
        if per_window >= 1 and len(recent) >= per_window:
            s.controller.rate_limited = True
            return recent[-per_window] + window - now
        recent.append(now)
        s.last_start = now
        s.prev_next_at = s.next_at
        # Never shorter than the interval (+1% against clock and network jitter), sometimes longer.
        s.next_at = max(s.next_at, now) + self._spacing(s.controller)
        s.last_used = now
        if policy:
            return 0.0
        s.in_flight += 1
        s.granted += 1
        if s.ban.granted():
            self._emit(site, "bans/probes", "probe request sent")
        if self.circuit.enabled and s.circuit.granted():
            self._emit(site, "circuit/probes", "probe request sent")
        return 0.0

    def depart(self, site: str, granted_at: float, now: float) -> float:
        """A granted request is about to reach the network: 0 (go), or seconds to wait first. A
        Retry-After pause that began since the grant holds it; one that leaves late (it waited for
        robots.txt, or a pause) is counted in the cap window at its real departure, and waits if that
        window is full, so the site never counts more than the cap in a second; and it leaves at least
        an interval after any request that started since its grant, so requests held together (by
        the same pause) leave evenly spaced, never back to back."""
        s = self.sites.get(site)
        if s is None:
            return 0.0
        if now < s.paused_until:
            return s.paused_until - now
        if now - granted_at <= LATE_SECONDS:
            return 0.0
        # Late: it goes as if granted now, spaced after what went (or was granted) meanwhile, so
        # requests held by the same pause or robots.txt fetch do not all leave at its end, back to back
        # (a bucket of one token answers 429 to every one but the first). Crawl-delay: a floor after
        # what went meanwhile (a policy fetch included), and none when nothing went: the spacing its own
        # grant set is not a wait for itself (a departure 20 ms late waited a whole Crawl-delay).
        floor = s.controller.floor_interval
        spacing = 0.0
        if s.last_start > granted_at:  # others started since its grant: one interval after the last
            spacing = max(0.0, s.last_start + max(s.controller.interval, floor * 1.01) - now)
        window = 1.0 + self.window_guard
        recent = s.recent
        while recent and recent[0] + window <= now:
            recent.popleft()
        per_window = math.floor(s.controller.max_rate)
        # the grants of the window but this request's own (a lifted cap keeps thousands: counted in C)
        if per_window >= 1 and len(recent) - recent.count(granted_at) >= per_window:
            others = [t for t in recent if t != granted_at]
            return max(0.001, spacing, others[-per_window] + window - now)
        if spacing > 0:
            return spacing
        with contextlib.suppress(ValueError):
            recent.remove(granted_at)
        recent.append(now)
        s.last_start = now
        s.next_at = max(s.next_at, now + self._spacing(s.controller))
        return 0.0

    def _spacing(self, c: AimdController) -> float:
        """From one start of a site's request to the next: the controller's interval stretched by up to
        ``jitter``, or the site's floor (Crawl-delay, DOWNLOAD_DELAY) stretched by up to FLOOR_JITTER: a
        delay the site stated is known, not estimated, and stretching it by up to 10% only wasted 5% of
        what it allows. Never shorter than either (+1% against clock and network jitter)."""
        if c.floor_interval >= c.interval:
            return c.floor_interval * (1.01 + self.rng.uniform(0, min(self.jitter, FLOOR_JITTER)))
        return c.interval * (1.01 + self.rng.uniform(0, self.jitter))

    def forget_idle(self, now: float, idle_seconds: float, keep: Callable[[str], bool]) -> int:
        """Bound the state kept per site (a broad crawl passes through many sites once). A site settled
        for ``compact_after`` seconds keeps only its :class:`Learned` rate: nothing in flight, healthy
        with no verdict streak, circuit closed with no failure counted, no pause, its spacing and cap
        window over, and ``keep(site)`` false (the frontier still queues requests for it). A learned
        rate (or a settled site) idle for ``idle_seconds`` is dropped, unless it holds a Crawl-delay
        floor. Returns how many sites were dropped."""
        settled_before = now - max(self.compact_after, 1.0 + self.window_guard)
        drop_before = now - idle_seconds
        settled = [
            name
            for name, s in self.sites.items()
            if s.in_flight == 0
            and s.last_used < settled_before
            and s.next_at <= now
            and s.paused_until <= now
            and s.ban.state is BanState.HEALTHY
            and not any(s.ban.streaks.values())
            and s.circuit.state is CircuitState.CLOSED
            and s.circuit.failures == 0
            and not keep(name)
        ]
        gone = 0
        for name in settled:
            s = self.sites.pop(name)
            if s.last_used < drop_before and s.controller.floor_interval == 0:
                gone += 1
            else:
                self.learned[name] = Learned.of(s)
        # Records are added as sites settle, so the oldest come first: stop at the first recent one.
        old = []
        for name, r in self.learned.items():
            if r.last_used >= drop_before:
                break
            if r.floor_interval == 0 and not keep(name):
                old.append(name)
        for name in old:
            del self.learned[name]
        return gone + len(old)

    def held(self) -> int:
        """Sites whose state is kept: in full, or as a learned rate."""
        return len(self.sites) + len(self.learned)

    def answered(self, site: str) -> bool:
        """The site has answered at least once (as far as its kept state remembers)."""
        s = self.sites.get(site)
        if s is not None:
            return s.answered
        r = self.learned.get(site)
        return r is not None and r.answered

    def dead(self, site: str) -> bool:
        """The site's circuit gave it up (no answer through every probe)."""
        s = self.sites.get(site)
        return s is not None and s.circuit.state is CircuitState.DEAD

    def peek_wait(self, site: str, now: float) -> float:
        """At least how long a request for ``site`` will wait (Retry-After pause, ban cool-down, rate
        spacing), without taking a slot."""
        s = self.sites.get(site)
        if s is None:
            return 0.0
        wait = max(s.paused_until, s.next_at) - now
        per_window = math.floor(s.controller.max_rate)
        if per_window >= 1 and len(s.recent) >= per_window:
            wait = max(wait, s.recent[-per_window] + 1.0 + self.window_guard - now)
        if s.ban.state is BanState.BANNED:
            wait = max(wait, s.ban.banned_until - now)
        return max(0.0, wait)

    def revoke(self, site: str) -> None:
        """Undo the last grant of ``site`` as if it had not happened (a shared gate said no after the
        local one said yes): the slot, its place in the cap window and the spacing are given back."""
        s = self.sites.get(site)
        if s is None or s.in_flight <= 0:
            return
        s.in_flight -= 1
        s.granted -= 1
        if s.recent:
            s.recent.pop()
        s.last_start = s.recent[-1] if s.recent else -math.inf
        s.next_at = s.prev_next_at
        s.ban.released()
        s.circuit.released()

    def release(self, site: str, sent_at: float, now: float) -> None:
        s = self.site(site, now)
        s.in_flight = max(0, s.in_flight - 1)
        s.last_used = max(s.last_used, now)
        s.ban.released()
        s.circuit.released()
        self.ended(site, now)

    def ended(self, site: str, now: float) -> None:
        """A request of ``site`` (a policy fetch too, which holds no slot) left the network."""
        s = self.site(site, now)
        if s.controller.floor_interval > 0:
            # Crawl-delay counts from the end of the previous request, so however late a request
            # reached the wire, the next one arrives at least the delay after it.
            s.next_at = max(s.next_at, now + s.controller.floor_interval)

    # --- feedback -----------------------------------------------------------------------------

    def feedback(self, site: str, fb: Feedback, now: float, circuit: bool = True) -> None:
        """What an answer (or its absence) tells the site's state. ``circuit=False``: all but the
        dead-site circuit (a gate shared between processes applies that to the shared state itself,
        :meth:`circuit_feedback`)."""
        s = self.site(site, now)
        if fb.answer:
            s.answered = True
        if circuit:
            self.circuit_feedback(site, fb, now)
        if fb.retry_after is not None and fb.retry_after > 0:
            until = now + fb.retry_after
            if until > s.paused_until:
                s.controller.note_pause(max(now, s.paused_until), until)
                s.paused_until = until
                self._emit(site, "pacing/retry_after", f"Retry-After: pausing {fb.retry_after:.1f}s", fb.retry_after)
        self.control(site, fb, now)

    def circuit_feedback(self, site: str, fb: Feedback, now: float) -> None:
        """What an answer (or its absence) tells the site's dead-site circuit."""
        s = self.site(site, now)
        if fb.answer:
            change = s.circuit.answered()
            if change is not None:
                self._circuit_event(site, change)
        elif fb.signal in NO_ANSWER and self.circuit.enabled:
            change = s.circuit.failed(fb.sent_at, now, fb.signal.value)
            if change is not None:
                self._circuit_event(site, change)

    def control(self, site: str, fb: Feedback, now: float, emit: bool = True) -> None:
        """What an answer tells the site's rate controller (latency, congestion, a healthy answer).
        A gate shared between processes applies it again to the shared controller when another process
        changed that meanwhile (``emit=False``: the events were reported the first time)."""
        c = self.site(site, now).controller
        spiking = False
        if fb.latency is not None and fb.signal in (Signal.OK, Signal.NEUTRAL):
            spiking = c.observe_latency(fb.latency, now, fb.measured)
        reason: str | None = fb.signal.value if fb.signal in CONGESTION else ("latency" if spiking else None)
        if reason is not None:
            adj = c.on_congestion(reason, fb.sent_at, now)
            if adj is not None and emit:
                self._emit(
                    site,
                    f"pacing/decrease/{reason}",
                    f"slowing down ({reason}): {adj.rate:.3g} req/s, concurrency {adj.concurrency}",
                    adj.rate,
                )
            return
        if fb.signal is Signal.OK:
            adj = c.on_success(now, fb.sent_at)
            if adj is not None and emit:
                self._emit(
                    site,
                    "pacing/increase",
                    f"speeding up: {adj.rate:.3g} req/s, concurrency {adj.concurrency}",
                    adj.rate,
                )

    def verdict(self, site: str, verdict: Verdict, sent_at: float, now: float) -> None:
        s = self.site(site, now)
        t = s.ban.on_verdict(verdict, sent_at, now)
        if t is not None:
            self._transition(site, s, t, now)

    def set_floor_interval(self, site: str, seconds: float) -> None:
        s = self.site(site)
        if seconds > s.controller.floor_interval:
            s.controller.set_floor_interval(seconds)
            self._emit(site, "pacing/crawl_delay", f"Crawl-delay floor {seconds:g}s", seconds)

    # --- queries ------------------------------------------------------------------------------

    def state_of(self, site: str) -> BanState:
        return self.sites[site].ban.state if site in self.sites else BanState.HEALTHY

    def all_abandoned(self) -> bool:
        return bool(self.sites) and all(s.ban.state is BanState.ABANDONED for s in self.sites.values())

    def drain_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def events_since(self, mark: int) -> int:
        """How many events are waiting (``mark=0``), or were emitted since ``len`` was ``mark``."""
        return len(self._events) - mark

    def discard_events(self, mark: int) -> None:
        """Forget the events emitted since there were ``mark`` (a shared gate applied an answer to a
        state another process replaced meanwhile, and applies it again to that one)."""
        del self._events[mark:]

    # --- internals ----------------------------------------------------------------------------

    def _transition(self, site: str, s: SiteState, t: Transition, now: float) -> None:
        if t.new is BanState.BANNED:
            assert t.until is not None
            self._emit(site, "bans/banned", f"banned ({t.reason}): quiet for {t.until - now:.0f}s", t.until - now)
            s.controller.on_congestion("ban", now, now)
        elif t.new is BanState.PROBING:
            self._emit(site, "bans/probing", "cool-down over, probing")
        elif t.new is BanState.HEALTHY and t.old is BanState.PROBING:
            s.controller.resume_after_ban(now)
            s.next_at = max(s.next_at, now + s.controller.interval)
            self._emit(site, "bans/recovered", f"probe healthy, resuming at {s.controller.rate:.3g} req/s")
        elif t.new is BanState.ABANDONED:
            self._emit(site, "bans/abandoned", f"abandoned ({t.reason})")
        elif t.new is BanState.SUSPECT:
            self._emit(site, "bans/suspect", f"suspect ({t.reason})")
        elif t.new is BanState.HEALTHY:
            self._emit(site, "bans/cleared", f"no longer suspect ({t.reason})")

    def _circuit_event(self, site: str, change: CircuitChange) -> None:
        kind = {
            CircuitState.OPEN: "circuit/opened",
            CircuitState.HALF_OPEN: "circuit/half_open",
            CircuitState.CLOSED: "circuit/closed",
            CircuitState.DEAD: "circuit/dead",
        }[change.new]
        self._emit(site, kind, change.message)

    def _emit(self, site: str, kind: str, message: str, value: float | None = None) -> None:
        self._events.append(Event(site, kind, message, value))
