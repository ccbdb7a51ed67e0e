"""A bare Scrapy 2.19 spider: fetches pages and images, no processing (the baseline of the throughput
benchmark). Plain Scrapy settings, not imagecrawl's: no add-on, no pipelines, no middlewares of ours.

    uv run python -m benchmarks.bare_spider --start http://127.0.0.1:PORT/gallery/page/1.html
    uv run python -m benchmarks.bare_spider --urls urls.txt --shard 0/2 --output out.parquet

URL-list mode is the floor the ``urls`` spider is compared with: fetch each image, sha256 it, keep
(url, sha256, bytes) in memory and write them as one Parquet file at close (``--output``); ``--shard I/N``
takes every N-th line from the I-th, as ``scrapy crawl urls -a shard=I/N`` does. Gallery mode follows
``div.grid a.card`` (detail pages), ``a.next[rel=next]`` (listing pages) and
``figure.artwork img.main`` (the image) — the selectors of the ``sandbox`` gallery profile. The final
stats are written as JSON to ``--stats-file``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import scrapy
from scrapy.crawler import AsyncCrawlerProcess
from scrapy.http import Response

logger = logging.getLogger(__name__)


class BareSpider(scrapy.Spider):
    name = "bare"

    def __init__(
        self,
        start: str | None = None,
        urls: str | None = None,
        shard: tuple[int, int] = (0, 1),
        output: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.start_url = start
        self.urls_file = urls
        self.shard = shard
        self.output = output
        self.rows: dict[str, list[Any]] = {"url": [], "sha256": [], "image": []}

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.urls_file:
            index, count = self.shard
            with open(self.urls_file, encoding="utf-8") as fh:
                for n, line in enumerate(fh):
                    url = line.strip()
                    if url and n % count == index:
                        yield scrapy.Request(url, callback=self.parse_image)
        elif self.start_url:
            yield scrapy.Request(self.start_url, callback=self.parse_listing)

    def parse_listing(self, response: Response) -> Iterator[scrapy.Request]:
        for href in response.css("div.grid a.card::attr(href)").getall():
            yield response.follow(href, self.parse_detail, priority=5)
        nxt = response.css("a.next[rel=next]::attr(href)").get()
        if nxt:
            yield response.follow(nxt, self.parse_listing)

    def parse_detail(self, response: Response) -> Iterator[scrapy.Request]:
        src = response.css("figure.artwork img.main::attr(src)").get()
        if src:
            yield response.follow(src, self.parse_image, priority=10)

    def parse_image(self, response: Response) -> None:
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("bare/images")
        stats.inc_value("bare/image_bytes", len(response.body))
        if self.output is not None:
            self.rows["url"].append(response.url)
            self.rows["sha256"].append(hashlib.sha256(response.body).hexdigest())
            self.rows["image"].append(response.body)

    def closed(self, reason: str) -> None:
        if self.output is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(self.rows), self.output, compression="zstd")


def settings_for(concurrency: int, concurrent_items: int, loop: str | None, log_level: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "CONCURRENT_ITEMS": concurrent_items,
        "DOWNLOAD_DELAY": 0,
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "LOG_LEVEL": log_level,
    }
    if loop:
        settings["ASYNCIO_EVENT_LOOP"] = loop
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--start", help="first gallery listing page")
    mode.add_argument("--urls", help="a text file of image URLs, one a line")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--concurrent-items", type=int, default=8)
    parser.add_argument("--loop", default=None, help="ASYNCIO_EVENT_LOOP, e.g. uvloop.Loop")
    parser.add_argument("--stats-file", type=Path, default=None)
    parser.add_argument("--shard", default="0/1", help="I/N: every N-th URL from the I-th (URL-list mode)")
    parser.add_argument("--output", type=Path, default=None, help="URL-list mode: write url, sha256, bytes here")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("-s", "--set", action="append", default=[], metavar="NAME=VALUE", help="extra Scrapy setting")
    args = parser.parse_args(argv)
    settings = settings_for(args.concurrency, args.concurrent_items, args.loop, args.log_level)
    settings.update(item.split("=", 1) for item in args.set)
    process = AsyncCrawlerProcess(settings)
    crawler = process.create_crawler(BareSpider)
    index, _, count = args.shard.partition("/")
    process.crawl(crawler, start=args.start, urls=args.urls, shard=(int(index), int(count or 1)), output=args.output)
    process.start()
    stats = crawler.stats.get_stats() if crawler.stats else {}
    if args.stats_file:
        args.stats_file.write_text(json.dumps(stats, default=str, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
