"""A progress line every ``IMAGECRAWL_PROGRESS_INTERVAL_SECONDS``, logged at INFO; with LOG_LEVEL=WARNING
at the level ``PROGRESS`` (between WARNING and ERROR, so it shows without counting as a warning); hidden
at ERROR. The last one, at close, says how many rows the crawl added to the store:

Progress 0:05:00: 1,234 of 5,000 images (4.1 images/s, ETA 0:15:18); committed 1,200 rows in 6 shards,
outbox 1 shard; dupes 12, known skipped 30, opt-out 3, 429s 4 | civitai.com 3.2 req/s ok; cdn.example
0.0 req/s paused 25s (Retry-After) (+3 sites)

Images are the records the crawl kept (``item_scraped_count``); the total is the spider's ``max_items``
when it has one, and the ETA is what is left of it at the recent rate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Self

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

from imagecrawl import defaults
from imagecrawl.report.extensions.monitor import Monitor, monitor_for
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)

#: the level of the progress line when INFO is hidden (LOG_LEVEL=WARNING)
PROGRESS = 35
logging.addLevelName(PROGRESS, "PROGRESS")


def progress_level(log_level: Any) -> int | None:
    """INFO when ``LOG_LEVEL`` shows INFO, else PROGRESS when it shows that, else None.

    Scrapy filters in its root handler (at ``LOG_LEVEL``), not on the loggers, so ``isEnabledFor`` cannot tell."""
    number = log_level if isinstance(log_level, int) else logging.getLevelName(str(log_level).upper())
    if not isinstance(number, int):
        number = logging.INFO
    if number <= logging.INFO:
        return logging.INFO
    return PROGRESS if number <= PROGRESS else None


@dataclass(frozen=True)
class ProgressConfig:
    enabled: bool = DEFAULTS.progress_enabled
    interval_seconds: float = defaults.IMAGECRAWL_PROGRESS_INTERVAL_SECONDS
    sites: int = DEFAULTS.progress_sites

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        return cls(
            enabled=tuning(settings).progress_enabled,
            interval_seconds=settings.getfloat("IMAGECRAWL_PROGRESS_INTERVAL_SECONDS"),
            sites=max(0, tuning(settings).progress_sites),
        )


def prefixed_sum(stats: dict[str, Any], prefix: str) -> int:
    return int(sum(v for k, v in stats.items() if k.startswith(prefix) and isinstance(v, (int, float))))


def optout_skips(stats: dict[str, Any]) -> int:
    """Requests skipped because a site opted out (the opt-out middleware's total)."""
    return int(stats.get("imagecrawl/optout/skipped", 0))


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"


def images_part(done: int, rate: float, total: int | None) -> str:
    """``1,234 of 5,000 images (4.1 images/s, ETA 0:15:18)``: one unit; the total and ETA when known."""
    of = f" of {total:,}" if total else ""
    eta = ""
    if total and done < total and rate > 0:
        eta = f", ETA {_clock((total - done) / rate)}"
    return f"{done:,}{of} images ({rate:.1f} images/s{eta})"


def progress_line(
    monitor: Monitor, stats: dict[str, Any], now: float, window: float, sites: int, total: int | None = None
) -> str:
    # one unit: images kept (records scraped) and their rate, not downloads per second
    images_rate = monitor.timeline.recent_rate("items", now, window)
    backlog = monitor.backlog_shards()
    done = int(stats.get("item_scraped_count", 0))
    parts = [
        f"Progress {_clock(now - monitor.started)}: {images_part(done, images_rate, total)}; "
        f"committed {int(stats.get('imagecrawl/store/rows_committed', 0)):,} rows "
        f"in {int(stats.get('imagecrawl/store/shards_committed', 0)):,} shards, outbox {backlog} "
        f"shard{'s' if backlog != 1 else ''}",
        f"dupes {prefixed_sum(stats, 'imagecrawl/dedupe/dropped/'):,}, "
        f"known skipped {prefixed_sum(stats, 'imagecrawl/dedupe/skipped_known/'):,}, "
        f"opt-out {optout_skips(stats):,}, "
        f"429s {int(stats.get('downloader/response_status_count/429', 0)):,}"
        + (f", bans {bans:,}" if (bans := prefixed_sum(stats, "imagecrawl/bans/detected/")) else ""),
    ]
    line = "; ".join(parts)
    if sites and monitor.sites:
        shown = monitor.busiest(now, window, sites)
        text = "; ".join(f"{s.name} {rate:.1f} req/s {s.state(now, window)}" for s, rate in shown)
        more = len(monitor.sites) - len(shown)
        line += " | " + text + (f" (+{more} sites)" if more > 0 else "")
    return line


class ProgressLine:
    def __init__(self, crawler: Crawler, config: ProgressConfig) -> None:
        self.crawler = crawler
        self.config = config
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.monitor: Monitor | None = None  # the Monitor extension, looked up once the extensions exist
        self._task: Any = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = ProgressConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("IMAGECRAWL_TUNING['progress_enabled'] is off")
        if config.interval_seconds <= 0:
            raise NotConfigured("IMAGECRAWL_PROGRESS_INTERVAL_SECONDS is 0")
        return cls(crawler, config)

    def spider_opened(self) -> None:
        self.monitor = monitor_for(self.crawler)
        self._task = create_looping_call(self.log)
        self._task.start(self.config.interval_seconds, now=False)

    def log(self, final: bool = False) -> None:
        level = progress_level(self.crawler.settings.get("LOG_LEVEL"))
        if level is None or self.monitor is None:
            return
        stats = self.stats.get_stats()
        spider = self.crawler.spider
        total = getattr(spider, "max_items", None) if spider is not None else None
        line = progress_line(
            self.monitor,
            stats,
            time.time(),
            self.config.interval_seconds,
            self.config.sites,
            total if isinstance(total, int) and total > 0 else None,
        )
        logger.log(level, "%s%s", line, " (final)" if final else "")
        if final:
            rows = int(stats.get("imagecrawl/store/rows_committed", 0))
            store = self.crawler.settings.get("IMAGECRAWL_STORE")
            logger.log(level, "%s new row%s stored in %s", f"{rows:,}", "" if rows == 1 else "s", store)

    def spider_closed(self) -> None:
        if self._task is not None and self._task.running:
            self._task.stop()
        if self.monitor is not None:
            self.monitor.finish()
        self.log(final=True)
