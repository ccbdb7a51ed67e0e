"""First pipeline: every record is well-formed before it costs anything downstream."""

from __future__ import annotations

import logging
import math
from typing import Any, Self

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

REQUIRED = ("id", "source", "image_url", "image_sha256", "crawled_at")
MAX_TEXT = {"prompt": 65_536, "negative_prompt": 65_536, "params": 262_144}


class ValidatePipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not tuning(crawler.settings).validate_enabled:
            raise NotConfigured("IMAGECRAWL_TUNING['validate_enabled'] is off")
        return cls(crawler)

    def _drop(self, reason: str, adapter: ItemAdapter) -> DropItem:
        self.stats.inc_value(f"imagecrawl/validate/dropped/{reason}")
        return DropItem(f"invalid record ({reason}): {adapter.get('image_url')}", log_level="WARNING")

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        for name in REQUIRED:
            if not adapter.get(name):
                raise self._drop(f"missing_{name}", adapter)
        image = adapter.get("image")
        if not image or not isinstance(image, dict) or not image.get("bytes"):
            raise self._drop("missing_image", adapter)
        for name, limit in MAX_TEXT.items():
            value = adapter.get(name)
            if isinstance(value, str) and len(value) > limit:
                # Keep the record, cut the field, and say so.
                adapter[name] = value[:limit]
                self.stats.inc_value(f"imagecrawl/validate/truncated/{name}")
                logger.info("Truncated %s of %s to %d characters", name, adapter.get("id"), limit)
        cfg = adapter.get("cfg_scale")
        if cfg is not None and (not isinstance(cfg, (int, float)) or not math.isfinite(cfg)):
            adapter["cfg_scale"] = None
            self.stats.inc_value("imagecrawl/validate/cleared/cfg_scale")
        return item
