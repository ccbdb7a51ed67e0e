"""Every default of imagecrawl: the user-facing IMAGECRAWL_* settings, the Scrapy settings imagecrawl gives
its own value, and the components it installs. The internals (algorithm factors, timers, buffer sizes) are
the fields of :class:`imagecrawl.tuning.Tuning`, with their defaults there, overridden through the one
advanced setting ``IMAGECRAWL_TUNING``. The add-on (:class:`imagecrawl.Addon`) applies them at add-on
priority, so a project's own settings, a spider's ``custom_settings`` and ``-s`` win over them;
imagecrawl/settings.py holds only what this project itself sets.

Components read a setting without restating a fallback. Where ``""`` or ``None`` stands for a value
derived at run time (from the store, another setting, the spider), the comment says so. Every setting is
documented in docs/settings.md; tests/test_docs_settings_stats.py checks all of this. Unit tests get these
values through tests/crawlers.py.
"""

from __future__ import annotations

# --- identity: honest, with a contact (the addon builds USER_AGENT from IMAGECRAWL_CONTACT) ---
IMAGECRAWL_CONTACT = ""
ROBOTSTXT_OBEY = True
# robots.txt groups and X-Robots-Tag "<token>: ..." lines are matched on this product token.
ROBOTSTXT_USER_AGENT = "imagecrawl"
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
# Scrapy 2.19's RemoteControl: an HTTP server that runs Python code sent to it. Off unless you turn it on.
REMOTE_CONTROL_ENABLED = False
# Scrapy's check for "return value" in generator callbacks caches by a weak reference to the callback,
# and a bound method is a new object every time: it re-reads and re-parses the callback's source for
# every response (4 % of a gallery crawl's reactor time). The spiders' tests cover what it warns about.
WARN_ON_GENERATOR_RETURN_VALUE = False

# --- politeness: conservative defaults; raise them only for sites you own ---
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
# 0: the pacing middleware spaces requests per site (a non-zero DOWNLOAD_DELAY is a floor of its gate).
# With IMAGECRAWL_PACING_ENABLED = False set DOWNLOAD_DELAY (or AutoThrottle) yourself.
DOWNLOAD_DELAY = 0
DOWNLOAD_TIMEOUT = 60
DOWNLOAD_MAXSIZE = 50 * 1024 * 1024
DOWNLOAD_WARNSIZE = 16 * 1024 * 1024
RETRY_TIMES = 3
# Scrapy 2.19 starts CONCURRENT_ITEMS tasks for every callback's output, however few it yields (100 costs
# half the CPU). imagecrawl's callbacks yield at most one item (an image's record), so one is enough.
CONCURRENT_ITEMS = 1
# Images first: finishing started items keeps the frontier (and memory) small.
DEPTH_PRIORITY = 0
# The site-aware frontier (docs/architecture.md#the-frontier): per-site queues, a request leaves only
# when its site may send now, so waiting requests hold no CONCURRENT_REQUESTS slot.
SCHEDULER = "imagecrawl.pacing.scheduler.FrontierScheduler"
# Scrapy's duplicate filter with a seen-set of 16 bytes a request instead of about 90 (a list of
# millions of URLs); JOBDIR's requests.seen is Scrapy's own format.
DUPEFILTER_CLASS = "imagecrawl.pacing.scheduler.CompactDupeFilter"

# --- output: store, shards, commits ---
IMAGECRAWL_STORE = "data/"  # a local folder or s3://bucket/prefix
# "": <store>/_state for a local store, data/_state/s3/<bucket>-<prefix>-<hash> for S3
IMAGECRAWL_STATE_DIR = ""
IMAGECRAWL_WORKER_ID = ""  # "": host name + pid (the worker part of the run id)
IMAGECRAWL_PARQUET_ENABLED = True
IMAGECRAWL_SHARD_MAX_ROWS = 10_000
IMAGECRAWL_SHARD_MAX_BYTES = 256 * 1024 * 1024
IMAGECRAWL_SHARD_MAX_SECONDS = 600.0
# Write a probe to the store when the crawl starts: an unwritable store stops it at once (exit 3).
# False: start anyway (a store that is down for a while); shards wait in the outbox until it is back.
IMAGECRAWL_STORE_PROBE = True
# S3 stores: endpoint and credentials come from Scrapy's AWS_* settings
AWS_USE_SSL = True

