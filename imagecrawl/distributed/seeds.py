"""``imagecrawl seed``: push start URLs into a distributed crawl, or reset its frontier.

    imagecrawl seed --redis redis://host:6379/0 gallery https://example.org/gallery/?page=1 ...
    imagecrawl seed --redis ... gallery -f urls.txt          # one URL (or JSON object) a line; - for stdin
    imagecrawl seed --redis ... gallery --reset               # forget the crawl's queue, seen-set and leases

Any running worker of the crawl (``scrapy crawl gallery -s IMAGECRAWL_REDIS_URL=...``) takes pushed seeds
when it has nothing else to do and turns each into the spider's seed request (``spider.seed_request(url)``,
else a plain request to ``parse``); a JSON line ``{"url": ..., "meta": {...}}`` adds request meta. Seeds
pass the crawl's shared dupefilter like any request. The crawl name is the spider's name unless the
workers set ``IMAGECRAWL_REDIS_CRAWL``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from imagecrawl import defaults as project_settings
from imagecrawl.distributed.config import CrawlKeys
from imagecrawl.errors import missing_extra

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)


def push_seeds(client: redis.Redis, keys: CrawlKeys, seeds: Iterable[str]) -> int:
    """Append seeds (URLs or JSON objects with a ``url``) to the crawl's seed list; returns how many."""
    batch: list[str] = []
    for raw in seeds:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            obj = json.loads(line)
            if not isinstance(obj, dict) or not str(obj.get("url", "")).startswith(("http://", "https://")):
                raise ValueError(f"a JSON seed needs an http(s) url: {line[:200]}")
        elif not line.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {line[:200]}")
        batch.append(line)
    if batch:
        client.rpush(keys.seeds, *batch)
    return len(batch)


def reset_crawl(client: redis.Redis, keys: CrawlKeys) -> int:
    """Delete the crawl's frontier (queue, seen-set, leases, seeds). The dedupe ledger stays."""
    n = int(client.delete(*keys.all()))
    batch: list[Any] = []
    for key in client.scan_iter(match=_glob_escape(keys.queue_prefix) + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            n += int(client.delete(*batch))
            batch.clear()
    if batch:
        n += int(client.delete(*batch))
    return n


def _glob_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl seed", description=__doc__.split("\n\n")[0])
    parser.add_argument("crawl", help="the crawl's name: the spider name, or the workers' IMAGECRAWL_REDIS_CRAWL")
    parser.add_argument("urls", nargs="*", help="seed URLs")
    parser.add_argument(
        "--redis",
        default=os.environ.get("IMAGECRAWL_REDIS_URL") or os.environ.get("REDIS_URL") or "",
        help="Redis URL (default: $IMAGECRAWL_REDIS_URL or $REDIS_URL)",
    )
    parser.add_argument(
        "--prefix", default=project_settings.IMAGECRAWL_REDIS_PREFIX, help="IMAGECRAWL_REDIS_PREFIX of the workers"
    )
    parser.add_argument("-f", "--file", help="read seeds from this file, one a line ('-': standard input)")
    parser.add_argument("--reset", action="store_true", help="clear the crawl's frontier first")
    args = parser.parse_args(argv)  # --help works without the redis extra
    if not args.redis:
        parser.error("no Redis URL: pass --redis or set IMAGECRAWL_REDIS_URL")
    try:
        import redis
    except ModuleNotFoundError as exc:
        raise missing_extra("imagecrawl seed", "redis", exc.name or "redis") from None
    client = redis.Redis.from_url(args.redis)
    keys = CrawlKeys(args.prefix, args.crawl)
    if args.reset:
        print(f"reset {keys.base}: {reset_crawl(client, keys)} key(s) deleted")
    seeds: list[str] = list(args.urls)
    if args.file:
        fh = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with fh:
            seeds.extend(fh)
    try:
        n = push_seeds(client, keys, seeds)
    except ValueError as exc:
        parser.error(str(exc))
    if n or not args.reset:
        print(f"pushed {n} seed(s) to {keys.seeds} ({client.llen(keys.seeds)} waiting)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
