"""One polite crawler, however many workers: a per-site rate limit shared through Redis.

Every request to a site, from any worker, first takes a slot from that site's GCRA (generic cell rate
algorithm, the token bucket without a refill timer) in a Lua script run atomically by Redis, on Redis's
own clock, so workers on machines with skewed clocks still agree. The emission interval is
``1 / min(cap, learned rate)``:

- ``cap``: the site's configured maximum (``IMAGECRAWL_MAX_RATE_PER_SITE``);
- ``learned rate``: shared by all workers; any worker's congestion signal (429, 503, ...) cuts it
  multiplicatively (once per epoch, so one burst of 429s is one cut), healthy answers raise it slowly;
- a shared *pause* (Retry-After, a ban's cool-down) closes the site for every worker until it ends.

So one worker's 429 slows everyone, and the sum of all workers' requests stays under the cap. With the
pacing middleware on, :class:`.gate.RedisGate` keeps each site's AIMD controller here instead of the
simple learned rate (``ctl_rate``, ``ctl_conc`` and the version ``v`` in the rate hash, the state under
``:ctl``) and admits through :meth:`RedisRateLimiter.admit`: pause, concurrency over all workers (the
``:inflight`` tokens) and rate slot in one atomic step. Pure
Redis + asyncio, no Scrapy: the Scrapy shells are :class:`GlobalRateMiddleware` below and
:class:`RedisGate`, which wraps the pacing middleware's in-process gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis

from imagecrawl import defaults
from imagecrawl.distributed.config import redis_url
from imagecrawl.tuning import DEFAULTS, tuning

# KEYS: tat, learned rate hash, pause ; ARGV: cap (req/s), min rate, burst (requests), spacing factor
# -> wait in ms as a string ("0": admitted)
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return tostring(pause) end
local cap = tonumber(ARGV[1])
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate') or ARGV[1])
if rate > cap then rate = cap end
if rate < tonumber(ARGV[2]) then rate = tonumber(ARGV[2]) end
local interval = 1000 * tonumber(ARGV[4]) / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (tonumber(ARGV[3]) - 1) * interval
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 60000)
return '0'
"""

