"""scrapy-redis's scheduler and dupefilter, fit for Scrapy 2.19 and for workers that die.

scrapy-redis 0.9.1 (the PyPI release) is used as a library, not pinned to a fork: its scheduler and
queue base classes work on Scrapy 2.19. What this module changes:

- :class:`RedisDupeFilter` fingerprints requests with the crawler's own ``REQUEST_FINGERPRINTER_CLASS``
  (scrapy-redis hashes method/URL/body itself, so two workers could disagree with Scrapy about what a
  duplicate is);
- :class:`LeaseQueue` pops atomically into a *lease* instead of deleting (Lua: expired leases of dead
  workers go back to the queue first, by their original priority); see :mod:`.worker`;
- :class:`RedisScheduler` persists the frontier (a worker that finishes must not clear it under the
  others), acknowledges a retried/redirected request's lease once its successor is queued, and hands
  the worker its leases.

Start requests: scrapy-redis's ``RedisSpider.start_requests()`` is gone in Scrapy 2.16+; our spiders keep
their own ``async start()`` (every worker yields the same start requests; the shared dupefilter keeps
one) and pushed seeds are fed by :meth:`.worker.Worker.feed_seeds` to any spider.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy_redis import picklecompat
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.queue import Base as RedisQueueBase
from scrapy_redis.scheduler import Scheduler as ScrapyRedisScheduler

from imagecrawl import meta
from imagecrawl.distributed.config import RedisConfig
from imagecrawl.distributed.worker import Worker, start_worker
from imagecrawl.extensions.storage import crawl_storage

logger = logging.getLogger(__name__)

# KEYS: queue, leases, lease data, lease score, lease owner, lease seq ; ARGV: ttl ms, owner
# -> {reclaimed} or {reclaimed, lease id, request data}
_POP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reclaimed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)) do
  local data = redis.call('HGET', KEYS[3], id)
  if data then
    redis.call('ZADD', KEYS[1], tonumber(redis.call('HGET', KEYS[4], id) or '0'), data)
    reclaimed = reclaimed + 1
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
end
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then return {reclaimed} end
redis.call('ZREM', KEYS[1], top[1])
local id = tostring(redis.call('INCR', KEYS[6]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
redis.call('HSET', KEYS[3], id, top[1])
redis.call('HSET', KEYS[4], id, top[2])
redis.call('HSET', KEYS[5], id, ARGV[2])
return {reclaimed, id, top[1]}
"""


class LeaseQueue(RedisQueueBase):
    """A priority queue (sorted set, like scrapy-redis's) whose pop leases instead of deleting."""

    worker: Worker

    def __init__(self, server: Any, spider: Any, key: str, serializer: Any = None) -> None:
        super().__init__(server, spider, key, serializer)
        self._pop = server.register_script(_POP)

    def bind(self, worker: Worker) -> None:
        self.worker = worker

    def __len__(self) -> int:
        return int(self.server.zcard(self.key))

    def push(self, request: Request) -> None:
        request.meta.pop(meta.LEASE, None)
        self.server.execute_command("ZADD", self.key, -request.priority, self._encode_request(request))

    def pop(self, timeout: int = 0) -> Request | None:
        w = self.worker
        k = w.keys
        result = self._pop(
            keys=[k.queue, k.leases, k.lease_data, k.lease_score, k.lease_owner, k.lease_seq],
            args=[w.ttl_ms, w.owner],
        )
        reclaimed = int(result[0])
        if reclaimed:
            w.reclaimed(reclaimed)
        if len(result) < 3:
            return None
        lease = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        w.acquired(lease)
        try:
            request = self._decode_request(result[2])
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


class RedisScheduler(ScrapyRedisScheduler):
    def __init__(self, server: Any, crawler: Crawler, config: RedisConfig, owner: str) -> None:
        keys = config.keys
        super().__init__(
            server,
            persist=True,
            queue_key=keys.queue,
            queue_cls="imagecrawl.distributed.frontier.LeaseQueue",
            dupefilter=RedisDupeFilter.for_crawler(crawler, server, keys.seen),
            dupefilter_key=keys.seen,
            serializer=picklecompat,
        )
        self.config = config
        self.stats = crawler.stats
        self.worker = start_worker(crawler, config, owner)

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
        super().open(spider)
        self.queue.bind(self.worker)

    def enqueue_request(self, request: Request) -> bool:
        # A retried or redirected request carries the lease of the one it replaces: that lease is done
        # once the new request is in the frontier (or was filtered as a duplicate).
        lease = request.meta.pop(meta.LEASE, None)
        try:
            if not request.dont_filter and self.df.request_seen(request):
                self.df.log(request, self.spider)
                return False
            self.queue.push(request)
            if self.stats is not None:
                self.stats.inc_value("scheduler/enqueued/redis")
            return True
        finally:
            if lease is not None:
                self.worker.ack(lease)

    def next_request(self) -> Request | None:
        request: Request | None = self.queue.pop()
        if request is not None and self.stats is not None:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def close(self, reason: str) -> None:
        pass  # persist: never flush the shared frontier when one worker stops


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
