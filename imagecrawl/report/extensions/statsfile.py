"""Write the crawl's final stats as JSON (``IMAGECRAWL_STATS_FILE``), for scripts and monitoring."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Self

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from imagecrawl import redact
from imagecrawl.addon import configured_secrets
from imagecrawl.exitcodes import USAGE, set_exit_code
from imagecrawl.values import utf8_safe

logger = logging.getLogger(__name__)


class StatsFile:
    def __init__(self, crawler: Crawler, path: Path) -> None:
        self.crawler = crawler
        self.path = path
        self.secrets = configured_secrets(crawler.settings)
        # Registered late: runs after the pipelines' close_spider has committed the last shards.
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("IMAGECRAWL_STATS_FILE")
        if not path:
            raise NotConfigured  # off unless IMAGECRAWL_STATS_FILE is set
        return cls(crawler, Path(path))

    def engine_stopped(self) -> None:
        assert self.crawler.stats is not None
        stats: dict[str, Any] = self.crawler.stats.get_stats()
        tmp = self.path.with_name(self.path.name + ".tmp")
        secrets = self.secrets | redact.current_secrets()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(utf8_safe(redact.redact(json.dumps(stats, default=str, indent=1, sort_keys=True), secrets)))
            os.replace(tmp, self.path)
        except OSError as exc:  # checked at start (settings_check); the disk may still refuse it now
            tmp.unlink(missing_ok=True)
            logger.error("Cannot write the stats file %s: %s", self.path, exc)
            set_exit_code(self.crawler.stats, USAGE)
