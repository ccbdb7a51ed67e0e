"""What the progress line and the end-of-crawl report show, recorded once per crawler.

Per site (netloc) and per time bucket: requests that reached the downloader, responses by status
(429/503/403 counted apart), Retry-After headers (as pause intervals); globally: items scraped and
image responses (2xx to image requests) per second and, sampled from the stats every
``IMAGECRAWL_TUNING['monitor_sample_seconds']``, rows/shards committed and the outbox backlog. Memory is bounded: the
time series are :class:`~imagecrawl.report.series.Timeline` grids and at most
``IMAGECRAWL_TUNING['report_max_sites']`` sites get their own series (the rest count as ``(other)``).

Pacing hook: a component that publishes a :class:`~imagecrawl.storage.context.SnapshotProvider` in the
crawl context (the pacing middleware does), an object with ``snapshot() -> Mapping[site, Mapping]`` whose
values have ``rate`` (float, requests/s now allowed, or None), ``state`` (str: ``ok``, ``slow``,
``paused``, ``banned``, ``cooldown``, ``probing``, ...) and ``paused_until`` (epoch seconds from
``time.time()``, or None), is sampled and its rate and state shown; without one, states come from the
signals. Later providers override earlier ones' ``state``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl import meta
from imagecrawl.errors import ConfigError
from imagecrawl.pacing.retryafter import parse_retry_after
from imagecrawl.report.dataset import DatasetTally
from imagecrawl.report.series import Spans, Timeline
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)

OTHER = "(other)"
#: Snapshot states that mean "nothing to mark"
CALM_STATES = frozenset({"", "ok", "normal", "active", "running", "steady", "idle"})
#: A site's Retry-After pauses are capped here when drawn (a header may ask for days).
MAX_PAUSE_SECONDS = 6 * 3600.0
#: Stats sampled into the time series: series name -> stat names summed.
SAMPLED = {
    "rows_committed": ("imagecrawl/store/rows_committed",),
    "shards_committed": ("imagecrawl/store/shards_committed",),
}


@dataclass(frozen=True)
class MonitorConfig:
    sample_seconds: float = DEFAULTS.monitor_sample_seconds
    buckets: int = DEFAULTS.report_buckets
    max_sites: int = DEFAULTS.report_max_sites

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        buckets = max(2, tuning(settings).report_buckets)
        return cls(
            sample_seconds=max(0.1, tuning(settings).monitor_sample_seconds),
            buckets=buckets + buckets % 2,
            max_sites=max(1, tuning(settings).report_max_sites),
        )


@dataclass
class SiteActivity:
    name: str
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    retry_after_seen: int = 0
    retry_after_max_seconds: float = 0.0
    spans: Spans = field(default_factory=Spans)
    last_429_at: float = 0.0
    last_403_at: float = 0.0
    last_ok_at: float = 0.0
    snapshot: dict[str, Any] = field(default_factory=dict)

    def state(self, now: float, window: float) -> str:
        """Pacing's own state if it reports one, else what the responses say."""
        state = str(self.snapshot.get("state") or "")
        paused_until = self.snapshot.get("paused_until")
        if isinstance(paused_until, (int, float)) and paused_until > now:
            why = f" ({state})" if state not in CALM_STATES | {"paused"} else ""
            return f"paused {paused_until - now:.0f}s{why}"
        if self.requests and not self.statuses:
            return "no answer"  # requests went out, none got a response: DNS, refused, timeouts
        if state and state not in CALM_STATES:
            return state
        active = [s for s in self.spans.active(now) if s[2] == "retry-after"]
        if active:
            return f"paused {max(s[1] for s in active) - now:.0f}s (Retry-After)"
        if self.last_403_at > now - window and self.last_ok_at < self.last_403_at:
            return "403s (blocked?)"
        if self.last_429_at > now - window:
            return "throttled (429/503)"
        return state or "ok"


