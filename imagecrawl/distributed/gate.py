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
  before it reaches the network;
- the site's health, its dead-site circuit and its ban state machine, is one state in Redis too
  (compare-and-set like the controller, read in the same round trip): the failures of all workers
  count together, so a dead site is given up as soon as in one process; one probe at a time goes out
  over all workers (a probe lease in Redis), and when the site is given up every worker sees it.

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
    def __init__(
        self, local: Any, limiter: RedisRateLimiter, owner: str = "", token_ttl: float = 60.0, stats: Any = None
    ) -> None:
        self.local = local
        self.limiter = limiter
        self.stats = stats
        #: the version of each site's shared health (circuit, bans) this worker holds
        self._health: dict[str, int] = {}
        #: the probe this worker sends for a site: (probe lease owner, grant time, left the network)
        self._probes: dict[str, tuple[str, float, bool]] = {}
        #: the next wait of a site whose concurrency other workers' requests fill (doubles, bounded)
        self._full_waits: dict[str, float] = {}
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

    def _admit(self, site: str, now: float, policy: bool, again: bool = False) -> tuple[float, bool]:
        self._refresh(site, now)
        wait = float(self.local.acquire(site, now, policy))
        if wait > 0:
            return wait, False
        state = self.local.sites.get(site)
        # A probe of the site's dead-site circuit or ban is not counted in the site's shared concurrency
        # (the other workers' hanging requests do not hold it back), and goes alone over all workers: it
        # takes the site's probe lease first.
        probing = state is not None and (
            state.circuit.state is not CircuitState.CLOSED or state.ban.state is BanState.PROBING
        )
        took_probe = False
        if probing and not policy and site not in self._probes:
            owner = f"{self._owner}:probe"
            other = self.limiter.take_probe(site, owner, self.token_ttl)
            if other > 0:
                # another worker's probe is out: what it tells comes through the shared health
                self.local.revoke(site)
                self._read_at[site] = -math.inf
                if self.stats is not None:
                    self.stats.inc_value("imagecrawl/distributed/probe_waits")
                return min(other, PROBE_RECHECK_SECONDS), False
            self._probes[site] = (owner, now, False)
            took_probe = True
        token = "" if policy or probing else f"{self._owner}:{next(self._seq)}"
        concurrency = int(state.controller.concurrency) if state is not None else 1
        shared, why, version, health = self.limiter.admit(site, token, concurrency, self.token_ttl)
        if version != self._versions.get(site, 0):
            self._read_at[site] = -math.inf  # another worker changed the controller: read it soon
        if why == ADMITTED:
            if token:
                self._tokens.setdefault(site, []).append(token)
            self._full_waits.pop(site, None)
            if health != self._health.get(site, 0) and not again and not policy:
                # Another worker changed the site's health (its circuit opened, a ban) since this worker
                # read it: read it now, and if the grant was made on what no longer holds, give it back
                # and ask the gate again.
                self._read(site, now)
                if not probing and _held_back(self.local.sites.get(site)):
                    self.revoke(site)
                    return self._admit(site, now, policy, again=True)
            return 0.0, False
        # Not now for the site as a whole: give the local slot back as it was (the local pacing state
        # does not pay for the other workers' requests).
        if not policy:
            self.local.revoke(site)
            if took_probe:
                self._end_probe(site, None)
        if health != self._health.get(site, 0):
            self._read_at[site] = -math.inf
        if why == CONCURRENCY:
            if state is not None:
                state.controller.concurrency_limited = True
            # Full because of other workers' requests (this worker's own releases wake its frontier):
            # when one of theirs ends cannot be known here, so ask again after a wait that doubles while
            # the site stays full, from CONCURRENCY_FIRST_WAIT to CONCURRENCY_MAX_WAIT.
            wait = min(CONCURRENCY_MAX_WAIT, self._full_waits.get(site, CONCURRENCY_FIRST_WAIT / 2) * 2)
            self._full_waits[site] = wait
            if self.stats is not None:
                self.stats.inc_value("imagecrawl/distributed/concurrency_waits")
            return wait, False
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
            self._health.pop(site, None)
            self._full_waits.pop(site, None)
        return n

    def give_up(self, site: str) -> bool:
        """The site is given up (dead, or abandoned after bans): True for the first worker to say so, which
        counts it; every worker drops its requests."""
        return self.limiter.give_up(site)

    def ended(self, site: str, now: float) -> None:
        self.local.ended(site, now)

    def revoke(self, site: str) -> None:
        self.local.revoke(site)
        self._end_token(site)
        self._end_probe(site, None)

    def release(self, site: str, sent_at: float, now: float) -> None:
        self.local.release(site, sent_at, now)
        self._end_token(site)
        held = self._probes.get(site)
        if held is not None and not held[2] and sent_at >= held[1] - 1e-6:
            # the probe left the network: its lease ends once what it told is stored (the feedback or
            # the ban verdict comes next), or shortly at the latest
            self._probes[site] = (held[0], held[1], True)
            self.limiter.end_probe(site, held[0], PROBE_LINGER_SECONDS)

    def _end_probe(self, site: str, sent_at: float | None) -> None:
        """End this worker's probe lease of ``site``: at once (``sent_at`` None: the grant was given back),
        or once the probe's answer is stored (after a release)."""
        held = self._probes.get(site)
        if held is None or (sent_at is not None and not held[2]):
            return
        del self._probes[site]
        self.limiter.end_probe(site, held[0])

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
        self._share_health(site, now, lambda: self.local.circuit_feedback(site, fb, now))
        self._end_probe(site, fb.sent_at)
        self.local.feedback(site, fb, now, circuit=False)

        def again() -> None:
            state = self.local.site(site, now)
            if fb.retry_after is not None and fb.retry_after > 0:
                state.controller.note_pause(now, now + fb.retry_after)
            self.local.control(site, fb, now, emit=False)

        self._save(site, now, again)

    def verdict(self, site: str, verdict: Any, sent_at: float, now: float) -> None:
        was = self.local.state_of(site)
        self._read(site, now)
        self._share_health(site, now, lambda: self.local.verdict(site, verdict, sent_at, now))
        self._end_probe(site, sent_at)
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
        got = self.limiter.load_controller(site, self._versions.get(site, 0), self._health.get(site, 0))
        self._read_at[site] = now
        if got.controller is not None:
            self._install(state, got.controller)
        self._versions[site] = got.version
        if got.health is not None:
            self._install_health(state, got.health)
        self._health[site] = got.health_version
        if got.rate_held:
            state.controller.rate_limited = True
        if got.concurrency_held:
            state.controller.concurrency_limited = True

    # --- the shared health -----------------------------------------------------------------------
    def _share_health(self, site: str, now: float, apply: Any) -> None:
        """Apply an answer (``apply``) to the site's circuit and ban state and, if it changed them, store
        them as the site's; when another worker stored them meanwhile, take theirs and apply the answer
        to that (the events of the first attempt are discarded: each change is counted once)."""
        state = self.local.site(site, now)
        before = _health_of(state)
        mark = self.local.events_since(0)
        apply()
        for _ in range(SAVE_ATTEMPTS):
            after = _health_of(state)
            if after == before:
                return
            ok, version, data = self.limiter.save_health(site, self._health.get(site, 0), self._dump_health(after))
            self._health[site] = version
            if ok:
                return
            self.local.discard_events(mark)
            if data is not None:
                self._install_health(state, data)
            before = _health_of(state)
            apply()
        logger.debug("%s: the shared health changed under %d attempts; kept this worker's", site, SAVE_ATTEMPTS)

    def _dump_health(self, fields: dict[str, Any]) -> bytes:
        return pickle.dumps(_shift_health(fields, self._to_wall), protocol=pickle.HIGHEST_PROTOCOL)

    def _install_health(self, state: Any, data: bytes) -> None:
        try:
            fields = _shift_health(pickle.loads(data), -self._to_wall)
        except Exception as exc:  # a state written by another version: keep this worker's own
            logger.warning("Unreadable shared site health (%s): keeping this worker's", exc)
            return
        for key, value in fields.items():
            part, _, name = key.partition(".")
            with contextlib.suppress(AttributeError):
                setattr(state.circuit if part == "circuit" else state.ban, name, value)

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
        return pickle.dumps(_shift_controller(_fields(controller), self._to_wall), protocol=pickle.HIGHEST_PROTOCOL)

    def _install(self, state: Any, data: bytes) -> None:
        try:
            fields = _shift_controller(pickle.loads(data), -self._to_wall)
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
_TIME_FIELDS = frozenset({"last_change", "last_cut", "srtt_at", "created", "_used_from"})
#: ... and the ones holding times in a deque or a list (single times, or (start, end) pairs)
_TIME_DEQUES = frozenset({"_answers", "_pauses"})


