"""The per-process side of the shared frontier: leases, their renewal and acknowledgement, liveness,
seeds, and when a worker may stop.

A request popped from the Redis frontier is *leased* to this worker, not removed: the lease lives in
Redis with a deadline that this worker's heartbeat keeps pushing forward. The lease is acknowledged
(deleted) only once the request's work is durable elsewhere:

- a page: when its callback's output has been handled (the requests it yielded are in the frontier);
- an image: when the item it produced is committed to the store (or dropped), or when it produced none;
- a request that failed or was ignored in the downloader: then; one that is retried or redirected: when
  the new request is in the frontier.

If the worker dies, its heartbeat stops, its leases expire and the next pop by any worker puts them back
into the queue: nothing a dead worker took is lost. A worker stops only when the queue, the seeds and
every worker's leases are empty, so the last ones finish (or take over) the work of the others.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from typing import Any

import redis
from itemadapter import ItemAdapter
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.distributed.config import RedisConfig, alive_prefix
from imagecrawl.storage.context import crawl_context
from imagecrawl.storage.extensions import crawl_storage

logger = logging.getLogger(__name__)

# KEYS: leases, lease data, lease score, lease owner, lease site, sites, queued, lookahead ;
# ARGV: queue prefix, ... A lease goes back to its own site's queue with its original priority (shared
# with .frontier's scripts). lookahead: the sum over sites of min(queued, LOOKAHEAD_PER_SITE).
_REQUEUE_BODY = """
local LOOK = 8
local function queued_in(site, score, data, now)
  local q = ARGV[1] .. site
  if redis.call('ZADD', q, score, data) == 0 then return 0 end
  if redis.call('ZCARD', q) <= LOOK then redis.call('INCR', KEYS[8]) end
  redis.call('ZADD', KEYS[6], 'NX', now, site)
  return 1
end
local function requeue(id, now)
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    local site = redis.call('HGET', KEYS[5], id) or ''
    if queued_in(site, tonumber(redis.call('HGET', KEYS[3], id) or '0'), data, now) == 1 then
      redis.call('INCR', KEYS[7])
    end
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  return data and 1 or 0
end
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# ARGV: queue prefix, lease ids...
_REQUEUE = (
    _REQUEUE_BODY
    + """
local now = redis_now()
local n = 0
for i = 2, #ARGV do n = n + requeue(ARGV[i], now) end
return n
"""
)

# KEYS: leases, lease data, lease score, lease owner, lease site ; ARGV: lease ids...
_ACK = """
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('HDEL', KEYS[5], ARGV[i])
end
return n
"""

