"""Per-site pacing (AIMD on rate and concurrency, Retry-After, Crawl-delay) and backoff retries.

``PacingMiddleware`` sits closest to the network (after the HTTP cache), so every request that
really leaves - robots.txt fetches, retries, redirects, probes - waits at the site's gate in
``process_request`` first; it is never dropped (unless its site was abandoned after a ban).  The
gate's state lives in :class:`PacingRuntime` for the whole crawl, keyed by site, so Scrapy's
garbage collection of idle download slots loses nothing.  Scrapy's own slot delay is set to 0 for
paced slots (the gate already spaces requests; ``DOWNLOAD_DELAY`` becomes a floor of the gate).

While a request waits at a closed gate (Retry-After, cool-down) it is taken out of the downloader's
``active`` set, up to ``IMAGECRAWL_PACING_MAX_PARKED`` requests, so a paused site does not use up
``CONCURRENT_REQUESTS`` and starve the other sites; an idle-signal handler keeps the spider open
while requests are parked. Retries are :mod:`imagecrawl.downloadermiddlewares.retry`'s.

In distributed crawls ``IMAGECRAWL_PACING_GATE_FACTORY`` (set by the distributed add-on) wraps the
in-process gate in one shared by all workers; the gate is any :class:`imagecrawl.pacing.RateGate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any, Self

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider, IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object

from imagecrawl import meta
from imagecrawl.extensions.jobdir import CrawlClosing
from imagecrawl.pacing import Feedback, InProcessGate, RateGate, parse_retry_after
from imagecrawl.pacing.config import PacingConfig, ban_config_from_settings
from imagecrawl.pacing.looplag import LoopLag
from imagecrawl.pacing.signals import classify_exception, classify_status
from imagecrawl.pacing.sitekey import site_of_host
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)

#: Requests waiting longer than this at a closed gate are parked outside Scrapy's concurrency count.
PARK_AFTER_SECONDS = 0.5
#: A waiting request re-checks the gate (and whether the crawl is closing) at least this often.
MAX_SLEEP_SECONDS = 0.5


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
        self.parked = 0
        #: the crawler's own scheduling delay, kept out of the site's latency (imagecrawl.pacing.looplag)
        self.lag = LoopLag()
        self._closing_task: asyncio.Task[None] | None = None

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

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-site state for the progress line and the report (docs/stats.md, the snapshot hook),
        keyed by the netlocs seen for each site."""
        now_m, now_t = time.monotonic(), time.time()
        out: dict[str, dict[str, Any]] = {}
        for site, state in self.gate.sites.items():
            closed = self.gate.peek_wait(site, now_m) if state.paused_until > now_m else 0.0
            ban = state.ban.state.value
            if ban == "healthy":
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
            else:
                self.stats.inc_value(f"imagecrawl/pacing/{name}")
            if event.kind == "pacing/increase":
                logger.debug("%s: %s", event.site, event.message)
            elif event.kind.startswith("bans/"):
                level = logging.WARNING if event.kind in ("bans/banned", "bans/abandoned") else logging.INFO
                logger.log(level, "Site %s %s", event.site, event.message)
                abandoned = abandoned or event.kind == "bans/abandoned"
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
        engine = self.crawler.engine
        if engine is None or not engine.running:
            return True
        slot = getattr(engine, "_slot", None)
        return slot is None or getattr(slot, "closing", None) is not None

    def wake_engine(self) -> None:
        slot = getattr(self.crawler.engine, "_slot", None)
        nextcall = getattr(slot, "nextcall", None)
        if nextcall is not None:
            nextcall.schedule()


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
        self.gate = runtime.gate
        self.config = runtime.config
        crawler.signals.connect(self._robots_parsed, signal=signals.robots_parsed)
        crawler.signals.connect(self._reached_downloader, signal=signals.request_reached_downloader)
        crawler.signals.connect(self._spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            raise NotConfigured("IMAGECRAWL_PACING_ENABLED is off")
        return cls(crawler, runtime_for(crawler))

    # --- the gate -----------------------------------------------------------------------------

    async def process_request(self, request: Request) -> None:
        if request.meta.get(meta.DONT_PACE) or not request.url.startswith(("http://", "https://")):
            return
        rt = self.runtime
        site = rt.site_of(request)
        started = time.monotonic()
        parked = False
        rt.waiting += 1
        try:
            # A retry's backoff comes first, outside the site's queue, so it holds up nobody else.
            not_before = request.meta.get(meta.NOT_BEFORE)
            if not_before is not None:
                while (delay := float(not_before) - time.time()) > 0:
                    parked = self._park(request, parked, delay)
                    await self._sleep(delay)
            lock = rt.locks.setdefault(site, asyncio.Lock())
            if lock.locked():
                parked = self._park(request, parked, self.gate.peek_wait(site, time.monotonic()))
            async with lock:  # FIFO per site: only the head of the line polls the gate
                while True:
                    now = time.monotonic()
                    wait = self.gate.acquire(site, now)
                    rt.flush()
                    if wait == 0:
                        break
                    if math.isinf(wait):
                        rt.stats.inc_value("imagecrawl/bans/dropped")
                        raise IgnoreRequest(f"site {site} was abandoned after bans")
                    parked = self._park(request, parked, wait)
                    state = self.gate.sites.get(site)
                    if state is not None and state.held_by_window:
                        await self._wait_for_slot(site, wait)
                    else:
                        await self._sleep(wait)
        finally:
            rt.waiting -= 1
            if parked:
                self._unpark(request)
        waited = now - started
        if waited > 0.001:
            rt.stats.inc_value("imagecrawl/pacing/wait_ms", round(waited * 1000))
        rt.stats.inc_value("imagecrawl/pacing/requests")
        request.meta[meta.SENT_AT] = now
        request.meta[meta.PACING_GRANTED] = True

    async def _sleep(self, seconds: float) -> None:
        if self.runtime.closing():
            raise CrawlClosing()
        await asyncio.sleep(min(max(seconds, 0.001), MAX_SLEEP_SECONDS))
        if self.runtime.closing():
            raise CrawlClosing()

    async def _wait_for_slot(self, site: str, timeout: float) -> None:
        if self.runtime.closing():
            raise CrawlClosing()
        await self.runtime.wait_for_slot(site, min(timeout, MAX_SLEEP_SECONDS))
        if self.runtime.closing():
            raise CrawlClosing()

    def _park(self, request: Request, parked: bool, wait: float) -> bool:
        """Take a request that will wait a while out of the downloader's concurrency count."""
        rt = self.runtime
        if parked or wait < PARK_AFTER_SECONDS or rt.parked >= self.config.max_parked:
            return parked
        engine = self.crawler.engine
        if engine is None or request not in engine.downloader.active:
            return parked
        engine.downloader.active.discard(request)
        rt.parked += 1
        rt.wake_engine()
        return True

    def _unpark(self, request: Request) -> None:
        self.runtime.parked -= 1
        engine = self.crawler.engine
        if engine is not None:
            engine.downloader.active.add(request)

    # --- feedback -----------------------------------------------------------------------------

    def process_response(self, request: Request, response: Response) -> Response:
        if not request.meta.pop(meta.PACING_GRANTED, False):
            return response
        rt = self.runtime
        site = rt.site_of(request)
        now = time.monotonic()
        sent_at = float(request.meta.get(meta.SENT_AT, now))
        self.gate.release(site, sent_at, now)
        rt.released(site)
        retry_after: float | None = None
        if response.status in (429, 503):
            header = response.headers.get(b"Retry-After")
            parsed = parse_retry_after(header, time.time(), self.config.retry_after_max)
            if parsed is not None:
                retry_after = parsed.pause_seconds()
                request.meta[meta.RETRY_AFTER] = retry_after
                rt.stats.inc_value(f"imagecrawl/pacing/retry_after_received/{response.status}")
                if parsed.capped:
                    rt.stats.inc_value("imagecrawl/pacing/retry_after_capped")
                    logger.warning(
                        "Site %s sent Retry-After %r; capped at %gs (IMAGECRAWL_RETRY_AFTER_MAX_SECONDS)",
                        site,
                        parsed.raw,
                        parsed.seconds,
                    )
        signal = classify_status(response.status)
        # Time to the response headers (Scrapy's download_latency), so a big body is not "slow", less
        # what this process itself was late by: a busy crawler is not a slow site.
        latency = self.runtime.site_latency(float(request.meta.get("download_latency", now - sent_at)), now)
        self.gate.feedback(site, Feedback(signal, sent_at, latency, retry_after), now)
        rt.flush()
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if not request.meta.pop(meta.PACING_GRANTED, False):
            return
        rt = self.runtime
        site = rt.site_of(request)
        now = time.monotonic()
        sent_at = float(request.meta.get(meta.SENT_AT, now))
        self.gate.release(site, sent_at, now)
        rt.released(site)
        self.gate.feedback(site, Feedback(classify_exception(exception), sent_at, None, None), now)
        rt.flush()

    # --- signals ------------------------------------------------------------------------------

    def _robots_parsed(self, robotparser: Any, request: Request) -> None:
        if not self.config.obey_crawl_delay:
            return
        try:
            delay = robotparser.crawl_delay(self.config.robots_user_agent or "*")
        except Exception:  # a custom parser may not implement it
            logger.debug("robots parser %r has no crawl_delay()", robotparser, exc_info=True)
            return
        if delay:
            site = self.runtime.site_of(request)
            self.gate.set_floor_interval(site, float(delay))
            self.runtime.flush()

    def _reached_downloader(self, request: Request, spider: Any = None) -> None:
        """The gate already spaced this request: Scrapy's slot must not delay or cap it again."""
        engine = self.crawler.engine
        if engine is None or not request.meta.get(meta.SENT_AT):
            return
        slot = engine.downloader.slots.get(request.meta.get("download_slot", ""))
        if slot is None:
            return
        slot.delay = 0.0
        slot.jitter = 0.0
        slot.concurrency = max(slot.concurrency, self.config.aimd.max_concurrency)

    def _spider_opened(self) -> None:
        self.runtime.lag.start()

    def _spider_idle(self) -> None:
        if self.runtime.parked > 0:
            raise DontCloseSpider("requests are waiting at a paced site's gate")

    def _spider_closed(self, reason: str) -> None:
        self.runtime.lag.stop()
        stats = self.runtime.stats
        stats.set_value("imagecrawl/pacing/sites", len(self.gate.sites))
        for site, state in self.gate.sites.items():
            logger.info(
                "Pacing of %s at close: %.3g req/s, concurrency %d, %s",
                site,
                state.controller.rate,
                state.controller.concurrency,
                state.ban.state.value,
            )
