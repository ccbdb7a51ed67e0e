"""Polite defaults and component wiring. Every IMAGECRAWL_* setting is documented in docs/settings.md."""

from __future__ import annotations

BOT_NAME = "imagecrawl"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
COMMANDS_MODULE = "imagecrawl.commands"

ADDONS = {
    "imagecrawl.addon.ImagecrawlAddon": 0,
    # With IMAGECRAWL_REDIS_URL (or REDIS_URL): shared frontier, dedupe ledger and rate gate (docs/distributed.md)
    "imagecrawl.distributed.addon.DistributedAddon": 10,
}

# --- identity: honest, with a contact (the addon builds USER_AGENT from IMAGECRAWL_CONTACT) ---
IMAGECRAWL_CONTACT = ""
ROBOTSTXT_OBEY = True
# robots.txt groups and X-Robots-Tag "<token>: ..." lines are matched on this product token.
ROBOTSTXT_USER_AGENT = "imagecrawl"
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False

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
# Scrapy 2.19 fans out one task per callback output up to CONCURRENT_ITEMS; 100 costs half the CPU.
CONCURRENT_ITEMS = 8
# Images first: finishing started items keeps the frontier (and memory) small.
DEPTH_PRIORITY = 0

# --- output ---
IMAGECRAWL_STORE = "data/"
IMAGECRAWL_STATE_DIR = ""
IMAGECRAWL_SHARD_MAX_ROWS = 10_000
IMAGECRAWL_SHARD_MAX_BYTES = 256 * 1024 * 1024
IMAGECRAWL_SHARD_MAX_SECONDS = 600.0
IMAGECRAWL_ROW_GROUP_ROWS = 512
IMAGECRAWL_SPOOL_BATCH_ROWS = 64
IMAGECRAWL_SPOOL_FLUSH_SECONDS = 1.0
IMAGECRAWL_OUTBOX_MAX_BYTES = 2 * 1024 * 1024 * 1024
IMAGECRAWL_COMMIT_RETRY_SECONDS = 2.0
IMAGECRAWL_CLOSE_COMMIT_TIMEOUT_SECONDS = 60.0
IMAGECRAWL_S3_RETRY_MODE = "standard"
IMAGECRAWL_S3_MAX_ATTEMPTS = 5
IMAGECRAWL_DEDUPE_ENABLED = True
IMAGECRAWL_NEAR_DEDUPE_ENABLED = True
IMAGECRAWL_NEAR_POLICY = "drop"  # or "keep": keep near-duplicates with duplicate_of set
IMAGECRAWL_NEAR_MAX_DISTANCE = 8  # Hamming distance on the 64-bit pHash (docs/near-duplicates.md)
IMAGECRAWL_AUTHOR_SALT = ""
IMAGECRAWL_MAX_IMAGE_PIXELS = 64_000_000

DOWNLOADER_MIDDLEWARES = {
    # distributed crawls (docs/distributed.md): the shared per-site rate gate, closest to the network
    "imagecrawl.distributed.middlewares.GlobalRateMiddleware": 960,
    # --- opt-outs, identity, network guard (docs/optout.md) ---
    "imagecrawl.extensions.identity.IdentityGuard": 1,
    "imagecrawl.downloadermiddlewares.errors.DownloadErrorsMiddleware": 2,
    "imagecrawl.downloadermiddlewares.netguard.NetGuardMiddleware": 10,
    # Scrapy 2.19's robots.txt middleware lets requests that wait for robots.txt together through;
    # optout.RobotsTxtMiddleware extends the fixed one in robots.py (counted skips, Crawl-delay).
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "imagecrawl.downloadermiddlewares.optout.RobotsTxtMiddleware": 100,
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": None,
    "imagecrawl.downloadermiddlewares.errors.HttpCompressionMiddleware": 590,
    "imagecrawl.downloadermiddlewares.errors.RedirectLoopCounter": 601,
    # Just outside pacing (950, on the pacing branch): a TDMRep-reserved request never takes a pacing slot.
    "imagecrawl.downloadermiddlewares.optout.OptOutMiddleware": 940,
    # ---
    "imagecrawl.downloadermiddlewares.known.KnownImageMiddleware": 50,
    # --- pacing, retries, bans (docs/pacing.md) ---
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,  # retries 429 at once, ignores Retry-After
    "imagecrawl.downloadermiddlewares.pacing.BackoffRetryMiddleware": 550,
    "imagecrawl.downloadermiddlewares.bans.BanMiddleware": 585,  # after decompression (590)
    "imagecrawl.downloadermiddlewares.pacing.PacingMiddleware": 950,  # closest to the network
}
SPIDER_MIDDLEWARES = {
    "imagecrawl.distributed.middlewares.LeaseSpiderMiddleware": 5,
    "imagecrawl.spidermiddlewares.optout.OptOutSpiderMiddleware": 550,
}
IMAGECRAWL_IDENTITY_ENABLED = True
IMAGECRAWL_NETGUARD_ENABLED = True
# Comma-separated CIDRs the network guard lets through (tests and the demo allow 127.0.0.0/8).
IMAGECRAWL_ALLOWED_NETWORKS = ""
IMAGECRAWL_NETGUARD_DNS_CACHE_SECONDS = 60.0
IMAGECRAWL_OPTOUT_ENABLED = True
IMAGECRAWL_OPTOUT_X_ROBOTS_TAG = True
IMAGECRAWL_OPTOUT_META_ROBOTS = True
IMAGECRAWL_OPTOUT_TDMREP = True
# Add "noindex", "noimageindex", "none" to honour them too.
IMAGECRAWL_OPTOUT_DIRECTIVES = ["noai", "noimageai"]
# JSON lines of every skip; "" = <state dir>/optout.jsonl, "-" = none.
IMAGECRAWL_OPTOUT_LOG = ""
# Hosts you own (subdomains included): robots.txt and opt-outs are not applied there (WARNING at start).
IMAGECRAWL_OPTOUT_OWNED_HOSTS: list[str] = []
IMAGECRAWL_DOWNLOAD_ERRORS_ENABLED = True
IMAGECRAWL_SKIP_KNOWN_IMAGES = True