# KEYS: learned rate hash ; ARGV: cap, min rate, factor, epoch ms -> new rate ("" if not cut: same epoch)
_CUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local last = tonumber(redis.call('HGET', KEYS[1], 'cut_at') or '0')
if now - last < tonumber(ARGV[4]) then return '' end
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[1])
if rate > tonumber(ARGV[1]) then rate = tonumber(ARGV[1]) end
rate = math.max(tonumber(ARGV[2]), rate * tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'cut_at', tostring(now), 'raised_at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 86400000)
return tostring(rate)
"""

# KEYS: learned rate hash ; ARGV: cap, step (req/s per second), epoch ms -> new rate
_RAISE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate = redis.call('HGET', KEYS[1], 'rate')
if not rate then return ARGV[1] end
rate = tonumber(rate)
local last = tonumber(redis.call('HGET', KEYS[1], 'raised_at') or '0')
local elapsed = now - last
if elapsed < tonumber(ARGV[3]) then return tostring(rate) end
rate = math.min(tonumber(ARGV[1]), rate + tonumber(ARGV[2]) * elapsed / 1000)
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'raised_at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 86400000)
return tostring(rate)
"""

# KEYS: pause ; ARGV: ms -> 1 if the pause was extended
_PAUSE = """
local ms = math.ceil(tonumber(ARGV[1]))
if redis.call('PTTL', KEYS[1]) >= ms then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ms)
return 1
"""


# The pacing middleware's admission, one atomic step for every worker: the pause (Retry-After, a ban's
# cool-down), the site's concurrency across all workers, then the GCRA slot at min(cap, learned rate,
# the shared controller's rate). A request that passes holds an in-flight token until it ends.
# KEYS: tat, rate hash, pause, in-flight set, health ; ARGV: cap, min rate, burst, spacing, concurrency
# when the shared controller has none yet, token ("": a policy fetch or a probe, no concurrency slot),
# token ttl ms -> {wait ms, why (0 admitted, 1 paused, 2 rate, 3 concurrency), controller version,
# health version}
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local h = redis.call('HMGET', KEYS[2], 'rate', 'ctl_rate', 'ctl_conc', 'v')
local version = tonumber(h[4] or '0')
local hv = tonumber(redis.call('HGET', KEYS[5], 'v') or '0')
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return {pause, 1, version, hv} end
local cap = tonumber(ARGV[1])
local rate = tonumber(h[1] or ARGV[1])
if h[2] and tonumber(h[2]) < rate then rate = tonumber(h[2]) end
if rate > cap then rate = cap end
if rate < tonumber(ARGV[2]) then rate = tonumber(ARGV[2]) end
local token = ARGV[6]
if token ~= '' then
  local limit = tonumber(h[3] or ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= limit then
    redis.call('HSET', KEYS[2], 'lim_c', '1')
    return {0, 3, version, hv}
  end
end
local interval = 1000 * tonumber(ARGV[4]) / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - (tonumber(ARGV[3]) - 1) * interval
if now < allow_at then
  redis.call('HSET', KEYS[2], 'lim_r', '1')
  return {math.max(1, math.ceil(allow_at - now)), 2, version, hv}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 60000)
if token ~= '' then
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), token)
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[7]))
end
return {0, 0, version, hv}
"""

# The shared rate controller of a site (one for all workers): its state, a version, and whether the
# shared gate held requests back since it was last read (the controller grows only when its limit binds).
# With it, the site's shared health (the dead-site circuit and the ban state machine: a hash of a version
# ``v`` and the state ``s``), read in the same round trip.
# KEYS: rate hash, controller, health ; ARGV: the controller version the caller holds, its health version
# -> {version, the state ("" when the caller holds that version, or there is none), rate held, concurrency
# held, health version, health state ("" likewise)}
_CTL_LOAD = """
local h = redis.call('HMGET', KEYS[1], 'v', 'lim_r', 'lim_c')
redis.call('HDEL', KEYS[1], 'lim_r', 'lim_c')
local version = tonumber(h[1] or '0')
local state = ''
if version ~= tonumber(ARGV[1]) then state = redis.call('GET', KEYS[2]) or '' end
local health = redis.call('HMGET', KEYS[3], 'v', 's')
local hv = tonumber(health[1] or '0')
local hs = ''
if hv ~= tonumber(ARGV[2]) then hs = health[2] or '' end
return {version, state, h[2] and 1 or 0, h[3] and 1 or 0, hv, hs}
"""

# The site's health, one state for every worker, compare-and-set like the controller.
# KEYS: health ; ARGV: the version the state was derived from, the new state
# -> {1, new version} or {0, current version, current state}: another worker wrote first
_HEALTH_SAVE = """
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then return {0, version, redis.call('HGET', KEYS[1], 's') or ''} end
version = version + 1
redis.call('HSET', KEYS[1], 'v', version, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 86400000)
return {1, version}
"""

# One probe of a dead-site circuit or a ban at a time, over all workers.
# KEYS: probe ; ARGV: owner, ttl ms -> 0: this owner probes; else ms until the other's probe lease ends
_PROBE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""

# KEYS: probe ; ARGV: owner, linger ms -> 1 if this owner's probe lease ended (or ends after ``linger``:
# its answer is not recorded yet)
_PROBE_END = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return redis.call('DEL', KEYS[1])
"""

# KEYS: rate hash, controller ; ARGV: the version the state was derived from, the new state, its rate,
# its concurrency -> {1, new version} or {0, current version, current state}: another worker wrote first
_CTL_SAVE = """
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then return {0, version, redis.call('GET', KEYS[2]) or ''} end
version = version + 1
redis.call('HSET', KEYS[1], 'v', version, 'ctl_rate', ARGV[3], 'ctl_conc', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', 86400000)
redis.call('PEXPIRE', KEYS[1], 86400000)
return {1, version}
"""


