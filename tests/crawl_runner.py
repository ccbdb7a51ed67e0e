"""Test helper: run one or more crawls in a fresh process and write what they yielded as JSON.

    python -m tests.crawl_runner SPEC.json

SPEC is a list of ``{"spider": name, "args": {...}, "settings": {...}, "out": dir}``. All crawls run
concurrently in one ``AsyncCrawlerProcess`` (one process start for a whole test module). For each,
``<out>/items.jsonl`` gets one line per scraped item (every field except the image bytes, plus
``image_bytes_sha256`` computed from the bytes), ``<out>/stats.json`` the final stats, and
``<out>/error.txt`` the exception if the crawl could not start. Running crawls in a subprocess keeps
the reactor out of pytest's process (it cannot be restarted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from scrapy import signals
from scrapy.crawler import AsyncCrawlerProcess, Crawler
from scrapy.spiderloader import SpiderLoader
from scrapy.utils.project import get_project_settings


def _jsonable(item: Any) -> dict[str, Any]:
    data = dataclasses.asdict(item) if dataclasses.is_dataclass(item) else dict(item)
    image = data.pop("image", None) or {}
    body = image.get("bytes")
    data["image_bytes_sha256"] = hashlib.sha256(body).hexdigest() if body is not None else None
    data["image_path"] = image.get("path")
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


def main(spec_path: str) -> int:
    specs = json.loads(Path(spec_path).read_text())
    base = get_project_settings()
    loader = SpiderLoader.from_settings(base)
    process = AsyncCrawlerProcess(base, install_root_handler=True)
    for spec in specs:
        out = Path(spec["out"])
        out.mkdir(parents=True, exist_ok=True)
        settings = base.copy()
        settings.setdict(spec.get("settings", {}), priority="cmdline")
        crawler = Crawler(loader.load(spec["spider"]), settings)
        items_fh = open(out / "items.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed at exit

        def scraped(item: Any, fh: Any = items_fh) -> None:
            fh.write(json.dumps(_jsonable(item), ensure_ascii=False) + "\n")
            fh.flush()

        def closed(crawler: Crawler = crawler, out: Path = out) -> None:
            assert crawler.stats is not None
            stats = crawler.stats.get_stats()
            (out / "stats.json").write_text(json.dumps(stats, default=str, indent=1, sort_keys=True))

        crawler.signals.connect(scraped, signal=signals.item_scraped, weak=False)
        # stats are written after the spider_closed handlers ran, from the engine's close
        crawler.signals.connect(closed, signal=signals.engine_stopped, weak=False)
        task = process.crawl(crawler, **spec.get("args", {}))

        def done(t: Any, out: Path = out) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                (out / "error.txt").write_text(
                    f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
                )

        task.add_done_callback(done)
    process.start(install_signal_handlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
