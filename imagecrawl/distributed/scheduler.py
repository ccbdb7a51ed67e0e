"""scrapy-redis's scheduler and dupefilter, fit for Scrapy 2.19 and for workers that die.

scrapy-redis 0.9.1 (the PyPI release) is used as a library, not pinned to a fork: its scheduler and
queue base classes work on Scrapy 2.19. What this module changes:

- :class:`RedisDupeFilter` fingerprints requests with the crawler's own ``REQUEST_FINGERPRINTER_CLASS``
  (scrapy-redis hashes method/URL/body itself, so two workers could disagree with Scrapy about what a
  duplicate is);
- :class:`LeaseQueue` keeps a queue per site (a sorted set by priority, then the spider's order)
  and an index of the sites ordered by when each one's shared gate next opens; it pops atomically into
  a *lease* instead of deleting (Lua: expired leases of dead workers go back to their own site's queue
  first, by their original priority); see :mod:`.worker`;
- :class:`RedisScheduler` takes a request only from a site whose gate is open now (the shared pause and
  rate slot, this worker's own pacing and concurrency, bans, the dead-site circuit), so no request waits
  in the downloader holding a slot; with nothing ready it wakes the engine at the earliest ready time.
  It persists the frontier (a worker that finishes must not clear it under the others), acknowledges a
  retried/redirected request's lease once its successor is queued, and hands the worker its leases.

The Lua scripts reach site queues by names they build (``<crawl>:q:<site>``), not only by their declared
keys: one Redis server (or a single shard), as scrapy-redis itself assumes; not Redis Cluster.

Start requests: scrapy-redis's ``RedisSpider.start_requests()`` is gone in Scrapy 2.16+; our spiders keep
their own ``async start()`` (every worker yields the same start requests; the shared dupefilter keeps
one) and pushed seeds are fed by :meth:`.worker.Worker.feed_seeds` to any spider.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy_redis import picklecompat
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.queue import Base as RedisQueueBase
from scrapy_redis.scheduler import Scheduler as ScrapyRedisScheduler

from imagecrawl import meta
from imagecrawl.distributed.config import RedisConfig
from imagecrawl.distributed.downloadermiddlewares import SHARED_GRANT, pacing_uses_shared_gate
from imagecrawl.distributed.worker import _REQUEUE_BODY, Worker, start_worker
from imagecrawl.pacing.scheduler import UNPACED, EngineWakeup, wake_engine
from imagecrawl.pacing.sitekey import site_of_url
from imagecrawl.storage.extensions import crawl_storage
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

# KEYS: as worker._REQUEUE_BODY, then the order counter ; ARGV: queue prefix, priority, request data,
# site, order ("l": LIFO, "f": FIFO, "s": a start request, FIFO after the others of its priority)
# -> 1 if queued. The score is -priority plus a fraction from a counter shared by all workers, so within
# a priority the spider's order holds as in Scrapy's own queues (and the local frontier's).
_PUSH = (
    _REQUEUE_BODY
    + """
local seq = redis.call('INCR', KEYS[9]) % 4000000000
local frac = seq * 1e-10
if ARGV[5] == 's' then frac = 0.5 + frac elseif ARGV[5] == 'l' then frac = 0.5 - frac end
local added = queued_in(ARGV[4], frac - tonumber(ARGV[2]), ARGV[3], redis_now())
if added == 1 then redis.call('INCR', KEYS[7]) end
return added
"""
)

# KEYS: delayed, queued ; ARGV: due (ms, wall clock), member ("<site>\n<score>\n<data>")
_DELAY = """
if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCR', KEYS[2]) end
return 1
"""

# KEYS: as worker._REQUEUE_BODY, then delayed ; ARGV: queue prefix, offset, count
# -> {reclaimed, ms until the next site or delayed request is due (-1: none), ready sites...}
_READY = (
    _REQUEUE_BODY
    + """
