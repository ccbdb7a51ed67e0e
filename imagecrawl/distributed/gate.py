"""The pacing middleware's rate gate, shared through Redis (the ``RateGate`` of :mod:`imagecrawl.pacing`).

:class:`RedisGate` wraps this process's :class:`imagecrawl.pacing.gate.InProcessGate` (AIMD on rate and
concurrency, Crawl-delay floor, ban state machine, dead-site circuit) so that all workers together pace a
site as one process would:

- the site's AIMD controller is one state in Redis (:meth:`.ratelimit.RedisRateLimiter.load_controller`,
  ``save_controller``: a version and compare-and-set): this worker's copy is read before grants when
  another worker changed it and after every answer, the answer is applied and written back (applied again
  to the newer state when another worker wrote first); so a 429 cuts the site's rate once, and the
  workers climb and probe as one;
- a request goes when this worker's gate and one Lua call (:meth:`.ratelimit.RedisRateLimiter.admit`)
  say yes: no shared pause, the site's concurrency over all workers not full, the GCRA slot at
  ``min(cap, the controller's rate)`` free;
- a Retry-After (:meth:`RedisGate.announce_pause`, called by the pacing middleware first thing) and a
  ban's cool-down pause the site for every worker; every granted request checks the pause again right
  before it reaches the network.

When the shared gate says no, the local slot is handed back untouched.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import os
import pickle
import socket
import time
import uuid
from collections import deque
from typing import Any

from imagecrawl.distributed.ratelimit import ADMITTED, CONCURRENCY, RATE, RedisRateLimiter
from imagecrawl.pacing.bans import BanState
from imagecrawl.pacing.circuit import CircuitState
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)


class RedisGate:
    def __init__(self, local: Any, limiter: RedisRateLimiter, owner: str = "", token_ttl: float = 60.0) -> None:
        self.local = local
        self.limiter = limiter
        #: this worker's in-flight tokens per site (the site's concurrency is counted over all workers)
        self._tokens: dict[str, list[str]] = {}
        self._owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self.token_ttl = token_ttl
        #: the version of each site's shared controller this worker holds, and when it last read it
        self._versions: dict[str, int] = {}
        self._read_at: dict[str, float] = {}
        #: this process's monotonic clock to the wall clock (the shared controller keeps wall times, so
        #: workers on different machines read each other's times right)
        self._to_wall = time.time() - time.monotonic()

    def __getattr__(self, name: str) -> Any:  # state_of, all_abandoned, sites, ...
        return getattr(self.local, name)

    # --- admission ----------------------------------------------------------------------------
    def acquire(self, site: str, now: float, policy: bool = False) -> float:
        wait, _shared = self._admit(site, now, policy)
        return wait

    def admit(self, site: str, now: float) -> tuple[float, bool]:
        """What the shared frontier asks before a request leaves Redis: ``(wait, shared)``. 0: go (the
        local slot, the shared rate slot and a shared concurrency slot are taken); else seconds before
        asking again, and whether that is the site's shared gate (every worker must wait: a pause, the
        shared rate slot) or this worker's own (its pacing, the site's concurrency is full; inf when it
        gave the site up)."""
        return self._admit(site, now, False)

    def _admit(self, site: str, now: float, policy: bool) -> tuple[float, bool]:
        self._refresh(site, now)
        wait = float(self.local.acquire(site, now, policy))
        if wait > 0:
            return wait, False
        state = self.local.sites.get(site)
        # A probe of this worker's dead-site circuit or ban goes alone for this worker and is not counted in
        # the site's shared concurrency: each worker learns for itself that a site does not answer, as
        # fast as one process would, instead of waiting behind the other workers' hanging probes.
        probing = state is not None and (
            state.circuit.state is not CircuitState.CLOSED or state.ban.state is BanState.PROBING
        )
        token = "" if policy or probing else f"{self._owner}:{next(self._seq)}"
        concurrency = int(state.controller.concurrency) if state is not None else 1
        shared, why, version = self.limiter.admit(site, token, concurrency, self.token_ttl)
        if why == ADMITTED:
            if token:
                self._tokens.setdefault(site, []).append(token)
            if version != self._versions.get(site, 0):
                self._read_at[site] = -math.inf  # another worker changed the controller: read it soon
            return 0.0, False
        # Not now for the site as a whole: give the local slot back as it was (the local pacing state
        # does not pay for the other workers' requests).
        if not policy:
            self.local.revoke(site)
        if why == CONCURRENCY:
            if state is not None:
                state.controller.concurrency_limited = True
            return CONCURRENCY_POLL_SECONDS, False
        if why == RATE and state is not None:
            state.controller.rate_limited = True
        return max(shared, 0.001), True

    def peek_wait(self, site: str, now: float) -> float:
        return max(float(self.local.peek_wait(site, now)), self.limiter.paused_for(site))

    def depart(self, site: str, granted_at: float, now: float) -> float:
        # A Retry-After (or a ban) another worker received since the grant holds it, however short the
        # time since: the request has not reached the site yet.
        paused = self.limiter.paused_for(site)
        if paused > 0:
            return paused
        if now - granted_at > SHARED_LATE_SECONDS:
            # It leaves late (it waited for robots.txt): its shared slot is long past, and the other
            # workers' requests went meanwhile. It takes a fresh one, so the site never sees a burst of
            # the late ones.
            shared = self.limiter.acquire(site)
            if shared > 0:
                return shared
        return float(self.local.depart(site, granted_at, now))

    def forget_idle(self, now: float, idle_seconds: float, keep: Any) -> int:
        n = int(self.local.forget_idle(now, idle_seconds, keep))
        # a site forgotten or compacted to its learned rate reads the shared controller again when it
        # comes back
        for site in [s for s in self._versions if s not in self.local.sites]:
            self._versions.pop(site, None)
            self._read_at.pop(site, None)
        return n

    def ended(self, site: str, now: float) -> None:
        self.local.ended(site, now)

    def revoke(self, site: str) -> None:
        self.local.revoke(site)
        self._end_token(site)

    def release(self, site: str, sent_at: float, now: float) -> None:
        self.local.release(site, sent_at, now)
        self._end_token(site)

    def _end_token(self, site: str) -> None:
        tokens = self._tokens.get(site)
        if tokens:
            token = tokens.pop()
            if not tokens:
                del self._tokens[site]
            self.limiter.end(site, token)

    # --- feedback -----------------------------------------------------------------------------
    def announce_pause(self, site: str, seconds: float) -> None:
        """A Retry-After: the site is closed for every worker, at once (the pacing middleware calls this
        first thing when the answer comes; every admission checks it in the same atomic step)."""
        if self.limiter.pause(site, seconds):
            logger.info("%s: Retry-After %.1fs, every worker waits", site, seconds)

    def feedback(self, site: str, fb: Any, now: float) -> None:
        # The pause first (again, for a caller that did not announce it): every worker must see it
        # before this one does anything else. It never shortens a longer one.
        if fb.retry_after is not None and fb.retry_after > 0:
            self.limiter.pause(site, fb.retry_after)
        self._read(site, now)
        self.local.feedback(site, fb, now)

        def again() -> None:
            state = self.local.site(site, now)
            if fb.retry_after is not None and fb.retry_after > 0:
                state.controller.note_pause(now, now + fb.retry_after)
            self.local.control(site, fb, now, emit=False)

        self._save(site, now, again)

    def verdict(self, site: str, verdict: Any, sent_at: float, now: float) -> None:
        was = self.local.state_of(site)
        self._read(site, now)
        self.local.verdict(site, verdict, sent_at, now)
        state = self.local.sites.get(site)
        if state is None:
            return
        banned = str(getattr(state.ban.state, "value", state.ban.state)) == "banned"
        if banned and str(getattr(was, "value", was)) != "banned":
            cooldown = state.ban.banned_until - now
            if cooldown > 0 and self.limiter.pause(site, cooldown):
                logger.warning("%s: banned, every worker stays away for %.0fs", site, cooldown)
            self._save(site, now, lambda: self.local.site(site, now).controller.on_congestion("ban", now, now))
        elif state.ban.state != was:
            self._save(site, now, None)

    def set_floor_interval(self, site: str, seconds: float) -> None:
        self.local.set_floor_interval(site, seconds)

    def drain_events(self) -> list[Any]:
        return list(self.local.drain_events())

    # --- the shared controller -----------------------------------------------------------------
    def _refresh(self, site: str, now: float) -> None:
        """Before a grant: read the shared controller if another worker changed it since this worker
        last read it (at most every :data:`REFRESH_SECONDS`), so this worker's own spacing and
        concurrency follow the site's one controller."""
        if now - self._read_at.get(site, -math.inf) >= REFRESH_SECONDS:
            self._read(site, now)

    def _read(self, site: str, now: float) -> None:
        """Make this worker's copy of the site's controller the shared one (and note whether the shared
        gate held requests back since: the controller grows only when its limit binds)."""
        state = self.local.site(site, now)
        version, data, rate_held, concurrency_held = self.limiter.load_controller(site, self._versions.get(site, 0))
        self._read_at[site] = now
        if data is not None:
            self._install(state, data)
        self._versions[site] = version
        if rate_held:
            state.controller.rate_limited = True
        if concurrency_held:
            state.controller.concurrency_limited = True

    def _save(self, site: str, now: float, again: Any) -> None:
        """Store this worker's copy of the controller as the site's; when another worker stored one
        meanwhile, take that one and apply this answer to it (``again``) before trying once more."""
        state = self.local.site(site, now)
        for _ in range(SAVE_ATTEMPTS):
            c = state.controller
            ok, version, data = self.limiter.save_controller(
                site, self._versions.get(site, 0), self._dump(c), min(c.rate, c.max_rate), c.concurrency
            )
            self._versions[site] = version
            if ok:
                return
            if data is not None:
                self._install(state, data)
            if again is None:
                return
            again()
        logger.debug("%s: the shared controller changed under %d attempts; kept this worker's", site, SAVE_ATTEMPTS)

    def _dump(self, controller: Any) -> bytes:
        return pickle.dumps(_shift(_fields(controller), self._to_wall), protocol=pickle.HIGHEST_PROTOCOL)

    def _install(self, state: Any, data: bytes) -> None:
        try:
            fields = _shift(pickle.loads(data), -self._to_wall)
        except Exception as exc:  # a state written by another version: keep this worker's own
            logger.warning("Unreadable shared pacing state (%s): keeping this worker's", exc)
            return
        old = state.controller
        new = copy.copy(old)
        for name, value in fields.items():
            with contextlib.suppress(AttributeError):  # a field this version does not have
                setattr(new, name, value)
        # the floor (Crawl-delay) this worker read from robots.txt holds whatever the others read
        new.floor_interval = max(float(new.floor_interval), float(old.floor_interval))
        new.rate_limited = bool(new.rate_limited or old.rate_limited)
        new.concurrency_limited = bool(new.concurrency_limited or old.concurrency_limited)
        state.controller = new


