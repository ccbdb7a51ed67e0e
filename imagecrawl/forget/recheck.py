"""``imagecrawl recheck STORE``: visit every site that has rows in the store again, read its AI opt-outs
as a crawl does, and forget the rows of the sites (or pages) that now refuse AI training.

The visit is a Scrapy crawl of a small spider (:class:`RecheckSpider`) with the project's settings and
middlewares: identity guard, network guard, robots.txt (with its ``Content-Signal`` / ``Content-Usage``
lines), TDMRep, opt-out headers and page meta, pacing. Per site (an origin, ``scheme://host:port``) it
asks for the site's root page and a sample of the store's pages there (``IMAGECRAWL_TUNING['recheck_sample_pages']``).
What the opt-out components refuse is read back from their skip log; a page's own opt-out (``noai``
meta, ``X-Robots-Tag``, ``tdm-reservation``) from the request's meta.

* the root refused (robots.txt for our token, a site-wide Content-Signal/Content-Usage line, a TDMRep
  reservation of ``/``, the root page's own opt-out): every row of the site goes;
* only sampled pages refused: the rows of those pages go;
* a site that cannot be reached (DNS, connection, robots.txt unreachable, a guard refusal): nothing
  changes, it is reported.

Rows go through :func:`imagecrawl.forget.cli.run`, reason ``opt-out withdrawn``, dated in the audit log.
Exit status 0 done, 2 usage error, 3 store trouble.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from imagecrawl import meta
from imagecrawl.errors import ConfigError, StoreError
from imagecrawl.exitcodes import USAGE, exit_code, set_exit_code, status_of
from imagecrawl.forget import cli as forget_cli
from imagecrawl.forget.engine import now_iso
from imagecrawl.forget.selectors import Selection, parse_selector
from imagecrawl.storage.extensions import StorageOwner
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

REASON = "opt-out withdrawn"
#: the temporary folder of a recheck crawl's skip log
SKIP_LOG_PREFIX = "imagecrawl-recheck-"
#: the settings of the recheck crawl: it fetches pages only and writes nothing to the store
RECHECK_SETTINGS = {
    "IMAGECRAWL_DEDUPE_ENABLED": False,
    "IMAGECRAWL_PARQUET_ENABLED": False,
    "IMAGECRAWL_SKIP_KNOWN_IMAGES": False,
    "IMAGECRAWL_REPORT_ENABLED": False,
}


@dataclass
class Site:
    origin: str
    rows: int = 0
    pages: list[str] = field(default_factory=list)
    #: URL -> (reason, detail) of every refusal seen
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.origin + "/"

    def verdict(self) -> str:
        if self.root in self.refused:
            return "refuses"
        if self.refused:
            return "pages refuse"
        if not self.answered:
            return "unreachable"
        return "allows"


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def sample_key(url: str) -> bytes:
    """A page's place in its site's sample: the pages of the smallest keys are asked. A hash, so the sample
    is spread over the whole site (all its crawls, paths and shards), the same at every recheck, and kept
    in memory as it is read (``sample`` pages a site, however many rows)."""
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def sites_in_store(store: Any, sample: int) -> dict[str, Site]:
    """Every origin with rows in the store (by page URL, else image URL), its row count and a sample of
    up to ``sample`` of its page URLs (:func:`sample_key`)."""
    sites: dict[str, Site] = {}
    # per site: its sample as a max-heap (negated keys), and the same pages as a set
    picked: dict[str, tuple[list[tuple[bytes, str]], set[str]]] = {}
    for shard in store.list_shards():
        with store.open(shard.key) as fh:
            pf = pq.ParquetFile(fh)
            names = [c for c in ("page_url", "image_url") if c in pf.schema_arrow.names]
            table = pf.read(columns=names)
        pages = table.column("page_url").to_pylist() if "page_url" in names else [None] * table.num_rows
        images = table.column("image_url").to_pylist() if "image_url" in names else [None] * table.num_rows
        for page, image in zip(pages, images, strict=True):
            url = page or image
            origin = origin_of(url) if url else None
            if origin is None:
                continue
            site = sites.setdefault(origin, Site(origin))
            site.rows += 1
            if page and sample and page != site.root and origin_of(page) == origin:
                heap, chosen = picked.setdefault(origin, ([], set()))
                key = bytes(255 - b for b in sample_key(page))  # negated: the heap's top is the largest key
                if page in chosen:
                    continue
                if len(heap) < sample:
                    heapq.heappush(heap, (key, page))
                elif key > heap[0][0]:
                    chosen.discard(heapq.heapreplace(heap, (key, page))[1])
                else:
                    continue
                chosen.add(page)
    for origin, (heap, _) in picked.items():
        sites[origin].pages = [url for _, url in sorted(heap, reverse=True)]
    return sites


class RecheckSpider(scrapy.Spider):
    """Asks each site's root and sample pages through the crawl's middlewares; notes what was refused.

    Run by ``imagecrawl recheck`` (which applies the verdicts itself), or as ``scrapy crawl recheck``
    (``spiders/recheck.py``; the way Scrapyd schedules it): then it reads the sites from
    ``IMAGECRAWL_STORE`` at start and forgets at close (``-a dry_run=1``: only reports)."""

    name = "imagecrawl-recheck"
    custom_settings = {
        **RECHECK_SETTINGS,
        # it fetches pages and writes nothing: the store's components are off (named, so that they do not
        # log why they are off), and so are the crawl's progress line and report ("0 new rows stored")
        "DOWNLOADER_MIDDLEWARES": {"imagecrawl.dedupe.downloadermiddlewares.KnownImageMiddleware": None},
        "ITEM_PIPELINES": {
            "imagecrawl.dedupe.pipelines.DedupePipeline": None,
            "imagecrawl.storage.pipelines.ParquetPipeline": None,
        },
        "EXTENSIONS": {
            # every site refusing is an answer here, not a crawl that got nothing (exit 4)
            "imagecrawl.report.extensions.outcome.CrawlOutcome": None,
            "imagecrawl.report.extensions.progress.ProgressLine": None,
            "imagecrawl.report.extensions.report.CrawlReport": None,
        },
    }

    def __init__(self, sites: dict[str, Site] | None = None, dry_run: str | bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: None: a crawl started by name, which finds its sites in the store and forgets at close
        self.given = sites is not None
        self.sites: dict[str, Site] = sites or {}
        self.dry_run = str(dry_run).lower() in ("1", "true", "yes")

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        if not settings.get("IMAGECRAWL_OPTOUT_LOG"):
            # the opt-out components' skip log is where this crawl reads what was refused
            folder = Path(tempfile.mkdtemp(prefix=SKIP_LOG_PREFIX))
            settings.set("IMAGECRAWL_OPTOUT_LOG", str(folder / "optout.jsonl"), priority="spider")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if not self.given:
            settings = self.crawler.settings
            store, _state = forget_cli.open_for_forget(settings)
            self.sites = sites_in_store(store, tuning(settings).recheck_sample_pages)
            logger.info("Recheck: %d sites with rows in %s", len(self.sites), store.url)
        for site in self.sites.values():
            for url in [site.root, *site.pages]:
                yield scrapy.Request(
                    url,
                    callback=self.answered,
                    errback=self.failed,
                    dont_filter=True,
                    meta={meta.KIND: "page", meta.RECHECK_SITE: site.origin, "handle_httpstatus_all": True},
                )

    def answered(self, response: Response) -> None:
        site = self.sites[response.meta[meta.RECHECK_SITE]]
        url = response.request.url if response.request else response.url
        site.answered.add(url)
        page = response.meta.get(meta.OPTOUT_PAGE)
        if page:
            site.refused[url] = (str(page.get("reason")), str(page.get("detail")))

    def failed(self, failure: Failure) -> None:
        request = getattr(failure, "request", None)
        if request is None:
            return
        site = self.sites[request.meta[meta.RECHECK_SITE]]
        site.failed[request.url] = f"{failure.type.__name__ if failure.type else 'error'}: {failure.getErrorMessage()}"

    def closed(self, reason: str) -> None:
        if self.given:
            return  # imagecrawl recheck applies the verdicts itself
        settings = self.crawler.settings
        log = Path(str(settings.get("IMAGECRAWL_OPTOUT_LOG")))
        read_skip_log(log, self.sites)
        if log.parent.name.startswith(SKIP_LOG_PREFIX):  # the folder update_settings made
            shutil.rmtree(log.parent, ignore_errors=True)
        # this crawl's own hold on the store (a distributed worker's frontier opens it) goes first: else the
        # forget run below would find this very crawl writing into the store
        owner = self.crawler.get_extension(StorageOwner)
        if owner is not None:
            owner.close()
        try:
            store, state = forget_cli.open_for_forget(settings)
            result = apply(store, state, self.sites, settings, dry_run=self.dry_run)
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                raise
            logger.error("Recheck: nothing forgotten: %s", exc)
            assert self.crawler.stats is not None
            set_exit_code(self.crawler.stats, status)
            return
        for line in format_result(result).splitlines():
            logger.info("Recheck: %s", line)


def read_skip_log(path: Path, sites: dict[str, Site]) -> None:
    """What the opt-out components refused (their skip log): a refusal of that URL, unless it only says
    robots.txt could not be read (the site is unreachable, not refusing)."""
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        url, reason, detail = str(record.get("url")), str(record.get("reason")), str(record.get("detail") or "")
        origin = origin_of(url)
        if origin not in sites or "unreachable" in detail:
            continue
        sites[origin].refused[url] = (reason, detail)


def visit(sites: dict[str, Site], settings: Any) -> None:
    """The recheck crawl (blocks until it ends); a setting error is raised as :class:`ConfigError`."""
    from scrapy.crawler import AsyncCrawlerProcess

    from imagecrawl.commands.crawl import user_error

    failures: list[BaseException] = []
    process = AsyncCrawlerProcess(settings)
    crawler = process.create_crawler(RecheckSpider)
    result: Any = process.crawl(crawler, sites=sites)
    result.add_done_callback(lambda task: failures.append(task.exception()) if task.exception() else None)
    process.start()
    if failures:
        error = user_error(failures[0])
        if error is not None:
            raise error
        raise StoreError(f"the recheck crawl failed to start: {failures[0]}")
    if crawler.stats is not None and exit_code(crawler.stats) == USAGE:
        # the identity guard: no contact for a site that is not ours (it logged why)
        raise ConfigError(
            "the recheck visits sites that are not yours: set a contact, -s IMAGECRAWL_CONTACT=you@example.org"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagecrawl recheck",
        usage="%(prog)s STORE [--dry-run] [-s NAME=VALUE]... [--json]",
        description="Visit every site with rows in the store through the crawl's policy (pacing, identity, "
        "guards), re-read its AI opt-outs, and forget the rows of sites that now refuse AI training.",
        epilog="Exit status: 0 done, 2 usage error, 3 store trouble. Schedule it beside the crawls: docs/forget.md.",
    )
    parser.add_argument("store", metavar="STORE", help="a local folder or s3://bucket/prefix, as IMAGECRAWL_STORE")
    parser.add_argument("--dry-run", action="store_true", help="report what changed; forget nothing")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "-s",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a crawl setting, as for scrapy crawl (IMAGECRAWL_CONTACT, IMAGECRAWL_ALLOWED_NETWORKS, "
        "pacing caps, AWS_*)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = None
    try:
        settings = forget_cli.store_settings(args.store, args.settings)
        sample = tuning(settings).recheck_sample_pages
        if sample < 0:
            raise ConfigError(f"IMAGECRAWL_TUNING['recheck_sample_pages'] must be 0 or more, got {sample}")
        store, state = forget_cli.open_for_forget(settings)
        sites = sites_in_store(store, sample)
        with tempfile.TemporaryDirectory(prefix="imagecrawl-recheck-") as tmp:
            log = Path(tmp) / "optout.jsonl"
            settings.set("IMAGECRAWL_OPTOUT_LOG", str(log), priority="cmdline")
            for name, value in RECHECK_SETTINGS.items():
                settings.set(name, value, priority="cmdline")
            if sites:
                visit(sites, settings)
            read_skip_log(log, sites)
        result = apply(store, state, sites, settings, dry_run=args.dry_run)
    except Exception as exc:
        return forget_cli.stopped("imagecrawl recheck", args.store, exc, store)
    print(json.dumps(result, default=str) if args.json else format_result(result))
    return 0


def apply(store: Any, state: Path, sites: dict[str, Site], settings: Any, *, dry_run: bool) -> dict[str, Any]:
    """Forget the rows of every site (or page) that refuses now; one forget run for them all."""
    checked = now_iso()
    selectors = []
    for site in sites.values():
        if site.verdict() == "refuses":
            selectors.append(parse_selector("url-prefix", site.root))
        elif site.verdict() == "pages refuse":
            selectors += [parse_selector("url-prefix", url) for url in site.refused if url != site.root]
    forgotten: dict[str, Any] | None = None
    if selectors:
        selection = Selection.resolve(
            selectors, salt=None, near_distance=settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE")
        )
        publish = forget_cli.tombstone_publisher(settings)
        forgotten = forget_cli.run(store, state, selection, REASON, dry_run=dry_run, publish=publish, settings=settings)
    return {
        "checked_at": checked,
        "dry_run": dry_run,
        "sites": [
            {
                "site": s.origin,
                "rows": s.rows,
                "verdict": s.verdict(),
                "refused": {url: f"{r}: {d}" for url, (r, d) in sorted(s.refused.items())},
                "failed": dict(sorted(s.failed.items())) if s.verdict() == "unreachable" else {},
            }
            for s in sorted(sites.values(), key=lambda s: s.origin)
        ],
        "forget": forgotten,
    }


def format_result(result: dict[str, Any]) -> str:
    lines = [f"rechecked {len(result['sites'])} sites at {result['checked_at']}"]
    for site in result["sites"]:
        lines.append(f"  {site['verdict']:<13} {site['site']}  ({site['rows']} rows)")
        lines += [f"      refused {url}: {why}" for url, why in site["refused"].items()]
        lines += [f"      failed {url}: {why}" for url, why in list(site["failed"].items())[:3]]
    forgotten = result["forget"]
    if forgotten is None:
        lines.append("no site refuses AI training now: nothing forgotten")
    else:
        lines.append(forget_cli.format_result(forgotten))
    return "\n".join(lines)
