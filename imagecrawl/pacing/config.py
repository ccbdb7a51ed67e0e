"""Pacing, ban and retry settings read once into typed configs (``from_settings``). No Scrapy: any
object with Scrapy's ``getfloat``/``getint``/``getbool``/``get``/``getlist`` getters will do.

Every default lives in ``imagecrawl/defaults.py`` (settings) or ``imagecrawl/tuning.py`` (internals); the
configs' field defaults are taken from there, never restated."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Self

from imagecrawl import defaults
from imagecrawl.errors import ConfigError
from imagecrawl.pacing.aimd import START_RATE_SHARE, AimdConfig
from imagecrawl.pacing.bans import BanConfig
from imagecrawl.pacing.circuit import CircuitConfig
from imagecrawl.pacing.sitekey import SITE_KEY_MODES
from imagecrawl.tuning import DEFAULTS, tuning


@dataclass(frozen=True, slots=True)
class PacingConfig:
    enabled: bool = defaults.IMAGECRAWL_PACING_ENABLED
    site_key: str = defaults.IMAGECRAWL_PACING_SITE_KEY
    aimd: AimdConfig = field(default_factory=AimdConfig)
    jitter: float = DEFAULTS.pacing_jitter
    floor_interval: float = defaults.DOWNLOAD_DELAY
    retry_after_max: float = DEFAULTS.retry_after_max_seconds
    obey_crawl_delay: bool = DEFAULTS.pacing_obey_crawl_delay
    close_when_all_abandoned: bool = DEFAULTS.ban_close_when_all_abandoned

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        site_key = site_key_mode(settings)
        max_rate = settings.getfloat("IMAGECRAWL_MAX_RATE_PER_SITE")
        # Scrapy's CONCURRENT_REQUESTS_PER_DOMAIN keeps its meaning: no more requests to one site at once
        max_conc = min(
            settings.getint("IMAGECRAWL_MAX_CONCURRENCY_PER_SITE"), settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        )
        # None (the default): a quarter of the cap, so a cap raised for a site you own starts fast
        start = settings.get("IMAGECRAWL_PACING_START_RATE_PER_SECOND")
        start_rate = (
            max_rate * START_RATE_SHARE
            if start is None
            else settings.getfloat("IMAGECRAWL_PACING_START_RATE_PER_SECOND")
        )
        internals = tuning(settings)
        aimd = AimdConfig(
            start_rate=min(max_rate, start_rate),
            min_rate=min(max_rate, internals.pacing_min_rate_per_second),
            max_rate=max_rate,
            max_concurrency=max_conc,
            decrease_factor=internals.pacing_decrease_factor,
            startup_factor=internals.pacing_startup_factor,
            step_seconds=internals.pacing_step_seconds,
            latency_factor=internals.pacing_latency_factor,
            latency_margin_seconds=internals.pacing_latency_margin_seconds,
        )
        return cls(
            enabled=settings.getbool("IMAGECRAWL_PACING_ENABLED"),
            site_key=site_key,
            aimd=aimd,
            jitter=internals.pacing_jitter,
            floor_interval=max(0.0, settings.getfloat("DOWNLOAD_DELAY")),
            retry_after_max=internals.retry_after_max_seconds,
            obey_crawl_delay=internals.pacing_obey_crawl_delay,
            close_when_all_abandoned=internals.ban_close_when_all_abandoned,
        )


def site_key_mode(settings: Any) -> str:
    """``IMAGECRAWL_PACING_SITE_KEY``, checked: what every component calls a site."""
    mode = str(settings.get("IMAGECRAWL_PACING_SITE_KEY"))
    if mode not in SITE_KEY_MODES:
        raise ConfigError(f"IMAGECRAWL_PACING_SITE_KEY must be one of {SITE_KEY_MODES}, not {mode!r}")
    return mode


def ban_config_from_settings(settings: Any) -> BanConfig:
    internals = tuning(settings)
    return BanConfig(
        burst=internals.ban_burst,
        burst_429=internals.ban_burst_429,
        soft_threshold=internals.ban_soft_threshold,
        cooldown_seconds=internals.ban_cooldown_seconds,
        max_cooldown_seconds=internals.ban_max_cooldown_seconds,
        max_probes=internals.ban_max_probes,
    )


def circuit_config_from_settings(settings: Any) -> CircuitConfig:
    internals = tuning(settings)
    try:
        return CircuitConfig(
            enabled=internals.circuit_enabled,
            failures=internals.circuit_failures,
            cooloff_seconds=internals.circuit_cooloff_seconds,
            max_probes=internals.circuit_max_probes,
        )
    except ValueError as exc:
        raise ConfigError(f"IMAGECRAWL_TUNING circuit_*: {exc}") from None


@dataclass(frozen=True, slots=True)
class RetryConfig:
    # Scrapy's own RETRY_ENABLED, RETRY_HTTP_CODES and RETRY_PRIORITY_ADJUST: their defaults are Scrapy's
    enabled: bool
    http_codes: frozenset[int]
    priority_adjust: int
    times: int = defaults.RETRY_TIMES
    backoff_seconds: float = DEFAULTS.retry_backoff_seconds
    max_backoff_seconds: float = DEFAULTS.retry_max_backoff_seconds

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        # Scrapy's own retry settings keep their meaning (the backoff retry middleware replaces Scrapy's)
        return cls(
            enabled=settings.getbool("RETRY_ENABLED"),
            times=settings.getint("RETRY_TIMES"),
            http_codes=frozenset(int(c) for c in settings.getlist("RETRY_HTTP_CODES")),
            backoff_seconds=tuning(settings).retry_backoff_seconds,
            max_backoff_seconds=tuning(settings).retry_max_backoff_seconds,
            priority_adjust=settings.getint("RETRY_PRIORITY_ADJUST"),
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random; never 0."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1))
        return base / 2 + rng.uniform(0, base / 2)