#: the controller's attributes that are times (the pacing clock), shifted to the wall clock in Redis
_TIME_FIELDS = frozenset({"last_change", "last_cut", "srtt_at", "created"})
#: ... and the ones holding times in a deque (single times, or (start, end) pairs)
_TIME_DEQUES = frozenset({"_answers", "_pauses"})


def _fields(obj: Any) -> dict[str, Any]:
    """An object's attributes, whether it keeps them in ``__slots__`` or a ``__dict__``."""
    out = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out[name] = getattr(obj, name)
    return out


def _shift(fields: dict[str, Any], delta: float) -> dict[str, Any]:
    out = dict(fields)
    for name in _TIME_FIELDS & out.keys():
        out[name] = float(out[name]) + delta
    for name in _TIME_DEQUES & out.keys():
        out[name] = deque(
            tuple(t + delta for t in item) if isinstance(item, tuple) else item + delta for item in out[name]
        )
    return out


#: a worker reads the shared controller before a grant at most this often (and after every answer)
REFRESH_SECONDS = 0.25
#: with the site's concurrency full over all workers, this worker asks again after this
CONCURRENCY_POLL_SECONDS = 0.05
#: compare-and-set attempts to store the shared controller after an answer
SAVE_ATTEMPTS = 4

#: a request the frontier let out that reaches the network later than this after its grant takes a
#: fresh shared slot (the spacing's slack absorbs shorter delays)
SHARED_LATE_SECONDS = 0.1


def shared_gate(crawler: Any, local: Any) -> Any:
    """The ``IMAGECRAWL_PACING_GATE_FACTORY`` of distributed crawls: ``local`` wrapped in a
    :class:`RedisGate` when the crawl has a shared limiter, else ``local`` itself."""
    limiter = crawl_context(crawler).shared_limiter()
    if limiter is None:
        return local
    logger.info("Pacing: each site's rate controller, concurrency, Retry-After and bans shared through Redis")
    return RedisGate(local, limiter, token_ttl=tuning(crawler.settings).redis_lease_seconds)