def _fields(obj: Any) -> dict[str, Any]:
    """An object's attributes, whether it keeps them in ``__slots__`` or a ``__dict__``."""
    out = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out[name] = getattr(obj, name)
    return out


#: the circuit's and the ban tracker's shared fields (not ``probe_in_flight``: each worker's own), and the
#: ones holding times
_CIRCUIT_FIELDS = ("state", "failures", "failed_probes", "open_until", "probing_since")
_BAN_FIELDS = ("state", "since", "banned_until", "bans", "failed_probes", "streaks")
_HEALTH_TIMES = frozenset({"circuit.open_until", "circuit.probing_since", "ban.since", "ban.banned_until"})
#: ... and the health's dicts (copied on the way to and from Redis)
_HEALTH_MAPPINGS = frozenset({"ban.streaks"})


def _held_back(state: Any) -> bool:
    """The site's circuit or ban state holds its ordinary requests back (it is open, banned, probing...)."""
    return state is not None and (
        state.circuit.state is not CircuitState.CLOSED or state.ban.state not in (BanState.HEALTHY, BanState.SUSPECT)
    )


def _health_of(state: Any) -> dict[str, Any]:
    out = {f"circuit.{name}": getattr(state.circuit, name) for name in _CIRCUIT_FIELDS}
    out.update({f"ban.{name}": getattr(state.ban, name) for name in _BAN_FIELDS})
    out["ban.streaks"] = dict(out["ban.streaks"])
    return out