#: the length of one rate epoch of the shared limiter
EPOCH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RateConfig:
    cap: float = defaults.IMAGECRAWL_MAX_RATE_PER_SITE  # requests/second per site, for all workers together
    min_rate: float = DEFAULTS.pacing_min_rate_per_second
    burst: int = DEFAULTS.redis_rate_burst  # requests allowed back to back (1: strictly spaced)
    decrease_factor: float = DEFAULTS.pacing_decrease_factor
    increase_per_second: float = DEFAULTS.redis_rate_increase_per_second  # growth, as a fraction of the cap per second
    epoch_seconds: float = EPOCH_SECONDS
    #: intervals are this much longer than 1/rate, so network jitter never pushes a second over the cap
    spacing: float = DEFAULTS.redis_rate_spacing

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.cap:
            raise ValueError(f"need 0 < min rate <= cap, got {self.min_rate} and {self.cap}")
        if self.burst < 1:
            raise ValueError("burst must be >= 1")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")
        if self.spacing < 1:
            raise ValueError("spacing must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> RateConfig:
        cap = settings.getfloat("IMAGECRAWL_MAX_RATE_PER_SITE")
        return cls(
            cap=cap,
            min_rate=min(cap, tuning(settings).pacing_min_rate_per_second),
            burst=max(1, tuning(settings).redis_rate_burst),
            decrease_factor=tuning(settings).pacing_decrease_factor,
            increase_per_second=tuning(settings).redis_rate_increase_per_second,
            spacing=tuning(settings).redis_rate_spacing,
        )


class RedisRateLimiter:
    """The shared per-site state: GCRA slot, learned rate, pause. Keys ``<prefix>:site:<site>:*``."""

    def __init__(self, client: redis.Redis, prefix: str, config: RateConfig) -> None:
        self.redis = client
        self.prefix = prefix
        self.config = config
        self._acquire = client.register_script(_ACQUIRE)
        self._cut = client.register_script(_CUT)
        self._raise = client.register_script(_RAISE)
        self._pause = client.register_script(_PAUSE)
        self._admit = client.register_script(_ADMIT)
        self._ctl_load = client.register_script(_CTL_LOAD)
        self._ctl_save = client.register_script(_CTL_SAVE)
        self._health_save = client.register_script(_HEALTH_SAVE)
        self._probe = client.register_script(_PROBE)
        self._probe_end = client.register_script(_PROBE_END)

    def _keys(self, site: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:site:{site}"
        return f"{base}:tat", f"{base}:rate", f"{base}:pause"

    def _more_keys(self, site: str) -> tuple[str, str]:
        base = f"{self.prefix}:site:{site}"
        return f"{base}:inflight", f"{base}:ctl"

    def _health_keys(self, site: str) -> tuple[str, str, str]:
        """The site's shared health, its probe lease, and its given-up mark."""
        base = f"{self.prefix}:site:{site}"
        return f"{base}:health", f"{base}:probe", f"{base}:gone"

    def admit(self, site: str, token: str, concurrency: int, token_ttl: float) -> tuple[float, int, int, int]:
        """The pause, the site's concurrency over all workers (``token`` "": not counted) and the rate
        slot, in one atomic step: ``(wait seconds, why, controller version, health version)``; ``why`` is
        one of :data:`ADMITTED`, :data:`PAUSED`, :data:`RATE`, :data:`CONCURRENCY` (then wait is 0: until
        a request of the site ends)."""
        c = self.config
        tat, rate, pause = self._keys(site)
        inflight = self._more_keys(site)[0]
        got = self._admit(
            keys=[tat, rate, pause, inflight, self._health_keys(site)[0]],
            args=[c.cap, c.min_rate, c.burst, c.spacing, max(1, concurrency), token, max(1, round(token_ttl * 1000))],
        )
        return int(got[0]) / 1000.0, int(got[1]), int(got[2]), int(got[3])

    def end(self, site: str, token: str) -> None:
        """A request admitted with ``token`` ended: its concurrency slot is free for every worker."""
        self.redis.zrem(self._more_keys(site)[0], token)

    def load_controller(self, site: str, version: int, health: int = -1) -> SharedSite:
        """The site's shared controller and health, in one round trip: each state is None when the
        version given is current or there is none; the two held-back flags are cleared."""
        keys = [self._keys(site)[1], self._more_keys(site)[1], self._health_keys(site)[0]]
        got = self._ctl_load(keys=keys, args=[version, health])
        return SharedSite(
            int(got[0]), bytes(got[1]) or None, bool(int(got[2])), bool(int(got[3])), int(got[4]), bytes(got[5]) or None
        )

    def save_health(self, site: str, version: int, state: bytes) -> tuple[bool, int, bytes | None]:
        """Store the site's health derived from ``version``: ``(True, new version, None)``, or, when
        another worker stored one meanwhile, ``(False, its version, its state)``."""
        got = self._health_save(keys=[self._health_keys(site)[0]], args=[version, state])
        if int(got[0]):
            return True, int(got[1]), None
        return False, int(got[1]), (bytes(got[2]) or None)

    def take_probe(self, site: str, owner: str, ttl: float) -> float:
        """0: ``owner`` sends the site's one probe (until :meth:`end_probe`, or ``ttl`` if it dies);
        else seconds until the probe another worker sends ends at the latest."""
        got = self._probe(keys=[self._health_keys(site)[1]], args=[owner, max(1, round(ttl * 1000))])
        return int(got) / 1000.0

    def end_probe(self, site: str, owner: str, linger: float = 0.0) -> None:
        """``owner``'s probe ended: now, or ``linger`` seconds from now at the latest (the probe left the
        network but what it told is not stored yet)."""
        self._probe_end(keys=[self._health_keys(site)[1]], args=[owner, max(0, round(linger * 1000))])

    def give_up(self, site: str) -> bool:
        """Mark the site given up for every worker: True for the first worker to do so (it counts it)."""
        return bool(self.redis.set(self._health_keys(site)[2], "1", nx=True, px=86_400_000))

    def save_controller(
        self, site: str, version: int, state: bytes, rate: float, concurrency: int
    ) -> tuple[bool, int, bytes | None]:
        """Store the controller derived from ``version``: ``(True, new version, None)``, or, when another
        worker stored one meanwhile, ``(False, its version, its state)``."""
        keys = [self._keys(site)[1], self._more_keys(site)[1]]
        got = self._ctl_save(keys=keys, args=[version, state, repr(float(rate)), max(1, concurrency)])
        if int(got[0]):
            return True, int(got[1]), None
        return False, int(got[1]), (bytes(got[2]) or None)

    def acquire(self, site: str, cap: float | None = None) -> float:
        """0.0 when this request may go now (its slot is taken), else seconds to wait before asking again."""
        c = self.config
        tat, rate, pause = self._keys(site)
        wait_ms = float(self._acquire(keys=[tat, rate, pause], args=[cap or c.cap, c.min_rate, c.burst, c.spacing]))
        return wait_ms / 1000.0

    def pause(self, site: str, seconds: float) -> bool:
        """Close the site for every worker for ``seconds`` (never shortens a longer pause)."""
        if not seconds > 0 or math.isinf(seconds):
            return False
        return bool(self._pause(keys=[self._keys(site)[2]], args=[seconds * 1000]))

    def resume(self, site: str) -> None:
        """End a pause now (an operator's decision; the site's own Retry-After should be respected)."""
        self.redis.delete(self._keys(site)[2])

    def paused_for(self, site: str) -> float:
        ms = int(self.redis.pttl(self._keys(site)[2]))
        return ms / 1000.0 if ms > 0 else 0.0

    def congestion(self, site: str) -> float | None:
        """Cut the shared learned rate (once per epoch); the new rate, or None if already cut this epoch."""
        c = self.config
        got = self._cut(keys=[self._keys(site)[1]], args=[c.cap, c.min_rate, c.decrease_factor, c.epoch_seconds * 1000])
        text = got.decode() if isinstance(got, bytes) else str(got)
        return float(text) if text else None

    def healthy(self, site: str) -> float:
        """A healthy answer: let the learned rate grow back toward the cap (at most once per epoch)."""
        c = self.config
        got = self._raise(
            keys=[self._keys(site)[1]], args=[c.cap, c.cap * c.increase_per_second, c.epoch_seconds * 1000]
        )
        return float(got.decode() if isinstance(got, bytes) else got)

    def rate(self, site: str) -> float:
        """The rate every worker together keeps to now: the cap, the learned rate, the shared controller's."""
        rate = self.config.cap
        for value in self.redis.hmget(self._keys(site)[1], ["rate", "ctl_rate"]):
            if value is not None:
                rate = min(rate, float(value.decode() if isinstance(value, bytes) else value))
        return rate


@dataclass(frozen=True, slots=True)
class SharedSite:
    """What :meth:`RedisRateLimiter.load_controller` read."""

    version: int
    controller: bytes | None
    rate_held: bool
    concurrency_held: bool
    health_version: int
    health: bytes | None


#: why :meth:`RedisRateLimiter.admit` answered as it did
ADMITTED, PAUSED, RATE, CONCURRENCY = 0, 1, 2, 3


def limiter_for(crawler: Any) -> RedisRateLimiter | None:
    """The crawl's shared limiter (``IMAGECRAWL_SHARED_LIMITER_FACTORY``, set by the add-on): one per
    crawl, reached through :meth:`imagecrawl.storage.context.CrawlContext.shared_limiter`."""
    settings = crawler.settings
    url = redis_url(settings)
    if not url or not tuning(settings).redis_rate_enabled:
        return None
    prefix = str(settings.get("IMAGECRAWL_REDIS_PREFIX"))
    return RedisRateLimiter(redis.Redis.from_url(url), prefix, RateConfig.from_settings(settings))