local now = redis_now()
local reclaimed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)) do
  reclaimed = reclaimed + requeue(id, now)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', KEYS[9], m)
  local a = string.find(m, '\\n', 1, true)
  local b = a and string.find(m, '\\n', a + 1, true)
  if b then
    local site = string.sub(m, 1, a - 1)
    if queued_in(site, tonumber(string.sub(m, a + 1, b - 1)), string.sub(m, b + 1), now) == 0 then
      redis.call('DECR', KEYS[7])
    end
  else
    redis.call('DECR', KEYS[7])
  end
end
local out = {reclaimed, -1}
local nxt = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #nxt > 0 then out[2] = math.ceil(tonumber(nxt[2]) - now) end
local due = redis.call('ZRANGE', KEYS[9], 0, 0, 'WITHSCORES')
if #due > 0 then
  local d = math.max(0, math.ceil(tonumber(due[2]) - now))
  if out[2] < 0 or d < out[2] then out[2] = d end
end
local offset, count = tonumber(ARGV[2]), tonumber(ARGV[3])
for _, site in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', offset, count)) do
  out[#out + 1] = site
end
return out
"""
)

# KEYS: site queue, sites, queued, leases, lease data, lease score, lease owner, lease site, lease seq,
# lookahead ; ARGV: ttl ms, owner, site -> {} (the site's queue is empty) or {lease id, request data}
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {}
end
if redis.call('ZCARD', KEYS[1]) <= 8 then redis.call('DECR', KEYS[10]) end
redis.call('ZREM', KEYS[1], top[1])
redis.call('DECR', KEYS[3])
local id = tostring(redis.call('INCR', KEYS[9]))
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[1]), id)
redis.call('HSET', KEYS[5], id, top[1])
redis.call('HSET', KEYS[6], id, top[2])
redis.call('HSET', KEYS[7], id, ARGV[2])
redis.call('HSET', KEYS[8], id, ARGV[3])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  -- behind the other ready sites: across sites, the ready ones are served in turn
  redis.call('ZADD', KEYS[2], 'XX', 'GT', now, ARGV[3])
end
return {id, top[1]}
"""

# KEYS: sites ; ARGV: site, ms -> the site's shared gate opens in ms: no worker looks at it before
_DEFER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: site queue, sites, queued, lookahead ; ARGV: site -> how many requests were dropped
_DROP = """
local n = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then
  redis.call('DECRBY', KEYS[3], n)
  redis.call('DECRBY', KEYS[4], math.min(n, 8))
end
return n
"""

#: ready sites read from Redis at a time, and at most this many pages per ``next_request``
READY_PAGE = 32
READY_PAGES = 8
#: a worker with nothing ready asks Redis again after this at the latest (other workers add requests)
IDLE_POLL_SECONDS = 0.25
#: the read-ahead stops while this many requests wait in the shared frontier, whatever their sites
READ_AHEAD_MAX_QUEUED = 1_000_000
#: the longest a site is set aside for every worker before its shared gate is asked again
DEFER_MAX_SECONDS = 5.0
#: a site whose concurrency is full in this worker is looked at again after this, if no release came
RELEASE_FALLBACK_SECONDS = 1.0


class LeaseQueue(RedisQueueBase):
    """The shared frontier's queues: one sorted set per site (by -priority, as scrapy-redis's), a sites
    index ordered by when each site's shared gate next opens, and retries waiting for their backoff.
    Popping leases a request instead of deleting it (see :mod:`.worker`); all of it atomic in Lua."""

    worker: Worker
    #: within a priority, the last queued first (Scrapy's default ``SCHEDULER_MEMORY_QUEUE``, LIFO)
    lifo: bool = True

    def __init__(self, server: Any, spider: Any, key: str, serializer: Any = None) -> None:
        super().__init__(server, spider, key, serializer)
        self._push = server.register_script(_PUSH)
        self._delay = server.register_script(_DELAY)
        self._ready = server.register_script(_READY)
        self._take = server.register_script(_TAKE)
        self._defer = server.register_script(_DEFER)
        self._drop = server.register_script(_DROP)

    def bind(self, worker: Worker) -> None:
        self.worker = worker

    def __len__(self) -> int:
        return int(self.server.get(self.worker.keys.queued) or 0)

    def clear(self) -> None:
        from imagecrawl.distributed.seeds import reset_crawl

        reset_crawl(self.server, self.worker.keys)

    def push(self, request: Request, site: str = "", due: float | None = None) -> bool:
        """Queue ``request`` in ``site``'s queue, or, with ``due`` (a wall-clock time), in the delayed set
        until then. False if that very request was queued already."""
        request.meta.pop(meta.LEASE, None)
        k = self.worker.keys
        data = self._encode_request(request)
        if due is not None:  # a retry: first among its priority when due
            member = site.encode() + b"\n" + str(-request.priority).encode() + b"\n" + data
            return bool(self._delay(keys=[k.delayed, k.queued], args=[round(due * 1000), member]))
        order = "s" if request.meta.get("is_start_request") else ("l" if self.lifo else "f")
        return bool(
            self._push(
                keys=[*self.worker.lease_keys(), k.order_seq],
                args=[k.queue_prefix, request.priority, data, site, order],
            )
        )

    def ready(self, offset: int, count: int) -> tuple[list[str], float | None]:
        """Sites whose shared gate is open now (the longest ready first), and the seconds until the next
        one opens (None: none waits on time). Dead workers' expired leases and due retries go back
        to their sites' queues first."""
        w = self.worker
        k = w.keys
        result = self._ready(keys=[*w.lease_keys(), k.delayed], args=[k.queue_prefix, offset, count])
        reclaimed = int(result[0])
        if reclaimed:
            w.reclaimed(reclaimed)
        nxt = int(result[1])
        sites = [x.decode() if isinstance(x, bytes) else str(x) for x in result[2:]]
        return sites, (nxt / 1000.0 if nxt >= 0 else None)

    def defer(self, site: str, seconds: float) -> None:
        """No worker looks at ``site`` for ``seconds`` (its shared gate said so), at most
        :data:`DEFER_MAX_SECONDS`: a pause ended early (an operator's resume) is seen soon after."""
        ms = max(1, math.ceil(min(seconds, DEFER_MAX_SECONDS) * 1000))
        self._defer(keys=[self.worker.keys.sites], args=[site, ms])

    def drop(self, site: str) -> int:
        k = self.worker.keys
        return int(self._drop(keys=[k.site_queue(site), k.sites, k.queued, k.lookahead], args=[site]))

    def take(self, site: str) -> Request | bool | None:
        """Lease the site's first request: the request; False if the site's queue was empty (another
        worker took its last one); None if the request could not be decoded (dropped, counted)."""
        w = self.worker
        k = w.keys
        result = self._take(
            keys=[
                k.site_queue(site),
                k.sites,
                k.queued,
                k.leases,
                k.lease_data,
                k.lease_score,
                k.lease_owner,
                k.lease_site,
                k.lease_seq,
                k.lookahead,
            ],
            args=[w.ttl_ms, w.owner, site],
        )
        if not result:
            return False
        lease = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
        w.acquired(lease)
        try:
            request = self._decode_request(result[1])
        except Exception as exc:
            logger.error("Dropping an undecodable request from the frontier: %s", exc)
            w.stats.inc_value("imagecrawl/distributed/undecodable")
            w.ack(lease)
            return None
        request.meta[meta.LEASE] = lease
        return request


class RedisDupeFilter(RFPDupeFilter):
    """scrapy-redis's shared seen-set, keyed by Scrapy's own request fingerprints."""

    fingerprinter: Any = None

    @classmethod
    def for_crawler(cls, crawler: Crawler, server: Any, key: str) -> Self:
        df = cls(server, key=key, debug=crawler.settings.getbool("DUPEFILTER_DEBUG"))
        df.fingerprinter = crawler.request_fingerprinter
        return df

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = RedisConfig.from_settings(crawler.settings, crawler.spidercls.name)
        from redis import Redis

        return cls.for_crawler(crawler, Redis.from_url(config.url), config.keys.seen)

    def request_fingerprint(self, request: Request) -> str:
        assert self.fingerprinter is not None, "RedisDupeFilter needs a crawler (from_crawler)"
        return str(self.fingerprinter.fingerprint(request).hex())

    def close(self, reason: str = "") -> None:
        # scrapy-redis clears the seen-set on close: with many workers that would let the next worker
        # fetch everything again. The frontier persists; `imagecrawl seed --reset` clears it.
        pass


class RedisScheduler(EngineWakeup, ScrapyRedisScheduler):
    """The shared frontier, site-aware like the local one (:mod:`imagecrawl.pacing.scheduler`): a request
    leaves Redis only when its site's gate says yes (the shared rate slot and pause, this worker's
    concurrency, Crawl-delay, ban and dead-site state), so no request waits in the downloader."""

    def __init__(self, server: Any, crawler: Crawler, config: RedisConfig, owner: str) -> None:
        keys = config.keys
        super().__init__(
            server,
            persist=True,
            queue_key=keys.base,
            queue_cls="imagecrawl.distributed.scheduler.LeaseQueue",
            dupefilter=RedisDupeFilter.for_crawler(crawler, server, keys.seen),
            dupefilter_key=keys.seen,
            serializer=picklecompat,
        )
        self.crawler = crawler
        self.config = config
        self.stats = crawler.stats
        self.worker = start_worker(crawler, config, owner)
        settings = crawler.settings
        self.runtime: Any = None
        if settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            from imagecrawl.pacing.downloadermiddlewares.pacing import runtime_for

            self.runtime = runtime_for(crawler)
        from imagecrawl.pacing.config import site_key_mode

        self.site_key = site_key_mode(settings)
        self.limiter: Any = None  # the shared limiter when the pacing middleware is off
        self.first_contact_timeout = tuning(settings).policy_timeout_seconds
        if self.first_contact_timeout >= settings.getfloat("DOWNLOAD_TIMEOUT"):
            self.first_contact_timeout = 0.0
        self.forget_idle = tuning(settings).pacing_forget_idle_seconds
        self._next_forget = 0.0
        #: sites this worker does not look at before the time given (monotonic): its own pacing, or its
        #: concurrency for the site is full (then until a release)
        self._skip: dict[str, float] = {}
        self.read_ahead = max(1, tuning(settings).frontier_read_ahead)
        self._room = 0  # start requests wants_more() may still say yes to without asking Redis
        self._dropped_sites: dict[str, str] = {}
        self._timer: Any = None
        self._timer_at = math.inf
        self.clock = time.monotonic
        from scrapy.utils.asyncio import call_later

        self.call_later: Any = call_later

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = RedisConfig.from_settings(crawler.settings, crawler.spidercls.name)
        from redis import Redis

        server = Redis.from_url(config.url, health_check_interval=30)
        server.ping()
        owner = crawl_storage(crawler).run_id
        logger.info("Shared frontier %s on %s (worker %s)", config.keys.base, _safe_url(config.url), owner)
        return cls(server, crawler, config, owner)

    def open(self, spider: Any) -> None:
        self.spider = spider
        self.queue = LeaseQueue(self.server, spider, self.config.keys.base, self.serializer)
        self.queue.bind(self.worker)
        self.queue.lifo = "lifo" in str(self.crawler.settings.get("SCHEDULER_MEMORY_QUEUE")).lower()
        waiting = len(self.queue)
        if waiting:
            logger.info("Resuming the shared frontier: %d requests waiting", waiting)
        legacy = int(self.server.zcard(self.config.keys.legacy_queue))
        if legacy:
            logger.warning(
                "%s holds %d requests queued by an earlier version (one queue for all sites), which this "
                "version does not read: finish that crawl with the version that started it, or start it "
                "afresh with: imagecrawl seed --redis %s %s --reset",
                self.config.keys.legacy_queue,
                legacy,
                _safe_url(self.config.url),
                self.config.crawl,
            )
        if self.runtime is not None and not self.runtime.middleware:
            self.runtime = None  # nothing would release the slots it grants
        if self.runtime is not None:
            self.runtime.frontier = self
        else:
            from imagecrawl.storage.context import crawl_context

            if not pacing_uses_shared_gate(self.crawler.settings):
                self.limiter = crawl_context(self.crawler).shared_limiter()

    def enqueue_request(self, request: Request) -> bool:
        # A retried or redirected request carries the lease of the one it replaces: that lease is done
        # once the new request is in the frontier (or was filtered as a duplicate).
        m = request.meta
        lease = m.pop(meta.LEASE, None)
        if m.get(meta.PACING_GRANTED) is True and self.runtime is not None:
            # It came back without reaching the pacing middleware's response side: its slot is free.
            m.pop(meta.PACING_GRANTED, None)
            self.runtime.release_unsent(self.runtime.site_of(request))
        elif m.get(meta.PACING_GRANTED) == SHARED_GRANT:
            m.pop(meta.PACING_GRANTED, None)
        if m.pop(meta.FIRST_CONTACT, None):
            m.pop("download_timeout", None)
        try:
            if not request.dont_filter and self.df.request_seen(request):
                self.df.log(request, self.spider)
                return False
            site = self._site_of(request)
            reason = self._dropped_sites.get(site)
            if reason is not None:
                self._count_dropped(site, 1, reason)
                return False
            not_before = m.get(meta.NOT_BEFORE)
            due = float(not_before) if not_before is not None and float(not_before) > time.time() else None
            self.queue.push(request, site, due)
            if self.stats is not None:
                self.stats.inc_value("scheduler/enqueued/redis")
            return True
        finally:
            if lease is not None:
                self.worker.ack(lease)

    def next_request(self) -> Request | None:
        now = self.clock()
        if now >= self._next_forget:
            self._forget(now)
        skip = self._skip
        soonest = now + IDLE_POLL_SECONDS
        for page in range(READY_PAGES):
            sites, next_in = self.queue.ready(page * READY_PAGE, READY_PAGE)
            if next_in is not None:
                soonest = min(soonest, now + next_in)
            for site in sites:
                until = skip.get(site)
                if until is not None:
                    if until > now:
                        soonest = min(soonest, until)
                        continue
                    del skip[site]
                wait, shared = self._admit(site, now)
                if wait == 0:
                    request = self._take(site, now)
                    if request is not None:
                        return request
                    continue
                if math.isinf(wait):
                    self._drop(site)
                elif shared:
                    self.queue.defer(site, wait)
                    if self.stats is not None:
                        self.stats.inc_value("imagecrawl/distributed/frontier/deferred")
                    soonest = min(soonest, now + wait)
                else:
                    skip[site] = now + wait
                    soonest = min(soonest, now + wait)
            if len(sites) < READY_PAGE:
                break
        self._arm(soonest, now)
        return None

    def has_pending_requests(self) -> bool:
        return len(self) > 0

    def wants_more(self) -> bool:
        """Read-ahead, as the local frontier's: whether the spider should hand over more start requests
        now (the urls spider asks before each row). True while fewer than
        the tuning's ``frontier_read_ahead`` requests wait among the next 8 of each site, for all workers
        together (a site with a long run of the list counts as 8: the reading goes on to the other sites),
        and fewer than :data:`READ_AHEAD_MAX_QUEUED` wait in all (Redis holds them). Redis is asked
        again only once the room it reported is used up."""
        if self._room > 0:
            self._room -= 1
            return True
        k = self.config.keys
        lookahead, queued = self.server.mget([k.lookahead, k.queued])
        room = min(self.read_ahead - int(lookahead or 0), READ_AHEAD_MAX_QUEUED - int(queued or 0))
        if room <= 0:
            return False
        self._room = room - 1
        return True

    def close(self, reason: str) -> None:
        # persist: never flush the shared frontier when one worker stops
        self._cancel_timer()
        if self.runtime is not None and getattr(self.runtime, "frontier", None) is self:
            self.runtime.frontier = None

    # --- the gate -----------------------------------------------------------------------------

    def _site_of(self, request: Request) -> str:
        if request.meta.get(meta.DONT_PACE) or not request.url.startswith(("http://", "https://")):
            return UNPACED
        if self.runtime is not None:
            return str(self.runtime.site_of(request))
        return site_of_url(request.url, self.site_key)

    def _admit(self, site: str, now: float) -> tuple[float, bool]:
        """(0, _): go, the slot is taken; (seconds, shared): ask again then, for every worker (the
        shared gate) or for this one (its own pacing, or its concurrency for the site is full);
        (inf, _): the site is given up."""
        if site == UNPACED:
            return 0.0, False
        rt = self.runtime
        if rt is None:
            if self.limiter is None:
                return 0.0, False
            return float(self.limiter.acquire(site)), True
        gate = rt.gate
        admit = getattr(gate, "admit", None)
        if admit is not None:
            wait, shared = admit(site, now)
        else:
            wait, shared = float(gate.acquire(site, now)), False
        rt.flush()
        if wait > 0 and not math.isinf(wait) and not shared:
            state = gate.sites.get(site)
            if state is not None and state.held_by_window:
                wait = RELEASE_FALLBACK_SECONDS
        return float(wait), bool(shared)

    def _take(self, site: str, now: float) -> Request | None:
        got = self.queue.take(site)
        if not isinstance(got, Request):
            # Another worker took the site's last request, or it was undecodable: the slot is unused.
            if self.runtime is not None and site != UNPACED:
                self.runtime.gate.revoke(site)
            if got is False and self.stats is not None:
                self.stats.inc_value("imagecrawl/distributed/frontier/empty_grant")
            return None
        request = got
        m = request.meta
        if site != UNPACED:
            if self.runtime is not None:
                m[meta.PACING_GRANTED] = True
                m[meta.SENT_AT] = now
                if self.first_contact_timeout and "download_timeout" not in m and not self.runtime.gate.answered(site):
                    m["download_timeout"] = self.first_contact_timeout
                    m[meta.FIRST_CONTACT] = True
                if self.stats is not None:
                    self.stats.inc_value("imagecrawl/pacing/requests")
            elif self.limiter is not None:
                m[meta.PACING_GRANTED] = SHARED_GRANT
                m[meta.SENT_AT] = time.monotonic()
        if self.stats is not None:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def released(self, site: str) -> None:
        """A request of ``site`` ended (the pacing middleware tells): if this worker held the site back
        for its concurrency, look at it again now."""
        if self._skip.pop(site, None) is not None:
            wake_engine(self._engine())

    def _drop(self, site: str) -> None:
        dead = self.runtime is not None and bool(self.runtime.gate.dead(site))
        reason = "dead_site" if dead else "banned"
        first = site not in self._dropped_sites
        self._dropped_sites[site] = reason
        # Redis drops the site's queue at once, for every worker: each request is counted by the worker
        # that dropped it, the site by the first worker to give it up
        n = self.queue.drop(site)
        if first:
            give_up = getattr(self.runtime.gate, "give_up", None) if self.runtime is not None else None
            counted = bool(give_up(site)) if give_up is not None else True
            if reason == "dead_site" and self.stats is not None and counted:
                self.stats.inc_value("imagecrawl/frontier/dead_sites")
            logger.warning("Site %s: dropping its %d queued requests (and any later): %s", site, n, reason)
        self._count_dropped(site, n, reason)

    def _count_dropped(self, site: str, n: int, reason: str) -> None:
        if n and self.stats is not None:
            self.stats.inc_value(f"imagecrawl/frontier/dropped/{reason}", n)
            if reason == "banned":
                self.stats.inc_value("imagecrawl/bans/dropped", n)

    def _forget(self, now: float) -> None:
        """Every so often: forget this worker's state of sites long idle (bounded memory)."""
        self._next_forget = now + max(1.0, self.forget_idle / 10)
        for site in [s for s, until in self._skip.items() if until <= now]:
            del self._skip[site]
        if self.forget_idle > 0 and self.runtime is not None:
            n = self.runtime.gate.forget_idle(now, self.forget_idle, lambda site: site in self._dropped_sites)
            if n and self.stats is not None:
                self.stats.inc_value("imagecrawl/pacing/forgotten", n)
            self.runtime.forget(lambda site: site in self._dropped_sites)


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