class Monitor:
    """The extension that records what the progress line and the report show (off when both are off).
    They reach it with :func:`monitor_for` (``crawler.get_extension``)."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        if not tuning(settings).progress_enabled and not settings.getbool("IMAGECRAWL_REPORT_ENABLED"):
            raise NotConfigured("IMAGECRAWL_TUNING['progress_enabled'] and IMAGECRAWL_REPORT_ENABLED are off")
        return cls(crawler, MonitorConfig.from_settings(settings))

    def __init__(self, crawler: Crawler, config: MonitorConfig) -> None:
        self.crawler = crawler
        self.config = config
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.started = time.time()
        #: what the scraped items hold (the report's dataset section)
        self.dataset = DatasetTally()
        self.timeline = Timeline(self.started, capacity=config.buckets)
        self.sites: dict[str, SiteActivity] = {}
        self.other_sites: set[str] = set()
        self._last: dict[str, float] = {}
        self._task: Any = None
        self.finished: float | None = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.request_reached, signal=signals.request_reached_downloader)
        crawler.signals.connect(self.response_downloaded, signal=signals.response_downloaded)
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)

    # -- lifecycle ----------------------------------------------------------------------------
    def spider_opened(self) -> None:
        self.started = time.time()
        self.timeline = Timeline(self.started, capacity=self.config.buckets)
        self._last = {name: self._stat_sum(keys) for name, keys in SAMPLED.items()}
        self._task = create_looping_call(self.sample)
        self._task.start(self.config.sample_seconds, now=False)

    def spider_closed(self) -> None:
        self.finish()

    def finish(self) -> None:
        """Stop sampling and take the last sample (once): what reads the monitor at ``spider_closed`` (the
        report, the progress line's final line) calls it first, whatever order the handlers run in."""
        if self.finished is not None:
            return
        if self._task is not None and self._task.running:
            self._task.stop()
        self.sample()
        self.finished = time.time()

    # -- signals --------------------------------------------------------------------------------
    def site_for(self, request: Request) -> SiteActivity:
        name = urlparse_cached(request).netloc or "(none)"
        return self._site(name)

    def _site(self, name: str) -> SiteActivity:
        site = self.sites.get(name)
        if site is not None:
            return site
        if len(self.sites) >= self.config.max_sites:
            if len(self.other_sites) < 10_000:
                self.other_sites.add(name)
            name = OTHER
            site = self.sites.get(name)
            if site is not None:
                return site
        site = self.sites[name] = SiteActivity(name)
        return site

    def request_reached(self, request: Request) -> None:
        site = self.site_for(request)
        site.requests += 1
        self.timeline.add(f"site:{site.name}:requests", time.time())

    def response_downloaded(self, response: Response, request: Request) -> None:
        now = time.time()
        site = self.site_for(request)
        code = str(response.status)
        site.statuses[code] = site.statuses.get(code, 0) + 1
        if response.status in (429, 503, 403):
            self.timeline.add(f"site:{site.name}:{code}", now)
        if response.status in (429, 503):
            site.last_429_at = now
        elif response.status == 403:
            site.last_403_at = now
        elif response.status < 400:
            site.last_ok_at = now
            if request.meta.get(meta.KIND) == "image" and response.status < 300:
                self.timeline.add("images", now)
        parsed = parse_retry_after(response.headers.get(b"Retry-After"), now, math.inf)
        if parsed is not None:
            seconds = parsed.seconds
            site.retry_after_seen += 1
            site.retry_after_max_seconds = max(site.retry_after_max_seconds, seconds)
            self.timeline.add(f"site:{site.name}:retry_after", now)
            site.spans.add(now, now + min(seconds, MAX_PAUSE_SECONDS), "retry-after")

    def item_scraped(self, item: Any) -> None:
        self.timeline.add("items", time.time())
        self.dataset.add(ItemAdapter(item))

    # -- sampling -------------------------------------------------------------------------------
    def _stat_sum(self, keys: tuple[str, ...]) -> float:
        return float(sum(self.stats.get_value(k, 0) or 0 for k in keys))

    def backlog_shards(self) -> int:
        """Shards finished but not yet confirmed by the store (derived from the pipeline's stats)."""
        get = self.stats.get_value
        written = (get("imagecrawl/parquet/shards_written", 0) or 0) + (get("imagecrawl/store/recovered", 0) or 0)
        return max(0, int(written - (get("imagecrawl/store/shards_committed", 0) or 0)))

    def snapshots(self) -> dict[str, dict[str, Any]]:
        """The pacing/ban hooks' per-site snapshots merged (see the module docstring); {} without hooks."""
        merged: dict[str, dict[str, Any]] = {}
        for provider in crawl_context(self.crawler).snapshot_providers:
            try:
                snap = provider.snapshot()
            except Exception:
                logger.debug("%r.snapshot() failed", provider, exc_info=True)
                continue
            if not isinstance(snap, Mapping):
                continue
            for site, info in snap.items():
                if not isinstance(info, Mapping):
                    continue
                entry = merged.setdefault(str(site), {})
                for key, value in info.items():
                    if key == "state" and str(value or "") in CALM_STATES and entry.get("state"):
                        continue
                    entry[key] = value
        return merged

    def sample(self) -> None:
        now = time.time()
        tl = self.timeline
        tl.touch(now)
        for name, keys in SAMPLED.items():
            value = self._stat_sum(keys)
            delta = value - self._last.get(name, 0.0)
            if delta:
                tl.add(name, now, delta)
            self._last[name] = value
        tl.gauge("outbox_backlog_shards", now, self.backlog_shards())
        previous = self._last.get("_sampled_at", self.started)
        self._last["_sampled_at"] = now
        for name, info in self.snapshots().items():
            info = dict(info)
            paused_until = info.get("paused_until")
            if isinstance(paused_until, (int, float)) and paused_until < 1e9:  # a monotonic clock value
                info["paused_until"] = paused_until - time.monotonic() + now
            site = self.sites.get(name) or self._site(name)
            site.snapshot = info
            rate = info.get("rate")
            if isinstance(rate, (int, float)):
                tl.gauge(f"site:{site.name}:pacing_rate", now, float(rate))
            state = str(info.get("state") or "")
            if state and state not in CALM_STATES:
                site.spans.extend_to(state, previous, now)
            until = info.get("paused_until")
            if isinstance(until, (int, float)) and until > now:
                site.spans.extend_to("paused", now, min(until, now + MAX_PAUSE_SECONDS))

    # -- reading ---------------------------------------------------------------------------------
    def busiest(self, now: float, window: float, limit: int) -> list[tuple[SiteActivity, float]]:
        """Sites by request rate over the last ``window`` seconds (sites in trouble first), at most ``limit``."""
        rated = [(s, self.timeline.recent_rate(f"site:{s.name}:requests", now, window)) for s in self.sites.values()]

        def key(item: tuple[SiteActivity, float]) -> tuple[bool, float, int]:
            site, rate = item
            return (site.state(now, window) == "ok", -rate, -site.requests)

        return sorted(rated, key=key)[:limit]


def monitor_for(crawler: Crawler) -> Monitor:
    """The crawl's monitor (an extension: look it up once the extensions are built, e.g. at ``spider_opened``)."""
    monitor = crawler.get_extension(Monitor)
    if monitor is None:
        raise ConfigError(
            "imagecrawl.report.extensions.monitor.Monitor is not in EXTENSIONS: "
            "the progress line and the report need it"
        )
    return monitor