# KEYS: leases ; ARGV: ttl ms, lease ids... -> the ids that were no longer there to renew
_RENEW = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], deadline, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"""


class Worker:
    """One per crawler (see :func:`worker_for`); created by the Redis scheduler."""

    def __init__(self, crawler: Crawler, config: RedisConfig, owner: str) -> None:
        self.crawler = crawler
        self.config = config
        self.keys = config.keys
        self.owner = owner
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.redis: redis.Redis = redis.Redis.from_url(config.url, health_check_interval=30)
        self.ttl_ms = int(config.lease_seconds * 1000)
        self.alive_key = alive_prefix(config.prefix) + owner
        self._requeue = self.redis.register_script(_REQUEUE)
        self._ack = self.redis.register_script(_ACK)
        self._renew = self.redis.register_script(_RENEW)
        self.held: set[str] = set()
        #: leases whose callback has finished (their remaining work is their items)
        self._called_back: set[str] = set()
        #: lease -> number of its items not yet committed or dropped
        self._items_open: dict[str, int] = defaultdict(int)
        self._by_object: dict[int, tuple[Any, str, str]] = {}  # id(item) -> (item, lease, record id)
        self._by_record: dict[str, list[int]] = defaultdict(list)  # record id -> [id(item)]
        ledger = crawl_storage(crawler).ledger
        listeners = getattr(ledger, "commit_listeners", None)
        # Without a shared ledger that reports commits, an item's lease ends when it leaves the pipelines.
        self.wait_for_commit = _writes_shards(crawler) and listeners is not None
        if listeners is not None:
            listeners.append(self.records_committed)
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self.touch()
        crawler.signals.connect(self._engine_started, signal=signals.engine_started)
        crawler.signals.connect(self._spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self._item_settled, signal=signals.item_dropped)
        crawler.signals.connect(self._item_settled, signal=signals.item_error)
        crawler.signals.connect(self._item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self._spider_error, signal=signals.spider_error)
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)

    # -- liveness ------------------------------------------------------------------------------
    def touch(self) -> None:
        """Mark this worker alive for half a lease: it always expires before the worker's leases do,
        so by the time a dead worker's leases come back, its dedupe reservations count no more."""
        self.redis.set(self.alive_key, b"1", px=max(1, self.ttl_ms // 2))

    def _engine_started(self) -> None:
        # A thread, not a task of the crawl's event loop: a loop busy parsing for a few seconds must not
        # look like a dead worker (its claims would lapse and its leases would be redone).
        self._beat = threading.Thread(target=self._heartbeat, name="imagecrawl-lease-heartbeat", daemon=True)
        self._beat.start()
        self.feed_seeds()

    def _heartbeat(self) -> None:
        interval = self.config.lease_seconds / 6
        while not self._stop.wait(interval):
            try:
                self.renew()
            except redis.RedisError as exc:
                self.stats.inc_value("imagecrawl/distributed/redis_errors")
                logger.error("Renewing leases in Redis failed: %s", exc)

    def renew(self) -> None:
        self.touch()
        held = list(self.held)  # a copy: the crawl's thread adds and removes leases meanwhile
        if not held:
            return
        gone = [
            x.decode() if isinstance(x, bytes) else str(x)
            for x in self._renew(keys=[self.keys.leases], args=[self.ttl_ms, *held])
        ]
        lost = [lease for lease in gone if lease in self.held]  # not merely acknowledged meanwhile
        if lost:
            # Only possible after this process stalled for longer than a lease.
            self.stats.inc_value("imagecrawl/distributed/leases/lost", len(lost))
            logger.warning("%d lease(s) expired before renewal; other workers may repeat them", len(lost))

    # -- leases --------------------------------------------------------------------------------
    def acquired(self, lease: str) -> None:
        self.held.add(lease)
        self.stats.inc_value("imagecrawl/distributed/leases/acquired")

    def ack(self, lease: str | None) -> None:
        if lease is None or lease not in self.held:
            return
        self.held.discard(lease)
        self._called_back.discard(lease)
        self._items_open.pop(lease, None)
        k = self.keys
        self._ack(keys=[k.leases, k.lease_data, k.lease_score, k.lease_owner, k.lease_site], args=[lease])
        self.stats.inc_value("imagecrawl/distributed/leases/acked")

    def requeue_held(self) -> int:
        """Give every lease still held back to the queue at once (a clean stop mid-crawl)."""
        held = list(self.held)
        if not held:
            return 0
        k = self.keys
        n = int(self._requeue(keys=self.lease_keys(), args=[k.queue_prefix, *held]))
        self.held.clear()
        self.stats.inc_value("imagecrawl/distributed/leases/requeued", n)
        return n

    def lease_keys(self) -> list[str]:
        """The keys of :data:`_REQUEUE_BODY` (leases, their data, score, owner and site; sites, queued,
        lookahead)."""
        k = self.keys
        return [k.leases, k.lease_data, k.lease_score, k.lease_owner, k.lease_site, k.sites, k.queued, k.lookahead]

    def reclaimed(self, n: int) -> None:
        """Leases of a dead worker came back. It may have died between putting a shard into the store and
        recording it in the ledger: index such shards now, before redoing its work writes them twice."""
        self.stats.inc_value("imagecrawl/distributed/leases/reclaimed", n)
        logger.warning("Took back %d request(s) whose worker stopped renewing its lease", n)
        storage = crawl_storage(self.crawler)
        try:
            added = storage.ledger.reconcile(storage.store)
        except Exception as exc:
            logger.error("Could not check the store for a dead worker's last shards: %s", exc)
            return
        if added:
            self.stats.inc_value("imagecrawl/dedupe/reconciled_shards", added)

    def bind_item(self, lease: str, item: Any) -> None:
        """The item came from the request holding ``lease``: ack it when the item is committed."""
        if lease not in self.held:
            return
        record_id = str(ItemAdapter(item).get("id") or "")
        self._items_open[lease] += 1
        self._by_object[id(item)] = (item, lease, record_id)
        if record_id:
            self._by_record[record_id].append(id(item))

    def callback_done(self, lease: str | None) -> None:
        if lease is None or lease not in self.held:
            return
        self._called_back.add(lease)
        if self._items_open.get(lease, 0) <= 0:
            self.ack(lease)

    def _settle_object(self, key: int) -> None:
        entry = self._by_object.pop(key, None)
        if entry is None:
            return
        _, lease, record_id = entry
        if record_id and key in self._by_record.get(record_id, []):
            self._by_record[record_id].remove(key)
            if not self._by_record[record_id]:
                del self._by_record[record_id]
        self._items_open[lease] -= 1
        if self._items_open[lease] <= 0 and lease in self._called_back:
            self.ack(lease)

    def _item_settled(self, item: Any, **_: Any) -> None:
        self._settle_object(id(item))

    def _item_scraped(self, item: Any, **_: Any) -> None:
        if not self.wait_for_commit:
            self._settle_object(id(item))

    def records_committed(self, record_ids: list[str]) -> None:
        """Listener of the ledger: these records are in the store now."""
        for record_id in record_ids:
            keys = self._by_record.get(record_id)
            if keys:
                self._settle_object(keys[0])

    def _spider_opened(self) -> None:
        """Hook the end of every request's processing. Scrapy has no signal for "the scraper is done with
        this request": responses, download errors, requests ignored by a middleware (also in
        ``process_response``, e.g. an opt-out) and their callbacks' or errbacks' output all end in the
        scraper slot's ``finish_response``, after every request they yielded was scheduled."""
        engine = self.crawler.engine
        slot = getattr(getattr(engine, "scraper", None), "slot", None)
        if slot is None:
            raise RuntimeError("Scrapy's scraper slot is missing: cannot track the end of leased requests")
        finish = slot.finish_response

        def finish_response(result: Any, request: Request) -> None:
            try:
                finish(result, request)
            finally:
                self._request_done(result, request)

        slot.finish_response = finish_response

    def _request_done(self, result: Any, request: Request) -> None:
        lease = request.meta.get(meta.LEASE)
        if lease is None:
            return
        if not isinstance(result, Response) and _closing(self.crawler):
            # Dropped because this worker is stopping (e.g. waiting at the pacing gate): not done. The
            # lease stays held and goes back to the queue when the spider closes.
            return
        self.callback_done(lease)

    def _spider_error(self, failure: Any, response: Any, **_: Any) -> None:
        request = getattr(response, "request", None)
        if request is not None:
            self.callback_done(request.meta.get(meta.LEASE))

    # -- seeds ---------------------------------------------------------------------------------
    def feed_seeds(self) -> int:
        """Move up to a batch of pushed seeds into the frontier (through this crawl's dupefilter)."""
        spider = self.crawler.spider
        engine = self.crawler.engine
        if spider is None or engine is None:
            return 0
        raw: Any = self.redis.lpop(self.keys.seeds, self.config.seed_batch)
        fed = 0
        for data in raw or []:
            request = seed_request(spider, data)
            if request is None:
                self.stats.inc_value("imagecrawl/distributed/seeds/invalid")
                continue
            engine.crawl(request)
            fed += 1
        if fed:
            self.stats.inc_value("imagecrawl/distributed/seeds/fed", fed)
            logger.info("Took %d seed(s) from %s", fed, self.keys.seeds)
        return fed

    # -- stopping ------------------------------------------------------------------------------
    def _spider_idle(self) -> None:
        if self.feed_seeds():
            raise DontCloseSpider
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.queued)
            pipe.zcard(k.leases)
            pipe.llen(k.seeds)
            queued_raw, leased_raw, seeds_raw = pipe.execute()
            queued, leased, seeds = int(queued_raw or 0), int(leased_raw), int(seeds_raw)
        if queued or leased or seeds:
            # Another worker is still busy (its work may add requests, or come back if it dies), or
            # this worker's own last items are on their way into the store.
            self.stats.inc_value("imagecrawl/distributed/idle_waits")
            logger.debug("Idle but the crawl is not done: queued=%d leased=%d seeds=%d", queued, leased, seeds)
            raise DontCloseSpider
        self._say_if_drained()

    def _say_if_drained(self) -> None:
        """A run that found the shared frontier already drained (every request it made was seen by an
        earlier run, so it crawled nothing) says so, with the command that starts the crawl afresh."""
        if self.stats.get_value("scheduler/enqueued/redis") or self.stats.get_value("scheduler/dequeued/redis"):
            return
        self.stats.set_value("imagecrawl/distributed/drained", 1)
        from imagecrawl.distributed.scheduler import _safe_url

        logger.warning(
            "The shared frontier %s is already drained: every request of this run was seen by an earlier run "
            "of the crawl, so nothing was crawled. To crawl it again (e.g. with a higher max_items), clear "
            "its frontier first (the dedupe ledger stays): imagecrawl seed --redis %s %s --reset",
            self.keys.base,
            _safe_url(self.config.url),
            self.config.crawl,
        )

    def _spider_closed(self, reason: str) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            n = self.requeue_held()
            if n:
                logger.info("Put %d unfinished request(s) back into the shared frontier", n)
            self.redis.delete(self.alive_key)
        except redis.RedisError as exc:
            logger.error(
                "Could not hand unfinished requests back to Redis (they return after %.0f s): %s",
                self.config.lease_seconds,
                exc,
            )
        self.redis.close()


def _closing(crawler: Crawler) -> bool:
    engine = crawler.engine
    if engine is None or not engine.running:
        return True
    slot = getattr(engine, "_slot", None)
    return slot is None or getattr(slot, "closing", None) is not None


def seed_request(spider: Spider, data: bytes | str) -> Request | None:
    """A pushed seed (a URL, or JSON ``{"url": ..., "meta": {...}}``) as the spider's seed request."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.strip()
    meta: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            url, meta = str(obj["url"]), dict(obj.get("meta") or {})
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("Ignoring seed %r: %s", text[:200], exc)
            return None
    else:
        url = text
    if not url.startswith(("http://", "https://")):
        logger.error("Ignoring seed %r: not an http(s) URL", url[:200])
        return None
    make = getattr(spider, "seed_request", None)
    request = make(url) if make is not None else Request(url, dont_filter=False)
    if meta:
        request.meta.update(meta)
    return request


def _writes_shards(crawler: Crawler) -> bool:
    if not crawler.settings.getbool("IMAGECRAWL_PARQUET_ENABLED"):
        return False
    pipelines = crawler.settings.getdict("ITEM_PIPELINES")
    return any("ParquetPipeline" in str(path) and order is not None for path, order in pipelines.items())


def worker_for(crawler: Crawler) -> Worker | None:
    return crawl_context(crawler).find(Worker)


def start_worker(crawler: Crawler, config: RedisConfig, owner: str) -> Worker:
    return crawl_context(crawler).get(Worker, lambda: Worker(crawler, config, owner))
