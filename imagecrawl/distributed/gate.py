"""The pacing middleware's rate gate, shared through Redis (the ``RateGate`` of :mod:`imagecrawl.pacing`).

:class:`RedisGate` wraps this process's :class:`imagecrawl.pacing.gate.InProcessGate` (AIMD on rate and
concurrency, Crawl-delay floor, ban state machine) and adds what must hold for all workers together:

- a request goes only when the site's shared GCRA slot (:class:`.ratelimit.RedisRateLimiter`) lets it, at
  ``min(cap, shared learned rate)``: the sum of all workers' requests stays under the cap;
- any worker's congestion answer (429, 503, gateway errors, timeouts) cuts the shared learned rate, and
  healthy answers let it grow back: one worker's 429 slows everyone;
- a Retry-After, and a ban's cool-down, pause the site for every worker.

When the shared slot is refused, the local slot is handed back untouched (the local pacing state does
not pay for the other workers' requests).
"""

from __future__ import annotations

import logging
from typing import Any

from imagecrawl.distributed.ratelimit import RedisRateLimiter
from imagecrawl.pacing import CONGESTION, Signal
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)


class RedisGate:
    def __init__(self, local: Any, limiter: RedisRateLimiter) -> None:
        self.local = local
        self.limiter = limiter

    def __getattr__(self, name: str) -> Any:  # state_of, all_abandoned, sites, ...
        return getattr(self.local, name)

    # --- admission ----------------------------------------------------------------------------
    def acquire(self, site: str, now: float, policy: bool = False) -> float:
        paused = self.limiter.paused_for(site)
        if paused > 0:
            return paused
        wait = float(self.local.acquire(site, now, policy))
        if wait > 0:
            return wait
        shared = self.limiter.acquire(site)
        if shared <= 0:
            return 0.0
        # Not now for the site as a whole: give the local slot back as it was (the local pacing state
        # does not pay for the other workers' requests).
        if not policy:
            self.local.revoke(site)
        return shared

    def admit(self, site: str, now: float) -> tuple[float, bool]:
        """What the shared frontier asks before a request leaves Redis: ``(wait, shared)``. 0: go (both
        slots are taken); else seconds before asking again, and whether that is the site's shared gate
        (every worker must wait: a pause, the shared rate slot) or this worker's own (its pacing, its
        concurrency for the site; inf when it gave the site up)."""
        paused = self.limiter.paused_for(site)
        if paused > 0:
            return paused, True
        wait = float(self.local.acquire(site, now, False))
        if wait > 0:
            return wait, False
        shared = self.limiter.acquire(site)
        if shared <= 0:
            return 0.0, False
        self.local.revoke(site)
        return shared, True

    def peek_wait(self, site: str, now: float) -> float:
        return max(float(self.local.peek_wait(site, now)), self.limiter.paused_for(site))

    def depart(self, site: str, granted_at: float, now: float) -> float:
        if now - granted_at > SHARED_LATE_SECONDS:
            # It leaves late (it waited for robots.txt): its shared slot is long past, and the other
            # workers' requests went meanwhile. It takes a fresh one (a Retry-After another worker received
            # meanwhile holds it too), so the site never sees a burst of the late ones.
            paused = self.limiter.paused_for(site)
            if paused > 0:
                return paused
            shared = self.limiter.acquire(site)
            if shared > 0:
                return shared
        return float(self.local.depart(site, granted_at, now))

    def forget_idle(self, now: float, idle_seconds: float, keep: Any) -> int:
        return int(self.local.forget_idle(now, idle_seconds, keep))

    def ended(self, site: str, now: float) -> None:
        self.local.ended(site, now)

    def release(self, site: str, sent_at: float, now: float) -> None:
        self.local.release(site, sent_at, now)

    # --- feedback -----------------------------------------------------------------------------
    def feedback(self, site: str, fb: Any, now: float) -> None:
        self.local.feedback(site, fb, now)
        if fb.retry_after is not None and fb.retry_after > 0 and self.limiter.pause(site, fb.retry_after):
            logger.info("%s: Retry-After %.1fs, every worker waits", site, fb.retry_after)
        signal = fb.signal
        if signal in CONGESTION:
            rate = self.limiter.congestion(site)
            if rate is not None:
                logger.info("%s: %s, shared rate cut to %.3g req/s", site, signal, rate)
        elif signal is Signal.OK:
            self.limiter.healthy(site)

    def verdict(self, site: str, verdict: Any, sent_at: float, now: float) -> None:
        was = self.local.state_of(site)
        self.local.verdict(site, verdict, sent_at, now)
        state = self.local.sites.get(site)
        if state is None:
            return
        banned = str(getattr(state.ban.state, "value", state.ban.state)) == "banned"
        if banned and str(getattr(was, "value", was)) != "banned":
            cooldown = state.ban.banned_until - now
            if cooldown > 0 and self.limiter.pause(site, cooldown):
                logger.warning("%s: banned, every worker stays away for %.0fs", site, cooldown)
            self.limiter.congestion(site)

    def set_floor_interval(self, site: str, seconds: float) -> None:
        self.local.set_floor_interval(site, seconds)

    def drain_events(self) -> list[Any]:
        return list(self.local.drain_events())


#: a request the frontier let out that reaches the network later than this after its grant takes a
#: fresh shared slot (the spacing's slack absorbs shorter delays)
SHARED_LATE_SECONDS = 0.1


def shared_gate(crawler: Any, local: Any) -> Any:
    """The ``IMAGECRAWL_PACING_GATE_FACTORY`` of distributed crawls: ``local`` wrapped in a
    :class:`RedisGate` when the crawl has a shared limiter, else ``local`` itself."""
    limiter = crawl_context(crawler).shared_limiter()
    if limiter is None:
        return local
    logger.info("Pacing: per-site rate, Retry-After and bans shared by all workers through Redis")
    return RedisGate(local, limiter)
