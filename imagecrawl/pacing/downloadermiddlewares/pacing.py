"""Per-site pacing (AIMD on rate and concurrency, Retry-After, Crawl-delay, bans, dead sites): the
response side, and the gate for requests that do not come through the frontier.

The decisions are taken before a request leaves the frontier (:mod:`imagecrawl.pacing.scheduler`): it asks the
site's gate and marks what it lets through (``imagecrawl_pacing_granted``). ``PacingMiddleware`` sits
closest to the network (after the HTTP cache) and keeps what must see the answer: it releases the slot,
reads Retry-After and feeds latency, 429/503 and download errors back to the site's controller (and its
dead-site circuit). The gate's state lives in :class:`PacingRuntime` for the whole crawl, keyed by site,
so Scrapy's garbage collection of idle download slots loses nothing.

Requests that did not come through the frontier wait here in ``process_request``: policy fetches
(robots.txt, the TDMRep file, or anything a component fetches with ``engine.download_async`` while the
frontier runs: spaced, capped and paused like any request, but without a concurrency slot, since the
site's other requests may wait for them) and, with another ``SCHEDULER`` (the Redis frontier of
distributed crawls), every request.

In distributed crawls ``IMAGECRAWL_PACING_GATE_FACTORY`` (set by the distributed add-on) wraps the
in-process gate in one shared by all workers; the gate is any :class:`imagecrawl.pacing.RateGate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object

from imagecrawl import meta
from imagecrawl.jobdir.extensions import CrawlClosing
from imagecrawl.optout.downloadermiddlewares.robots import crawl_delays
from imagecrawl.pacing import Feedback, InProcessGate, RateGate, Signal, parse_retry_after
from imagecrawl.pacing.config import PacingConfig, ban_config_from_settings, circuit_config_from_settings
from imagecrawl.pacing.looplag import LoopLag
from imagecrawl.pacing.scheduler import engine_closing, wake_engine
from imagecrawl.pacing.signals import classify_exception, classify_status
from imagecrawl.pacing.sitekey import site_of_host, site_of_url
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)

#: A waiting request re-checks the gate (and whether the crawl is closing) at least this often.
MAX_SLEEP_SECONDS = 0.5
#: a request the frontier let out that would wait longer than this for its turn when it is about to leave
#: (its robots.txt brought a Crawl-delay, a Retry-After came meanwhile) goes back to the frontier to wait
#: there, so no CONCURRENT_REQUESTS slot is held by a wait
GIVE_BACK_SECONDS = 0.5
#: ``imagecrawl_kind`` of the fetches the site's other requests wait for
POLICY_KINDS = frozenset({"robots", "tdmrep"})
#: sites whose pacing is logged at INFO when the crawl closes (the rest at DEBUG, with one line saying how many)
CLOSE_LOG_SITES = 20


def is_policy_fetch(request: Request) -> bool:
    """robots.txt and the TDMRep file: fetched once per site, its other requests wait for them."""
    return meta.POLICY_FILE in request.meta or request.meta.get(meta.KIND) in POLICY_KINDS


class PacingRuntime:
    """The crawl-wide pacing state shared by the pacing and ban middlewares (one per crawler)."""

    def __init__(self, crawler: Crawler, config: PacingConfig) -> None:
        assert crawler.stats is not None
        self.crawler = crawler
        self.stats = crawler.stats
        self.config = config
        local = InProcessGate(
            aimd=config.aimd,
            bans=ban_config_from_settings(crawler.settings),
            jitter=config.jitter,
            default_floor_interval=config.floor_interval,
            circuit=circuit_config_from_settings(crawler.settings),
        )
        factory = crawler.settings.get("IMAGECRAWL_PACING_GATE_FACTORY")
        # distributed crawls: rate, Retry-After and bans shared by all workers
        self.gate: RateGate = load_object(factory)(crawler, local) if factory else local
        self.close_when_all_abandoned = config.close_when_all_abandoned
        self.locks: dict[str, asyncio.Lock] = {}
        #: the head of a site's line waiting for a concurrency slot: woken by the next release
        self._slot_waiters: dict[str, asyncio.Future[None]] = {}
        self.netlocs: dict[str, set[str]] = {}
        self._site_by_netloc: dict[str, str] = {}
        self.rng = random.Random()
        self.waiting = 0
        #: the frontier (imagecrawl.pacing.scheduler.FrontierScheduler) while one is open: told of releases
        self.frontier: Any = None
        #: the pacing middleware is installed (it releases what the frontier lets out)
        self.middleware = False
        #: the crawler's own scheduling delay, kept out of the site's latency (imagecrawl.pacing.looplag)
        self.lag = LoopLag()
        self._closing_task: asyncio.Task[None] | None = None
        #: the time sources and the pause of the pacing middleware (unit tests give a clock they move by hand)
        self.clock: Callable[[], float] = time.monotonic
        self.wall: Callable[[], float] = time.time
        self.pause: Callable[[float], Awaitable[None]] = asyncio.sleep

    def site_of(self, request: Request) -> str:
        """The site this request is sent to, from its own URL: never from meta a redirect or retry copied
        from another request (a redirect to another host is paced, banned and counted as that host, and
        its copied ``download_slot``, the origin's Scrapy slot, is dropped)."""
        parts = urlparse_cached(request)  # parsed once per request object, shared with Scrapy
        site = self._site_by_netloc.get(parts.netloc)
        if site is None:
            site = site_of_host(parts.hostname or "", self.config.site_key)
            self._site_by_netloc[parts.netloc] = site
            self.netlocs.setdefault(site, set()).add(parts.netloc)
        copied = request.meta.get(meta.SITE)
        if copied != site:
            if copied is not None:
                request.meta.pop("download_slot", None)  # the origin's Scrapy slot came with the copy
            request.meta[meta.SITE] = site
        return site

    def forget(self, keep: Callable[[str], bool]) -> int:
        """Drop the per-site lookups (netlocs, FIFO locks) of sites the gate keeps no full state for and
        ``keep(site)`` is false (the frontier queues nothing for them): a site that comes back is looked
        up again. Returns how many sites were dropped."""
        full = self.gate.sites
        gone = [site for site in self.netlocs if site not in full and not keep(site)]
        for site in gone:
            for netloc in self.netlocs.pop(site):
                self._site_by_netloc.pop(netloc, None)
            for key in (site, f"{site}\0policy"):
                lock = self.locks.get(key)
                if lock is not None and not lock.locked():
                    del self.locks[key]
        return len(gone)

    def site_latency(self, measured: float, now: float) -> float | None:
        """The site's share of a measured latency: the crawler's recent event-loop lag is subtracted;
        while that lag is large (above the latency margin) the sample says nothing about the site."""
        lag = self.lag.recent(now)
        if lag > self.config.aimd.latency_margin_seconds:
            self.stats.inc_value("imagecrawl/pacing/latency_ignored/loop_lag")
            return None
        return max(0.0, measured - lag)

    async def wait_for_slot(self, site: str, timeout: float) -> None:
        """Wait until a request of ``site`` is released (or ``timeout``): no polling for a free slot."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._slot_waiters[site] = fut
        timer = loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            if self._slot_waiters.get(site) is fut:
                del self._slot_waiters[site]

    def released(self, site: str) -> None:
        fut = self._slot_waiters.pop(site, None)
        if fut is not None:
            _resolve(fut)
        if self.frontier is not None:
            self.frontier.released(site)

    def release_unsent(self, site: str) -> None:
        """A request let out of the frontier came back to it without an answer or an error (a middleware
        replaced it before it was sent): its slot is free again."""
        now = self.clock()
        self.gate.release(site, now, now)
        self.released(site)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-site state for the progress line and the report (docs/stats.md, the snapshot hook),
        keyed by the netlocs seen for each site."""
        now_m, now_t = self.clock(), self.wall()
        out: dict[str, dict[str, Any]] = {}
        for site, state in self.gate.sites.items():
            closed = self.gate.peek_wait(site, now_m) if state.paused_until > now_m else 0.0
            ban = state.ban.state.value
            circuit = state.circuit.state.value
            if circuit == "dead":
                label = "dead"
            elif circuit != "closed":
                label = "no answer"
            elif ban == "healthy":
                recently_cut = now_m - state.controller.last_cut < 10.0
                label = "paused" if closed > 0 else ("slow" if recently_cut else "ok")
            elif ban == "banned":
                label = "cooldown"
            else:
                label = ban
            entry = {
                "rate": round(state.controller.rate, 3),
                "state": label,
                "paused_until": now_t + closed if closed > 0 else None,
                "concurrency": state.controller.concurrency,
            }
            for netloc in self.netlocs.get(site, {site}):
                out[netloc] = dict(entry)
        return out

    def flush(self) -> None:
        """Log and count what the gate reported; close the crawl when every site is abandoned."""
        abandoned = False
        for event in self.gate.drain_events():
            group, _, name = event.kind.partition("/")
            if group == "bans":
                self.stats.inc_value(f"imagecrawl/bans/{name}")
            elif group == "circuit":
                self.stats.inc_value(f"imagecrawl/circuit/{name}")
            else:
                self.stats.inc_value(f"imagecrawl/pacing/{name}")
            if event.kind == "pacing/increase":
                logger.debug("%s: %s", event.site, event.message)
            elif event.kind.startswith("bans/"):
                level = logging.WARNING if event.kind in ("bans/banned", "bans/abandoned") else logging.INFO
                logger.log(level, "Site %s %s", event.site, event.message)
                abandoned = abandoned or event.kind == "bans/abandoned"
            elif event.kind.startswith("circuit/"):
                level = logging.WARNING if event.kind in ("circuit/opened", "circuit/dead") else logging.INFO
                logger.log(level, "Site %s: %s", event.site, event.message)
            else:
                logger.info("Site %s: %s", event.site, event.message)
        if abandoned and self.close_when_all_abandoned and self.gate.all_abandoned():
            self._close_banned()

    def _close_banned(self) -> None:
        if self._closing_task is not None:
            return
        engine = self.crawler.engine
        if engine is None or engine.spider is None:
            return
        logger.warning("Every site of this crawl is abandoned after bans: closing the spider")
        self._closing_task = asyncio.ensure_future(engine.close_spider_async(reason="banned"))

    def closing(self) -> bool:
        return engine_closing(self.crawler.engine)

    def wake_engine(self) -> None:
        wake_engine(self.crawler.engine)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def runtime_for(crawler: Crawler) -> PacingRuntime:
    """The crawl's pacing runtime, shared by the pacing and ban middlewares and read by the monitor."""
    context = crawl_context(crawler)

    def make() -> PacingRuntime:
        runtime = PacingRuntime(crawler, PacingConfig.from_settings(crawler.settings))
        context.snapshot_providers.append(runtime)
        return runtime

    return context.get(PacingRuntime, make)


class PacingMiddleware:
    def __init__(self, crawler: Crawler, runtime: PacingRuntime) -> None:
        self.crawler = crawler
        self.runtime = runtime
        runtime.middleware = True
        self.gate = runtime.gate
        self.config = runtime.config
        # Crawl-delay has one path: the robots.txt middleware parses it for our token, caps it
        # (MAX_CRAWL_DELAY_SECONDS) and keeps it in the crawl's CrawlDelays; the gate takes it from there.
        crawl_delays(crawler).listeners.append(self._crawl_delay)
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            raise NotConfigured("IMAGECRAWL_PACING_ENABLED is off")
        return cls(crawler, runtime_for(crawler))

    # --- the gate -----------------------------------------------------------------------------

    async def process_request(self, request: Request) -> Request | None:
        if request.meta.get(meta.DONT_PACE) or not request.url.startswith(("http://", "https://")):
            return None
        if request.meta.get(meta.PACING_GRANTED) is True:
            # The frontier let it out and it holds its slot. If it waited (for robots.txt), a Retry-After
            # that came meanwhile and the cap as the site counts arrivals are checked again.
            rt = self.runtime
            site = rt.site_of(request)
            granted_at = float(request.meta.get(meta.SENT_AT, 0.0))
            waited = False
            while (wait := self.gate.depart(site, granted_at, now := self.runtime.clock())) > 0:
                if wait > GIVE_BACK_SECONDS and rt.frontier is not None:
                    # A long wait (the Crawl-delay its robots.txt brought: a broad crawl's every new site)
                    # is the frontier's: there it holds no slot of the downloader, which the sites
                    # that may send now need. The scheduler frees its pacing slot and gives it its
                    # old place in the site's queue (meta.FRONTIER_KEY); it was seen once already.
                    rt.stats.inc_value("imagecrawl/frontier/given_back")
                    return request.replace(dont_filter=True)
                waited = True
                await self._sleep(wait)
            if waited:  # the last guard: rare (a Retry-After or the cap after a wait for robots.txt)
                rt.stats.inc_value("imagecrawl/pacing/depart_waits")
            request.meta[meta.SENT_AT] = now
            return None
        await self._wait_at_gate(request)
        return None

    async def _wait_at_gate(self, request: Request) -> None:
        """A request that did not come through the frontier waits for its site's gate here."""
        rt = self.runtime
        site = rt.site_of(request)
        # With the frontier, a request that did not come through it was fetched by a component directly
        # (engine.download_async: robots.txt, TDMRep, a third-party middleware) and the request that
        # waits for it may hold the site's slot: it goes as a policy fetch, without one.
        policy = is_policy_fetch(request) or rt.frontier is not None
        started = self.runtime.clock()
        rt.waiting += 1
        try:
            # A retry's backoff comes first, outside the site's queue, so it holds up nobody else.
            not_before = request.meta.get(meta.NOT_BEFORE)
            if not_before is not None:
                while (delay := float(not_before) - self.runtime.wall()) > 0:
                    await self._sleep(delay)
            # FIFO per site: only the head of the line polls the gate (policy fetches have their own line)
            lock = rt.locks.setdefault(f"{site}\0policy" if policy else site, asyncio.Lock())
            async with lock:
                while True:
                    now = self.runtime.clock()
                    wait = self.gate.acquire(site, now, policy)
                    rt.flush()
                    if wait == 0:
                        break
                    if math.isinf(wait):
                        if self.gate.dead(site):
                            reason = "dead_site"
                            rt.stats.inc_value(f"imagecrawl/frontier/dropped/{reason}")
                            raise IgnoreRequest(f"site {site} does not answer (dead)")
                        rt.stats.inc_value("imagecrawl/bans/dropped")
                        raise IgnoreRequest(f"site {site} was abandoned after bans")
                    state = self.gate.sites.get(site)
                    if state is not None and state.held_by_window:
                        await self._wait_for_slot(site, wait)
                    else:
                        await self._sleep(wait)
        finally:
            rt.waiting -= 1
        waited = now - started
        if waited > 0.001:
            rt.stats.inc_value("imagecrawl/pacing/wait_ms", round(waited * 1000))
        rt.stats.inc_value("imagecrawl/pacing/requests")
        request.meta[meta.SENT_AT] = now
        request.meta[meta.PACING_GRANTED] = "policy" if policy else True

    async def _sleep(self, seconds: float) -> None:
        if self.runtime.closing():
            raise CrawlClosing()
        await self.runtime.pause(min(max(seconds, 0.001), MAX_SLEEP_SECONDS))
        if self.runtime.closing():
            raise CrawlClosing()

    async def _wait_for_slot(self, site: str, timeout: float) -> None:
        if self.runtime.closing():
            raise CrawlClosing()
        await self.runtime.wait_for_slot(site, min(timeout, MAX_SLEEP_SECONDS))
        if self.runtime.closing():
            raise CrawlClosing()

    # --- feedback -----------------------------------------------------------------------------

    def process_response(self, request: Request, response: Response) -> Response:
        granted = request.meta.pop(meta.PACING_GRANTED, False)
        if not granted:
            return response
        rt = self.runtime
        site = rt.site_of(request)
        now = self.runtime.clock()
        sent_at = float(request.meta.get(meta.SENT_AT, now))
        retry_after: float | None = None
        if response.status in (429, 503):
            header = response.headers.get(b"Retry-After")
            parsed = parse_retry_after(header, self.runtime.wall(), self.config.retry_after_max)
            if parsed is not None:
                retry_after = parsed.pause_seconds()
                request.meta[meta.RETRY_AFTER] = retry_after
                rt.stats.inc_value(f"imagecrawl/pacing/retry_after_received/{response.status}")
                if parsed.capped:
                    rt.stats.inc_value("imagecrawl/pacing/retry_after_capped")
                    logger.warning(
                        "Site %s sent Retry-After %r; capped at %gs (IMAGECRAWL_TUNING['retry_after_max_seconds'])",
                        site,
                        parsed.raw,
                        parsed.seconds,
                    )
        if retry_after is not None and retry_after > 0:
            # A gate shared between processes closes the site for all of them before anything else
            # happens here (imagecrawl.distributed.gate.RedisGate.announce_pause).
            announce = getattr(self.gate, "announce_pause", None)
            if announce is not None:
                announce(site, retry_after)
        if granted is True:
            self.gate.release(site, sent_at, now)
            rt.released(site)
        else:
            self.gate.ended(site, now)
        signal = classify_status(response.status)
        if granted == "policy" and signal is Signal.OK:
            # robots.txt and the like go when the site's requests need them, not at its pace: their
            # answers say nothing about the rate the site takes (a start-up that grew on them sent the
            # first images faster than it had tried), only about its latency
            signal = Signal.NEUTRAL
        # Time to the response headers (Scrapy's download_latency), so a big body is not "slow", less
        # what this process itself was late by: a busy crawler is not a slow site.
        measured = float(request.meta.get("download_latency", now - sent_at))
        latency = self.runtime.site_latency(measured, now)
        self.gate.feedback(site, Feedback(signal, sent_at, latency, retry_after, measured=measured), now)
        rt.flush()
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        granted = request.meta.pop(meta.PACING_GRANTED, False)
        if not granted:
            return
        rt = self.runtime
        site = rt.site_of(request)
        now = self.runtime.clock()
        sent_at = float(request.meta.get(meta.SENT_AT, now))
        if granted is True:
            self.gate.release(site, sent_at, now)
            rt.released(site)
        else:
            self.gate.ended(site, now)
        self.gate.feedback(site, Feedback(classify_exception(exception), sent_at, None, None, answer=False), now)
        rt.flush()

    # --- signals ------------------------------------------------------------------------------

    def _crawl_delay(self, netloc: str, delay: float | None) -> None:
        """A site's robots.txt was read: its Crawl-delay (already capped) is the floor of its gate."""
        if not self.config.obey_crawl_delay or not delay:
            return
        self.gate.set_floor_interval(site_of_url(f"http://{netloc}/", self.config.site_key), float(delay))
        self.runtime.flush()

    def _spider_opened(self) -> None:
        self.runtime.lag.start()

    def _spider_closed(self, reason: str) -> None:
        self.runtime.lag.stop()
        stats = self.runtime.stats
        stats.set_value("imagecrawl/pacing/sites", self.gate.held())
        sites = self.gate.sites
        for n, (site, state) in enumerate(sites.items()):
            # a broad crawl holds thousands of sites: the first few at INFO, the rest at DEBUG
            logger.log(
                logging.INFO if n < CLOSE_LOG_SITES else logging.DEBUG,
                "Pacing of %s at close: %.3g req/s, concurrency %d, %s",
                site,
                state.controller.rate,
                state.controller.concurrency,
                state.ban.state.value,
            )
        if len(sites) > CLOSE_LOG_SITES:
            logger.info("Pacing of %d more sites at close: logged at DEBUG", len(sites) - CLOSE_LOG_SITES)