def _shift(
    fields: dict[str, Any],
    delta: float,
    *,
    times: frozenset[str],
    sequences: frozenset[str] = frozenset(),
    mappings: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A copy of a state's ``fields`` with its times moved by ``delta`` (from the pacing clock to the wall
    clock in Redis, or back): ``times`` names single times, ``sequences`` deques or lists of times or of
    (start, end) pairs; the dicts named in ``mappings`` are copied, never shared with ``fields``."""
    out = dict(fields)
    for name in times & out.keys():
        out[name] = float(out[name]) + delta
    for name in sequences & out.keys():
        # the same kind of container as the controller keeps (a deque, or a list it pops from the front)
        kind = list if isinstance(out[name], list) else deque
        out[name] = kind(
            tuple(t + delta for t in item) if isinstance(item, tuple) else item + delta for item in out[name]
        )
    for name in mappings & out.keys():
        out[name] = dict(out[name])
    return out


def _shift_controller(fields: dict[str, Any], delta: float) -> dict[str, Any]:
    return _shift(fields, delta, times=_TIME_FIELDS, sequences=_TIME_DEQUES)


def _shift_health(fields: dict[str, Any], delta: float) -> dict[str, Any]:
    return _shift(fields, delta, times=_HEALTH_TIMES, mappings=_HEALTH_MAPPINGS)


#: a worker reads the shared controller before a grant at most this often (and after every answer)
REFRESH_SECONDS = 0.25
#: with the site's concurrency full of other workers' requests, this worker asks again after this, twice
#: as long each time the site is still full, at most CONCURRENCY_MAX_WAIT
CONCURRENCY_FIRST_WAIT = 0.05
CONCURRENCY_MAX_WAIT = 0.8
#: while another worker's probe of a site is out, this worker looks at the site again after this at most
PROBE_RECHECK_SECONDS = 0.5
#: a probe that left the network holds the site's probe lease until its answer is stored, or this long
PROBE_LINGER_SECONDS = 2.0
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
    return RedisGate(local, limiter, token_ttl=tuning(crawler.settings).redis_lease_seconds, stats=crawler.stats)
