"""The per-site ban state machine (pure).

    healthy --evidence--> suspect --burst / challenge--> banned(n) --cool-down--> probing
    probing --healthy probe--> healthy (resume slowly)
    probing --failed probe--> banned(n+1) ... after ``max_probes`` failed probes --> abandoned

Cool-downs follow StormCrawler's pattern: ``cooldown_seconds * 2**(n-1)``, capped.  Evidence from a
request sent before the current state began is stale (it was already in flight) and is ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from imagecrawl.tuning import DEFAULTS


class BanState(enum.StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    BANNED = "banned"
    PROBING = "probing"
    ABANDONED = "abandoned"


class Verdict(enum.StrEnum):
    """What the ban detector made of one answer."""

    HEALTHY = "healthy"  # a good page: the site serves us
    NEUTRAL = "neutral"  # says nothing about a ban (404, 500, redirects, ...)
    ERROR = "error"  # no answer (timeout, connection error): a failed probe, neutral otherwise
    STATUS_401 = "401"
    STATUS_403 = "403"
    STATUS_429 = "429"
    CHALLENGE = "challenge"  # a challenge/interstitial page: banned at once
    SOFT = "soft"  # 200 but without what a healthy page must contain


EVIDENCE = frozenset({Verdict.STATUS_401, Verdict.STATUS_403, Verdict.STATUS_429, Verdict.CHALLENGE, Verdict.SOFT})


@dataclass(frozen=True, slots=True)
class BanConfig:
    burst: int = DEFAULTS.ban_burst  # consecutive 401/403 answers that make a ban
    burst_429: int = DEFAULTS.ban_burst_429  # consecutive 429s (pacing handles single ones)
    soft_threshold: int = DEFAULTS.ban_soft_threshold  # consecutive pages without the healthy marker
    cooldown_seconds: float = DEFAULTS.ban_cooldown_seconds
    max_cooldown_seconds: float = DEFAULTS.ban_max_cooldown_seconds
    max_probes: int = DEFAULTS.ban_max_probes

    def __post_init__(self) -> None:
        if min(self.burst, self.burst_429, self.soft_threshold, self.max_probes) < 1:
            raise ValueError("ban thresholds and max_probes must be >= 1")
        if self.cooldown_seconds <= 0 or self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError("need 0 < cooldown_seconds <= max_cooldown_seconds")

    def cooldown(self, n: int) -> float:
        return min(self.max_cooldown_seconds, self.cooldown_seconds * 2 ** max(0, n - 1))


@dataclass(slots=True)
class Transition:
    old: BanState
    new: BanState
    reason: str
    until: float | None = None  # end of the cool-down when entering BANNED


@dataclass(slots=True)
class BanTracker:
    config: BanConfig
    state: BanState = BanState.HEALTHY
    since: float = float("-inf")
    banned_until: float = 0.0
    bans: int = 0  # cool-downs so far in this episode (n)
    failed_probes: int = 0
    probe_in_flight: bool = False
    streaks: dict[Verdict, int] = field(default_factory=dict)

    # --- the gate asks ------------------------------------------------------------------------

    def gate(self, now: float) -> tuple[float, Transition | None]:
        """Seconds until a request may go (0: go now; ``inf``: never), and a transition if the
        cool-down just ended.  In PROBING only one request (the probe) is let through at a time."""
        t: Transition | None = None
        if self.state is BanState.ABANDONED:
            return float("inf"), None
        if self.state is BanState.BANNED:
            if now < self.banned_until:
                return self.banned_until - now, None
            # probing from the end of the cool-down (nothing was let through between), so a state shared
            # between processes begins probing at the same moment in each
            t = self._move(BanState.PROBING, "cool-down over", self.banned_until)
        if self.state is BanState.PROBING and self.probe_in_flight:
            return 0.05, t
        return 0.0, t

    def granted(self) -> bool:
        """A request was let through; True if it is a probe."""
        if self.state is BanState.PROBING:
            self.probe_in_flight = True
            return True
        return False

    def released(self) -> None:
        """The probe (or any request) finished at the network level."""
        if self.state is BanState.PROBING:
            self.probe_in_flight = False

    # --- the detector tells -------------------------------------------------------------------

    def on_verdict(self, verdict: Verdict, sent_at: float, now: float) -> Transition | None:
        if sent_at < self.since or self.state is BanState.ABANDONED:
            return None  # stale: the request left before the current state began
        if self.state is BanState.BANNED:
            return None
        if self.state is BanState.PROBING:
            if verdict is Verdict.HEALTHY:
                self.bans = self.failed_probes = 0
                self.streaks.clear()
                return self._move(BanState.HEALTHY, "probe succeeded", now)
            if verdict in EVIDENCE or verdict is Verdict.ERROR:
                self.failed_probes += 1
                if self.failed_probes >= self.config.max_probes:
                    return self._move(BanState.ABANDONED, f"{self.failed_probes} failed probes", now)
                return self._ban(f"probe failed ({verdict.value})", now)
            return None
        # HEALTHY or SUSPECT
        if verdict is Verdict.HEALTHY:
            self.streaks.clear()
            if self.state is BanState.SUSPECT:
                return self._move(BanState.HEALTHY, "healthy answer", now)
            return None
        if verdict not in EVIDENCE:
            return None
        if verdict is Verdict.CHALLENGE:
            return self._ban("challenge page", now)
        count = self.streaks.get(verdict, 0) + 1
        self.streaks[verdict] = count
        limit = {
            Verdict.STATUS_429: self.config.burst_429,
            Verdict.SOFT: self.config.soft_threshold,
        }.get(verdict, self.config.burst)
        if verdict in (Verdict.STATUS_401, Verdict.STATUS_403):
            count = self.streaks.get(Verdict.STATUS_401, 0) + self.streaks.get(Verdict.STATUS_403, 0)
        if count >= limit:
            return self._ban(f"{count} consecutive {verdict.value} answers", now)
        if self.state is BanState.HEALTHY:
            return self._move(BanState.SUSPECT, f"{verdict.value} answer", now, keep_since=True)
        return None

    # --- internals ----------------------------------------------------------------------------

    def _ban(self, reason: str, now: float) -> Transition:
        self.bans += 1
        self.banned_until = now + self.config.cooldown(self.bans)
        self.streaks.clear()
        t = self._move(BanState.BANNED, reason, now)
        t.until = self.banned_until
        return t

    def _move(self, new: BanState, reason: str, now: float, keep_since: bool = False) -> Transition:
        old = self.state
        self.state = new
        if not keep_since:
            self.since = now
        self.probe_in_flight = False
        return Transition(old, new, reason)
