"""Polite defaults and component wiring. Every IMAGECRAWL_* setting is documented in docs/settings.md."""

from __future__ import annotations

BOT_NAME = "imagecrawl"
SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
COMMANDS_MODULE = "imagecrawl.commands"

ADDONS = {"imagecrawl.addon.ImagecrawlAddon": 0}

# --- identity: honest, with a contact (the addon builds USER_AGENT from IMAGECRAWL_CONTACT) ---
IMAGECRAWL_CONTACT = ""
ROBOTSTXT_OBEY = True
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False

# --- politeness: conservative defaults; raise them only for sites you own ---
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
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
IMAGECRAWL_AUTHOR_SALT = ""
IMAGECRAWL_MAX_IMAGE_PIXELS = 64_000_000
# Threads that build records (sha256, pHash decode, metadata) off the reactor thread; 0 = inline.
# These steps release the GIL for most of their time, so one crawl process uses a second core.
IMAGECRAWL_MEDIA_THREADS = 2

DOWNLOADER_MIDDLEWARES = {
    # Scrapy 2.19's robots.txt middleware lets requests that wait for robots.txt together through.
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "imagecrawl.downloadermiddlewares.robots.RobotsTxtMiddleware": 100,
    "imagecrawl.downloadermiddlewares.known.KnownImageMiddleware": 50,
}
IMAGECRAWL_SKIP_KNOWN_IMAGES = True

ITEM_PIPELINES = {
    "imagecrawl.pipelines.validate.ValidatePipeline": 100,
    "imagecrawl.pipelines.dedupe.DedupePipeline": 200,
    "imagecrawl.pipelines.parquet.ParquetPipeline": 300,
}

EXTENSIONS = {
    "imagecrawl.extensions.resume.ResumeGuard": 0,
    "imagecrawl.extensions.statsfile.StatsFile": 900,
}
IMAGECRAWL_STATS_FILE = ""

LOG_LEVEL = "INFO"
FEED_EXPORT_ENCODING = "utf-8"
