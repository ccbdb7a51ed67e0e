"""A per-site circuit breaker for dead sites: connection refused, timeouts and DNS failures in a row.

    closed --N dead failures in a row--> open(cool-off) --cool-off over--> half-open (one probe)
    half-open --any answer--> closed
    half-open --probe failed--> open(cool-off x 2) ... after ``max_probes`` failed probes --> dead

Any HTTP answer (even a 404 or a 429) proves the site is alive and closes the circuit. While the circuit
is open the site's requests wait in the frontier, holding nothing; a dead site's requests are dropped.
Pure: no Scrapy, no clock of its own.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from imagecrawl.tuning import DEFAULTS


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    enabled: bool = DEFAULTS.circuit_enabled
    #: dead failures in a row (no answer in between) that open the circuit
    failures: int = DEFAULTS.circuit_failures
    #: first cool-off; doubles with each failed probe
    cooloff_seconds: float = DEFAULTS.circuit_cooloff_seconds
    #: failed probes after which the site is given up
    max_probes: int = DEFAULTS.circuit_max_probes

    def __post_init__(self) -> None:
        if self.failures < 1 or self.max_probes < 1:
            raise ValueError("circuit failures and max_probes must be >= 1")
        if self.cooloff_seconds < 0:
            raise ValueError("circuit cool-off must be >= 0")


@dataclass(slots=True)
class CircuitChange:
    new: CircuitState
    message: str


@dataclass(slots=True)
class Circuit:
    config: CircuitConfig
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    failed_probes: int = 0
    open_until: float = 0.0
    #: when the current half-open state began: failures of requests sent earlier are not the probe's
    probing_since: float = -math.inf
    probe_in_flight: bool = False

    def gate(self, now: float) -> tuple[float | None, CircuitChange | None]:
        """Seconds until a request may go (0: now; ``inf``: never; ``None``: when the probe in flight
        ends), and a change if the cool-off just ended."""
        if self.state is CircuitState.CLOSED:
            return 0.0, None
        if self.state is CircuitState.DEAD:
            return math.inf, None
        change: CircuitChange | None = None
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return self.open_until - now, None
            self.state = CircuitState.HALF_OPEN
            # half-open from the end of the cool-off (whoever notices it, and when): no request was let
            # through between, and a state shared between processes half-opens at the same moment in each
            self.probing_since = self.open_until
            self.probe_in_flight = False
            change = CircuitChange(CircuitState.HALF_OPEN, "cool-off over, one probe")
        if self.probe_in_flight:
            return None, change
        return 0.0, change

    def granted(self) -> bool:
        """A request was let through; True if it is the probe."""
        if self.state is CircuitState.HALF_OPEN:
            self.probe_in_flight = True
            return True
        return False

    def released(self) -> None:
        self.probe_in_flight = False

    def answered(self) -> CircuitChange | None:
        """The site answered (any HTTP status): it is alive."""
        self.failures = 0
        if self.state in (CircuitState.OPEN, CircuitState.HALF_OPEN):
            self.state = CircuitState.CLOSED
            self.failed_probes = 0
            self.probe_in_flight = False
            return CircuitChange(CircuitState.CLOSED, "the site answers again")
        return None

    def failed(self, sent_at: float, now: float, why: str) -> CircuitChange | None:
        """A request got no answer (connection refused, timeout, DNS failure)."""
        c = self.config
        if self.state is CircuitState.CLOSED:
            self.failures += 1
            if self.failures < c.failures:
                return None
            return self._open(now, f"{self.failures} requests in a row without an answer ({why})")
        if self.state is CircuitState.HALF_OPEN and sent_at >= self.probing_since:
            self.failed_probes += 1
            if self.failed_probes >= c.max_probes:
                self.state = CircuitState.DEAD
                self.probe_in_flight = False
                return CircuitChange(CircuitState.DEAD, f"dead: {self.failed_probes} failed probes ({why})")
            return self._open(now, f"probe failed ({why})")
        return None  # already open (or dead): the other requests in flight say nothing new

    def _open(self, now: float, reason: str) -> CircuitChange:
        cooloff = self.config.cooloff_seconds * 2**self.failed_probes
        self.state = CircuitState.OPEN
        self.open_until = now + cooloff
        self.probe_in_flight = False
        return CircuitChange(CircuitState.OPEN, f"{reason}: waiting {cooloff:g}s before a probe")
