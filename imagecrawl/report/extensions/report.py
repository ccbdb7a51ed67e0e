"""The end-of-crawl report, written beside the shards: ``<store>/.imagecrawl/reports/<run>.json`` and ``.html``.

The JSON holds totals, stats grouped by reason, and the time series the monitor recorded (items/s,
images/s, per-site request rate, 429/503/403 responses, Retry-After pauses, pacing rate and states);
the HTML renders the same data with inline SVG plots (no scripts, no external files: it opens offline).
Written at ``spider_closed``, after the Parquet pipeline's ``close_spider`` has committed the last shards
and before the store's owner (:class:`~imagecrawl.storage.extensions.StorageOwner`) closes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl import defaults, redact
from imagecrawl.addon import configured_secrets
from imagecrawl.report.extensions.monitor import Monitor, monitor_for
from imagecrawl.report.extensions.progress import optout_skips, prefixed_sum
from imagecrawl.report.html import render_html
from imagecrawl.storage import layout
from imagecrawl.storage.extensions import crawl_storage
from imagecrawl.tuning import DEFAULTS, tuning
from imagecrawl.values import utf8_safe

logger = logging.getLogger(__name__)

REPORT_PREFIX = layout.REPORTS_DIR
REPORT_VERSION = 1
#: Stat groups shown "by reason" (besides every ``imagecrawl/<component>/<metric>/<reason>`` group).
SCRAPY_GROUPS = (
    "downloader/response_status_count",
    "downloader/exception_type_count",
    "retry/reason_count",
    "item_dropped_reasons_count",
    "log_count",
    "imagecrawl/optout",  # every opt-out skip by reason (robots_txt, content_signal, embedded_c2pa, ...)
)


@dataclass(frozen=True)
class ReportConfig:
    enabled: bool = defaults.IMAGECRAWL_REPORT_ENABLED
    plotted_sites: int = DEFAULTS.report_plotted_sites

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        return cls(
            enabled=settings.getbool("IMAGECRAWL_REPORT_ENABLED"),
            plotted_sites=max(0, tuning(settings).report_plotted_sites),
        )


def by_reason(stats: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``a/b/c/<reason>`` → ``{"a/b/c": {reason: n}}`` for imagecrawl stats with a reason level and
    Scrapy's own per-reason counters."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in stats.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        group, _, reason = key.rpartition("/")
        if (key.startswith("imagecrawl/") and group.count("/") >= 2) or group in SCRAPY_GROUPS:
            groups.setdefault(group, {})[reason] = value
    return groups


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return None if value is None else str(value)


def build_report(
    monitor: Monitor, stats: dict[str, Any], *, run_id: str, spider: str, store: str, plotted_sites: int
) -> dict[str, Any]:
    tl = monitor.timeline
    finished = monitor.finished or tl.start + tl.n * tl.width
    get = stats.get
    totals = {
        "items": int(get("item_scraped_count", 0)),
        "rows_committed": int(get("imagecrawl/store/rows_committed", 0)),
        "shards_committed": int(get("imagecrawl/store/shards_committed", 0)),
        "images_downloaded": int(get("imagecrawl/media/images", 0)),
        "requests": int(get("downloader/request_count", 0)),
        "responses": int(get("downloader/response_count", 0)),
        "bytes_downloaded": int(get("downloader/response_bytes", 0)),
        "duplicates_dropped": prefixed_sum(stats, "imagecrawl/dedupe/dropped/"),
        "skipped_known": prefixed_sum(stats, "imagecrawl/dedupe/skipped_known/"),
        "forgotten_refused": prefixed_sum(stats, "imagecrawl/forget/refused/"),
        "optout_skipped": optout_skips(stats),
        "items_dropped": int(get("item_dropped_count", 0)),
        "responses_429": int(get("downloader/response_status_count/429", 0)),
        "responses_503": int(get("downloader/response_status_count/503", 0)),
        "responses_403": int(get("downloader/response_status_count/403", 0)),
        "retry_after_seen": sum(s.retry_after_seen for s in monitor.sites.values()),
        "bans_detected": prefixed_sum(stats, "imagecrawl/bans/detected/"),
        "dead_sites": int(get("imagecrawl/frontier/dead_sites", 0)),
        "dropped_dead_site": int(get("imagecrawl/frontier/dropped/dead_site", 0)),
        "outbox_pending": int(get("imagecrawl/store/outbox_pending", 0)),
    }
    sites = []
    for site in sorted(monitor.sites.values(), key=lambda s: -s.requests):
        prefix = f"site:{site.name}:"
        sites.append(
            {
                "site": site.name,
                "requests": site.requests,
                "statuses": dict(sorted(site.statuses.items())),
                "retry_after_seen": site.retry_after_seen,
                "retry_after_max_seconds": site.retry_after_max_seconds,
                "state": site.state(finished, 60.0),
                "pacing": site.snapshot or None,
                "series": {
                    "requests_per_second": tl.rate(prefix + "requests"),
                    "responses_429": list(tl.counters.get(prefix + "429", [0.0] * tl.n)),
                    "responses_503": list(tl.counters.get(prefix + "503", [0.0] * tl.n)),
                    "responses_403": list(tl.counters.get(prefix + "403", [0.0] * tl.n)),
                    "retry_after": list(tl.counters.get(prefix + "retry_after", [0.0] * tl.n)),
                    "pacing_rate": tl.level(prefix + "pacing_rate"),
                },
                "spans": site.spans.to_list(origin=tl.start),
            }
        )
    return {
        "report_version": REPORT_VERSION,
        "run_id": run_id,
        "spider": spider,
        "store": store,
        "started_at": datetime.fromtimestamp(tl.start, UTC).isoformat(),
        "finished_at": datetime.fromtimestamp(finished, UTC).isoformat(),
        "elapsed_seconds": round(finished - tl.start, 3),
        "finish_reason": get("finish_reason"),
        "totals": totals,
        "by_reason": by_reason(stats),
        "series": {
            "bucket_seconds": tl.width,
            "t": tl.times(),
            "items_per_second": tl.rate("items"),
            "images_per_second": tl.rate("images"),
            "rows_committed_per_second": tl.rate("rows_committed"),
            "outbox_backlog_shards": tl.level("outbox_backlog_shards"),
        },
        "sites": sites,
        "dataset": monitor.dataset.to_dict(),
        "plotted_sites": plotted_sites,
        "other_sites": len(monitor.other_sites),
        "stats": {k: _iso(v) if isinstance(v, datetime) else v for k, v in sorted(stats.items())},
    }


class CrawlReport:
    def __init__(self, crawler: Crawler, config: ReportConfig) -> None:
        self.crawler = crawler
        self.config = config
        assert crawler.stats is not None
        self.stats = crawler.stats
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = ReportConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("IMAGECRAWL_REPORT_ENABLED is off")
        return cls(crawler, config)

    async def spider_closed(self, reason: str) -> None:
        monitor = monitor_for(self.crawler)
        monitor.finish()  # the last sample, whichever spider_closed handler runs first
        # the store is still open: its owner closes it when the engine stops, after every spider_closed handler
        storage = crawl_storage(self.crawler)
        stats = dict(self.stats.get_stats())
        stats.setdefault("finish_reason", reason)
        spider = self.crawler.spider.name if self.crawler.spider is not None else "?"
        report = build_report(
            monitor,
            stats,
            run_id=storage.run_id,
            spider=spider,
            store=storage.store.url,
            plotted_sites=self.config.plotted_sites,
        )
        secrets = configured_secrets(self.crawler.settings) | redact.current_secrets()
        body = utf8_safe(redact.redact(json.dumps(report, ensure_ascii=False, default=str, indent=1), secrets)).encode()
        page = utf8_safe(redact.redact(render_html(report), secrets)).encode()
        base = f"{REPORT_PREFIX}/{storage.run_id}"
        try:
            await asyncio.to_thread(storage.store.put_bytes, f"{base}.json", body, "application/json")
            await asyncio.to_thread(storage.store.put_bytes, f"{base}.html", page, "text/html; charset=utf-8")
        except Exception as exc:
            self.stats.inc_value("imagecrawl/report/errors")
            logger.error("Could not write the crawl report to %s/%s: %s", storage.store.url, base, exc)
            return
        self.stats.set_value("imagecrawl/report/written", 1)
        logger.info("Crawl report: %s/%s.html (and .json)", storage.store.url.rstrip("/"), base)