# --- pacing (docs/pacing.md): per-site AIMD rate/concurrency, Retry-After, Crawl-delay, bans ---
AUTOTHROTTLE_ENABLED = False  # latency-only; the pacing middleware replaces it
IMAGECRAWL_PACING_ENABLED = True
IMAGECRAWL_PACING_SITE_KEY = "host"  # or "domain" (registered domain)
IMAGECRAWL_MAX_RATE_PER_SITE = 2.0  # requests/s; raise it only for sites you own
IMAGECRAWL_MAX_CONCURRENCY_PER_SITE = 2
IMAGECRAWL_PACING_START_RATE_PER_SECOND = 0.5
IMAGECRAWL_PACING_MIN_RATE_PER_SECOND = 0.02
IMAGECRAWL_PACING_DECREASE_FACTOR = 0.7
IMAGECRAWL_PACING_STARTUP_FACTOR = 1.5
IMAGECRAWL_PACING_STEP_SECONDS = 1.0
IMAGECRAWL_PACING_LATENCY_FACTOR = 3.0
IMAGECRAWL_PACING_LATENCY_MARGIN_SECONDS = 0.1
IMAGECRAWL_PACING_JITTER = 0.1
IMAGECRAWL_PACING_OBEY_CRAWL_DELAY = True
IMAGECRAWL_PACING_MAX_PARKED = 256
IMAGECRAWL_RETRY_AFTER_MAX_SECONDS = 3600.0
IMAGECRAWL_RETRY_ENABLED = True
# IMAGECRAWL_RETRY_TIMES defaults to RETRY_TIMES
IMAGECRAWL_RETRY_BACKOFF_SECONDS = 2.0
IMAGECRAWL_RETRY_MAX_BACKOFF_SECONDS = 120.0
IMAGECRAWL_BANS_ENABLED = True
IMAGECRAWL_BAN_BURST = 5
IMAGECRAWL_BAN_BURST_429 = 10
IMAGECRAWL_BAN_SOFT_THRESHOLD = 5
IMAGECRAWL_BAN_COOLDOWN_SECONDS = 60.0
IMAGECRAWL_BAN_MAX_COOLDOWN_SECONDS = 86400.0
IMAGECRAWL_BAN_MAX_PROBES = 5
IMAGECRAWL_BAN_CLOSE_WHEN_ALL_ABANDONED = True
IMAGECRAWL_BAN_HEALTHY_MARKERS: dict[str, str] = {}  # site -> regex a healthy page must match
# --- distributed crawling (docs/distributed.md): inactive while no Redis URL is set ---
IMAGECRAWL_REDIS_URL = ""
IMAGECRAWL_REDIS_PREFIX = "imagecrawl"
IMAGECRAWL_REDIS_CRAWL = ""
IMAGECRAWL_REDIS_LEASE_SECONDS = 60.0
IMAGECRAWL_REDIS_SEED_BATCH = 16
IMAGECRAWL_REDIS_RATE_ENABLED = True
IMAGECRAWL_REDIS_RATE_BURST = 1
IMAGECRAWL_REDIS_RATE_SPACING = 1.1
IMAGECRAWL_REDIS_RATE_INCREASE_PER_SECOND = 0.05
IMAGECRAWL_DEDUPE_BACKEND = "auto"

ITEM_PIPELINES = {
    "imagecrawl.pipelines.validate.ValidatePipeline": 100,
    "imagecrawl.pipelines.dedupe.DedupePipeline": 200,
    "imagecrawl.pipelines.parquet.ParquetPipeline": 300,
}

EXTENSIONS = {
    "imagecrawl.extensions.resume.ResumeGuard": 0,
    "imagecrawl.extensions.statsfile.StatsFile": 900,
    "imagecrawl.extensions.progress.ProgressLine": 950,
    "imagecrawl.extensions.report.CrawlReport": 960,
}
IMAGECRAWL_STATS_FILE = ""
# --- progress line and end-of-crawl report (docs/settings.md) ---
IMAGECRAWL_PROGRESS_ENABLED = True
IMAGECRAWL_PROGRESS_INTERVAL_SECONDS = 30.0
IMAGECRAWL_PROGRESS_SITES = 4
IMAGECRAWL_REPORT_ENABLED = True
IMAGECRAWL_REPORT_PLOTTED_SITES = 8
IMAGECRAWL_REPORT_MAX_SITES = 24
IMAGECRAWL_REPORT_BUCKETS = 512
IMAGECRAWL_MONITOR_SAMPLE_SECONDS = 1.0

LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"