# --- records: validation, dedupe, media ---
IMAGECRAWL_DEDUPE_ENABLED = True
IMAGECRAWL_NEAR_DEDUPE_ENABLED = True
IMAGECRAWL_NEAR_POLICY = "drop"  # or "keep": keep near-duplicates with duplicate_of set
IMAGECRAWL_NEAR_MAX_DISTANCE = 8  # Hamming distance on the 64-bit pHash (docs/near-duplicates.md)
IMAGECRAWL_AUTHOR_SALT = ""
# Threads that build records (sha256, pHash decode, metadata) off the reactor thread; 0 = inline.
# These steps release the GIL for most of their time, so one crawl process uses a second core.
IMAGECRAWL_MEDIA_THREADS = 2
# Images whose record id or URL is already in the store are not downloaded again.
IMAGECRAWL_SKIP_KNOWN_IMAGES = True

# In the order requests pass them (process_request); responses go back up. The distributed add-on
# adds its own when a Redis URL is set (docs/distributed.md). docs/architecture.md explains each.
DOWNLOADER_MIDDLEWARES = {
    "imagecrawl.guard.downloadermiddlewares.identity.IdentityGuard": 1,  # no contact, no crawl of others' sites
    "imagecrawl.downloadermiddlewares.DownloadErrorsMiddleware": 2,  # last in process_exception
    "imagecrawl.jobdir.downloadermiddlewares.KeepOnCloseMiddleware": 3,  # JOBDIR: a request cut off by the stop is kept
    "imagecrawl.guard.downloadermiddlewares.netguard.NetGuardMiddleware": 10,  # no private networks
    "imagecrawl.dedupe.downloadermiddlewares.KnownImageMiddleware": 50,  # skip what the store holds
    # Scrapy 2.19's robots.txt middleware lets requests that wait for robots.txt together through.
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "imagecrawl.optout.downloadermiddlewares.robots.RobotsMiddleware": 100,
    # Scrapy's retries 429 at once and ignores Retry-After.
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "imagecrawl.pacing.downloadermiddlewares.retry.BackoffRetryMiddleware": 550,
    "imagecrawl.pacing.downloadermiddlewares.bans.BanMiddleware": 585,  # sees decompressed bodies (590)
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": None,
    "imagecrawl.downloadermiddlewares.HttpCompressionMiddleware": 590,
    "imagecrawl.downloadermiddlewares.RedirectLoopCounter": 601,
    # Just outside pacing: a TDMRep-reserved request never takes a pacing slot.
    "imagecrawl.optout.downloadermiddlewares.optout.OptOutMiddleware": 940,
    "imagecrawl.pacing.downloadermiddlewares.pacing.PacingMiddleware": 950,  # closest to the network
}
SPIDER_MIDDLEWARES = {
    "imagecrawl.optout.spidermiddlewares.OptOutSpiderMiddleware": 550,
}

# --- incremental runs (docs/spiders.md#incremental-runs): newest-first listings stop at what the store holds ---
# False: no watermarks are read or written.
IMAGECRAWL_INCREMENTAL_ENABLED = True
# True: walk every listing in full (the watermarks are still moved when the walk completes).
IMAGECRAWL_INCREMENTAL_FULL_WALK = False

# --- identity, opt-outs, network guard (docs/optout.md); switching a rule off is logged at WARNING ---
IMAGECRAWL_IDENTITY_ENABLED = True
IMAGECRAWL_NETGUARD_ENABLED = True
# Comma-separated CIDRs the network guard lets through (tests and the demo allow 127.0.0.0/8).
IMAGECRAWL_ALLOWED_NETWORKS = ""
# The guard again at connect time: the address actually connected to must pass too (DNS rebinding).
TWISTED_DNS_RESOLVER = "imagecrawl.guard.resolver.GuardedResolver"
IMAGECRAWL_OPTOUT_ENABLED = True
# Add "noindex", "noimageindex", "none" to honour them too.
IMAGECRAWL_OPTOUT_DIRECTIVES = ["noai", "noimageai"]
# JSON lines of every skip; "" = <state dir>/optout.jsonl, "-" = none.
IMAGECRAWL_OPTOUT_LOG = ""
# Hosts you own (subdomains included): robots.txt and opt-outs are not applied there (WARNING at start).
IMAGECRAWL_OPTOUT_OWNED_HOSTS: list[str] = []

