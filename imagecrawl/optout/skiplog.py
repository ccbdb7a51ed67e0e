"""The skip log of a crawl's opt-outs: counted in the stats and listed as JSON lines. No Scrapy."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import IO, Any

from imagecrawl import redact

logger = logging.getLogger(__name__)


class SkipLog:
    """Counts and lists every skip of one crawl (shared by the downloader and spider middlewares):
    a stat ``imagecrawl/optout/<reason>`` and one JSON line in the skip log (``IMAGECRAWL_OPTOUT_LOG``)."""

    def __init__(self, stats: Any, log_path: Path | None) -> None:
        self.stats = stats
        self.log_path = log_path
        self._fh: IO[str] | None = None

    def skip(self, reason: str, url: str, detail: str = "", page: str | None = None) -> None:
        self.stats.inc_value(f"imagecrawl/optout/{reason}")
        self.stats.inc_value("imagecrawl/optout/skipped")
        logger.info("Opted out (%s%s): %s", reason, f": {detail}" if detail else "", url)
        if self.log_path is None:
            return
        try:
            if self._fh is None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            record = {"t": round(time.time(), 3), "reason": reason, "url": url, "detail": detail}
            if page:
                record["page"] = page
            self._fh.write(redact.mask(json.dumps(record, ensure_ascii=False)) + "\n")
        except OSError as exc:
            self.stats.inc_value("imagecrawl/optout/log_errors")
            logger.warning("Cannot write the opt-out log %s: %s", self.log_path, exc)
            self.log_path = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
