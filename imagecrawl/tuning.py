"""The crawl's internals: algorithm factors, timers, buffer sizes and bounds that a user rarely changes.

They are the fields of one frozen :class:`Tuning`, built in one place (:meth:`Tuning.from_settings`) from
the single advanced setting ``IMAGECRAWL_TUNING``, a dict of overrides::

    IMAGECRAWL_TUNING = {"circuit_cooloff_seconds": 5.0, "ban_burst": 10}
    scrapy crawl ... -s 'IMAGECRAWL_TUNING={"pacing_jitter": 0}'

The defaults below are the only ones (docs/settings.md#tuning lists them; a test compares the two). An
unknown key, a value of the wrong type or out of its range is one line naming the key (exit 2). No Scrapy:
any object with Scrapy's ``get``/``getdict`` getters will do.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, get_type_hints

from imagecrawl.errors import ConfigError, unknown_name

#: the setting that holds the overrides
SETTING = "IMAGECRAWL_TUNING"


@dataclass(frozen=True, slots=True)
class Tuning:
    # --- frontier ---
    frontier_memory_requests: int = 20_000  # requests kept in memory; the rest wait in a SQLite file
    frontier_read_ahead: int = 10_000  # the urls spider reads while fewer are queued among each site's next 8
    # --- store: shards, spool, outbox, commits ---
    first_shard_max_rows: int = 500  # the run's first shard rolls early (0: like the others)
    first_shard_max_seconds: float = 30.0  # ... or after this long (0: like the others)
    row_group_rows: int = 512
    spool_batch_rows: int = 64  # a crash loses at most one batch of an open shard
    spool_flush_seconds: float = 1.0  # ... and the spool is flushed at least this often (0: no timer)
    outbox_max_bytes: int = 2 * 1024 * 1024 * 1024  # back-pressure on finished, uncommitted shards
    commit_retry_seconds: float = 2.0  # first delay before retrying a failed commit (doubles up to 300 s)
    close_commit_timeout_seconds: float = 60.0  # at close, wait this long for pending commits (then exit 3)
    shard_flush_on_idle: bool | None = None  # None: on when distributed (the distributed add-on turns it on)
    s3_retry_mode: str = "standard"  # botocore: standard, adaptive, legacy
    s3_max_attempts: int = 5
    # --- records ---
    validate_enabled: bool = True  # the validation pipeline
    max_image_pixels: int = 64_000_000  # decompression-bomb guard
    media_inline_max_bytes: int = 16_384  # images this small are built on the reactor thread, not handed off
    incremental_known_run: int = 50  # stop paging after this many known items in a row (0: watermark only)
    claim_wait_seconds: float = 900.0  # an image another run claimed waits this long in the frontier, then is fetched
    claim_wait_item_seconds: float = 60.0  # a fetched one another run claimed meanwhile waits this long to be decided
    # --- sitemaps ---
    sitemap_max_bytes: int = 50 * 1024 * 1024
    sitemap_max_decompressed_bytes: int = 50 * 1024 * 1024
    sitemap_max_urls: int = 50_000
    sitemap_max_depth: int = 3
    sitemap_max_sitemaps: int = 1000
    # --- opt-outs, robots.txt, network guard ---
    optout_x_robots_tag: bool = True
    optout_meta_robots: bool = True
    optout_tdmrep: bool = True
    optout_content_signal: bool = True
    optout_content_usage: bool = True
    optout_embedded: bool = True
    robots_retry_seconds: float = 300.0  # an unreachable robots.txt is fetched again after this (doubling)
    policy_max_bytes: int = 512 * 1024  # robots.txt / tdmrep.json are read this far
    policy_ttl_seconds: float = 86400.0  # ... and fetched again when this old (at most a day, RFC 9309)
    policy_timeout_seconds: float = 5.0  # download_timeout of policy fetches and of a site's first requests
    netguard_dns_cache_seconds: float = 60.0
    download_errors_enabled: bool = True  # failures given up on: one WARNING and a counted skip
    # --- pacing ---
    pacing_min_rate_per_second: float = 0.02
    pacing_decrease_factor: float = 0.7
    pacing_startup_factor: float = 1.5
    pacing_step_seconds: float = 1.0
    pacing_latency_factor: float = 3.0
    pacing_latency_margin_seconds: float = 0.1
    pacing_jitter: float = 0.1
    pacing_obey_crawl_delay: bool = True
    pacing_forget_idle_seconds: float = 300.0  # 0: keep every site's learned state
    circuit_enabled: bool = True
    circuit_failures: int = 2
    circuit_cooloff_seconds: float = 1.0
    circuit_max_probes: int = 2
    retry_after_max_seconds: float = 3600.0
    retry_backoff_seconds: float = 2.0
    retry_max_backoff_seconds: float = 120.0
    # --- bans ---
    ban_burst: int = 5
    ban_burst_429: int = 10
    ban_soft_threshold: int = 5
    ban_cooldown_seconds: float = 60.0
    ban_max_cooldown_seconds: float = 86400.0
    ban_max_probes: int = 5
    ban_close_when_all_abandoned: bool = True
    ban_challenge_markers: tuple[str, ...] = (
        "cf-browser-verification",
        "challenge-platform",
        "_cf_chl_opt",
        "<title>Just a moment...</title>",
        "<title>Attention Required! | Cloudflare</title>",
        "captcha-delivery.com",
        "px-captcha",
        "_Incapsula_Resource",
        "sucuri-cloudproxy",
        'id="challenge-form"',
    )
    # --- distributed crawling ---
    redis_frontier_enabled: bool = True
    redis_lease_seconds: float = 60.0
    redis_seed_batch: int = 16
    redis_rate_enabled: bool = True
    redis_rate_burst: int = 1
    redis_rate_spacing: float = 1.1
    redis_rate_increase_per_second: float = 0.05
    dedupe_backend: str = "auto"  # or "sqlite", "redis"; auto: Redis when a Redis URL is set
    recheck_sample_pages: int = 3
    # --- browser rendering ---
    browser_headless: bool = True
    browser_args: tuple[str, ...] = ()
    browser_scroll_idle_seconds: float = 2.0
    browser_max_scrolls: int = 200
    browser_timeout_seconds: float = 30.0
    browser_max_pages: int = 4
    browser_block_types: tuple[str, ...] = (
        "font",
        "media",
        "image",
        "manifest",
        "texttrack",
        "eventsource",
        "websocket",
    )
    browser_block_patterns: tuple[str, ...] = (
        r"analytics",
        r"/collect\b",
        r"track(ing|er)?\b",
        r"pixel",
        r"beacon",
        r"gtag|googletagmanager|doubleclick|facebook\.net|hotjar|segment\.(io|com)|matomo|plausible",
    )
    browser_allow_third_party: bool = False
    # --- progress line, report, monitor, feeds ---
    progress_enabled: bool = True
    progress_sites: int = 4
    report_plotted_sites: int = 8
    report_max_sites: int = 24
    report_buckets: int = 512
    monitor_sample_seconds: float = 1.0
    feed_parquet_rows: int = 1000

    @classmethod
    def from_settings(cls, settings: Any) -> Tuning:
        """The defaults with ``IMAGECRAWL_TUNING``'s overrides; :class:`ConfigError` (one line) for a bad
        key or value."""
        given = overrides(settings)
        if not given:
            return _DEFAULT
        try:
            key = json.dumps(given, sort_keys=True)
        except (TypeError, ValueError):
            return _build(tuple(given.items()))
        return _cached(key)


def overrides(settings: Any) -> dict[str, Any]:
    """The keys ``IMAGECRAWL_TUNING`` gives (a dict, or its JSON text from ``-s``), unchecked."""
    raw = settings.get(SETTING)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigError(f"setting {SETTING} must be a JSON object, got {raw!r}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"setting {SETTING} must be a dict (a JSON object), got {raw!r}")
    return dict(raw)


def fields() -> dict[str, Any]:
    """Every key of ``IMAGECRAWL_TUNING`` and its default."""
    return {f.name: getattr(_DEFAULT, f.name) for f in dataclasses.fields(Tuning)}


#: keys and the values they accept (checked after the type; NaN and infinity never pass)
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "pacing_min_rate_per_second": (lambda v: v > 0, "a number > 0"),
    "pacing_decrease_factor": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "pacing_startup_factor": (lambda v: v > 1, "a number > 1"),
    "pacing_jitter": (lambda v: v >= 0, "a number >= 0"),
    "media_inline_max_bytes": (lambda v: v >= 0, "an integer >= 0"),
    "claim_wait_seconds": (lambda v: v >= 0, "a number >= 0"),
    "claim_wait_item_seconds": (lambda v: v >= 0, "a number >= 0"),
    "policy_max_bytes": (lambda v: v >= 1024, "an integer >= 1024"),
    "policy_ttl_seconds": (lambda v: 0 < v <= 86400, "a number > 0 and at most 86400"),
    "redis_lease_seconds": (lambda v: v > 0, "a number > 0"),
    "redis_rate_spacing": (lambda v: v >= 1, "a number >= 1"),
}
#: keys that take one of a few words
CHOICES: dict[str, tuple[str, ...]] = {
    "s3_retry_mode": ("standard", "adaptive", "legacy"),
    "dedupe_backend": ("auto", "sqlite", "redis"),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(name: str, kind: Any, value: Any) -> Any:
    what = f"{SETTING} key {name!r}"
    text = str(kind)
    if kind is bool or text == "bool | None":
        if value is None and text == "bool | None":
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    if kind is int or kind is float:
        wanted = "an integer" if kind is int else "a number"
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be {wanted}, got {value!r}") from None
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise ConfigError(f"{what} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}")
        converted: float = int(number) if kind is int else number
        rule = RANGES.get(name)
        if rule is not None and not rule[0](converted):
            raise ConfigError(f"{what} must be {rule[1]}, got {value!r}")
        return converted
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, got {value!r}")
        allowed = CHOICES.get(name)
        if allowed and value.strip().lower() not in allowed:
            raise ConfigError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        return value.strip().lower() if allowed else value
    # tuple[str, ...]: a list of strings, or one comma-separated string
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


_HINTS = get_type_hints(Tuning)


def _build(items: tuple[tuple[Any, Any], ...]) -> Tuning:
    known = {f.name for f in dataclasses.fields(Tuning)}
    changes: dict[str, Any] = {}
    for name, value in items:
        if name not in known:
            raise unknown_name(f"{SETTING} key", str(name), known, more="docs/settings.md#tuning")
        changes[name] = _convert(name, _HINTS[name], value)
    return dataclasses.replace(_DEFAULT, **changes)


@lru_cache(maxsize=64)
def _cached(key: str) -> Tuning:
    return _build(tuple(json.loads(key).items()))


_DEFAULT = Tuning()
#: the defaults, for the typed configs built from them (BanConfig, CircuitConfig, ...): never restated
DEFAULTS = _DEFAULT


def tuning(settings: Any) -> Tuning:
    """The crawl's :class:`Tuning` (what ``IMAGECRAWL_TUNING`` overrides, on the defaults)."""
    return Tuning.from_settings(settings)