# --- pacing (docs/pacing.md): per-site AIMD rate/concurrency, Retry-After, Crawl-delay, bans ---
AUTOTHROTTLE_ENABLED = False  # latency-only; the pacing middleware replaces it
IMAGECRAWL_PACING_ENABLED = True
IMAGECRAWL_PACING_SITE_KEY = "host"  # or "domain" (registered domain)
IMAGECRAWL_MAX_RATE_PER_SITE = 2.0  # requests/s; raise it only for sites you own
IMAGECRAWL_MAX_CONCURRENCY_PER_SITE = 2
IMAGECRAWL_PACING_START_RATE_PER_SECOND = None  # None: a quarter of IMAGECRAWL_MAX_RATE_PER_SITE
IMAGECRAWL_BANS_ENABLED = True
IMAGECRAWL_BAN_HEALTHY_MARKERS: dict[str, str] = {}  # site -> regex a healthy page must match

# --- distributed crawling (docs/distributed.md): inactive while no Redis URL is set ---
IMAGECRAWL_REDIS_URL = ""  # "": REDIS_URL (scrapy-redis's name), if set
IMAGECRAWL_REDIS_PREFIX = "imagecrawl"
IMAGECRAWL_REDIS_CRAWL = ""  # "": the spider name
# Extension points (docs/settings.md#extension-points), import paths; "": the in-process default.
# The distributed add-on sets them.
IMAGECRAWL_LEDGER_FACTORY = ""
IMAGECRAWL_SHARED_LIMITER_FACTORY = ""
IMAGECRAWL_TOMBSTONES_FACTORY = ""  # "" = the store's tombstones (docs/forget.md); distributed: + Redis
IMAGECRAWL_PACING_GATE_FACTORY = ""

# --- browser rendering (gallery profiles with render = "browser"; scrapy-playwright) ---
IMAGECRAWL_BROWSER_EXECUTABLE = "/usr/bin/chromium"

ITEM_PIPELINES = {
    "imagecrawl.pipelines.ValidatePipeline": 100,
    "imagecrawl.dedupe.pipelines.DedupePipeline": 200,
    "imagecrawl.storage.pipelines.ParquetPipeline": 300,
}

EXTENSIONS = {
    # the owner of the store, the dedupe ledger and the near index: opened on first use, closed when the engine stops
    "imagecrawl.storage.extensions.StorageOwner": -10,
    "imagecrawl.jobdir.extensions.ResumeGuard": 0,
    "imagecrawl.jobdir.extensions.JobdirGuard": 1,  # JOBDIR: an unserializable request is an ERROR
    "imagecrawl.report.extensions.monitor.Monitor": 930,  # what the progress line and the report show
    "imagecrawl.report.extensions.statsfile.StatsFile": 900,
    "imagecrawl.report.extensions.outcome.CrawlOutcome": 940,  # nothing fetched: closes with a reason, exit 4
    "imagecrawl.report.extensions.progress.ProgressLine": 950,
    "imagecrawl.report.extensions.report.CrawlReport": 960,
}

# --- progress line, end-of-crawl report, monitoring ---
IMAGECRAWL_STATS_FILE = ""  # a path: the final stats as JSON; "": off
IMAGECRAWL_PROGRESS_INTERVAL_SECONDS = 30.0
IMAGECRAWL_REPORT_ENABLED = True

# --- internals: algorithm factors, timers, buffers and bounds (imagecrawl/tuning.py has their defaults) ---
# A dict of overrides of imagecrawl.tuning.Tuning's fields, e.g. {"circuit_cooloff_seconds": 5.0}
# (docs/settings.md#tuning); an unknown key or a bad value is one line, exit 2.
IMAGECRAWL_TUNING: dict[str, object] = {}

LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"

# --- feed exports (scrapy crawl -O out.jsonl / .json / .csv / .xml / .parquet; Scrapyd items_dir) ---
FEED_EXPORTERS = {
    "json": "imagecrawl.feeds.JsonItemExporter",
    "jsonlines": "imagecrawl.feeds.JsonLinesItemExporter",
    "jsonl": "imagecrawl.feeds.JsonLinesItemExporter",
    "jl": "imagecrawl.feeds.JsonLinesItemExporter",
    "csv": "imagecrawl.feeds.CsvItemExporter",
    "xml": "imagecrawl.feeds.XmlItemExporter",
    "parquet": "imagecrawl.feeds.ParquetItemExporter",
}
IMAGECRAWL_FEED_IMAGES = "omit"  # the `image` field of a feed: omit | base64 | path
IMAGECRAWL_FEED_IMAGES_DIR = "feed-images"  # where `path` writes <image_sha256>.<ext>
