"""Pacing, ban and retry settings read once into typed configs (``from_settings``). No Scrapy: any
object with Scrapy's ``getfloat``/``getint``/``getbool``/``get``/``getlist`` getters will do.

Every default lives in ``imagecrawl/defaults.py``; nothing here restates one."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Self

from imagecrawl.errors import ConfigError
from imagecrawl.pacing.aimd import AimdConfig
from imagecrawl.pacing.bans import BanConfig
from imagecrawl.pacing.circuit import CircuitConfig
from imagecrawl.pacing.sitekey import SITE_KEY_MODES


@dataclass(frozen=True, slots=True)
class PacingConfig:
    enabled: bool = True
    site_key: str = "host"
    aimd: AimdConfig = field(default_factory=AimdConfig)
    jitter: float = 0.1
    floor_interval: float = 0.0  # DOWNLOAD_DELAY
    retry_after_max: float = 3600.0
    obey_crawl_delay: bool = True
    close_when_all_abandoned: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        site_key = site_key_mode(settings)
        max_rate = settings.getfloat("IMAGECRAWL_MAX_RATE_PER_SITE")
        max_conc = settings.getint("IMAGECRAWL_MAX_CONCURRENCY_PER_SITE")
        # None (the default): a quarter of the cap, so a cap raised for a site you own starts fast
        start = settings.get("IMAGECRAWL_PACING_START_RATE_PER_SECOND")
        start_rate = max_rate / 4 if start is None else settings.getfloat("IMAGECRAWL_PACING_START_RATE_PER_SECOND")
        aimd = AimdConfig(
            start_rate=min(max_rate, start_rate),
            min_rate=min(max_rate, settings.getfloat("IMAGECRAWL_PACING_MIN_RATE_PER_SECOND")),
            max_rate=max_rate,
            start_concurrency=1,
            max_concurrency=max_conc,
            decrease_factor=settings.getfloat("IMAGECRAWL_PACING_DECREASE_FACTOR"),
            startup_factor=settings.getfloat("IMAGECRAWL_PACING_STARTUP_FACTOR"),
            step_seconds=settings.getfloat("IMAGECRAWL_PACING_STEP_SECONDS"),
            latency_factor=settings.getfloat("IMAGECRAWL_PACING_LATENCY_FACTOR"),
            latency_margin_seconds=settings.getfloat("IMAGECRAWL_PACING_LATENCY_MARGIN_SECONDS"),
        )
        return cls(
            enabled=settings.getbool("IMAGECRAWL_PACING_ENABLED"),
            site_key=site_key,
            aimd=aimd,
            jitter=settings.getfloat("IMAGECRAWL_PACING_JITTER"),
            floor_interval=max(0.0, settings.getfloat("DOWNLOAD_DELAY")),
            retry_after_max=settings.getfloat("IMAGECRAWL_RETRY_AFTER_MAX_SECONDS"),
            obey_crawl_delay=settings.getbool("IMAGECRAWL_PACING_OBEY_CRAWL_DELAY"),
            close_when_all_abandoned=settings.getbool("IMAGECRAWL_BAN_CLOSE_WHEN_ALL_ABANDONED"),
        )


def site_key_mode(settings: Any) -> str:
    """``IMAGECRAWL_PACING_SITE_KEY``, checked: what every component calls a site."""
    mode = str(settings.get("IMAGECRAWL_PACING_SITE_KEY"))
    if mode not in SITE_KEY_MODES:
        raise ConfigError(f"IMAGECRAWL_PACING_SITE_KEY must be one of {SITE_KEY_MODES}, not {mode!r}")
    return mode


def ban_config_from_settings(settings: Any) -> BanConfig:
    return BanConfig(
        burst=settings.getint("IMAGECRAWL_BAN_BURST"),
        burst_429=settings.getint("IMAGECRAWL_BAN_BURST_429"),
        soft_threshold=settings.getint("IMAGECRAWL_BAN_SOFT_THRESHOLD"),
        cooldown_seconds=settings.getfloat("IMAGECRAWL_BAN_COOLDOWN_SECONDS"),
        max_cooldown_seconds=settings.getfloat("IMAGECRAWL_BAN_MAX_COOLDOWN_SECONDS"),
        max_probes=settings.getint("IMAGECRAWL_BAN_MAX_PROBES"),
    )


def circuit_config_from_settings(settings: Any) -> CircuitConfig:
    try:
        return CircuitConfig(
            enabled=settings.getbool("IMAGECRAWL_CIRCUIT_ENABLED"),
            failures=settings.getint("IMAGECRAWL_CIRCUIT_FAILURES"),
            cooloff_seconds=settings.getfloat("IMAGECRAWL_CIRCUIT_COOLOFF_SECONDS"),
            max_probes=settings.getint("IMAGECRAWL_CIRCUIT_MAX_PROBES"),
        )
    except ValueError as exc:
        raise ConfigError(f"IMAGECRAWL_CIRCUIT_*: {exc}") from None


@dataclass(frozen=True, slots=True)
class RetryConfig:
    enabled: bool = True
    times: int = 3
    http_codes: frozenset[int] = frozenset({429, 500, 502, 503, 504, 522, 524, 408})
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 120.0
    priority_adjust: int = -1

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        # Scrapy's own retry settings keep their meaning (the backoff retry middleware replaces Scrapy's)
        return cls(
            enabled=settings.getbool("RETRY_ENABLED"),
            times=settings.getint("RETRY_TIMES"),
            http_codes=frozenset(int(c) for c in settings.getlist("RETRY_HTTP_CODES")),
            backoff_seconds=settings.getfloat("IMAGECRAWL_RETRY_BACKOFF_SECONDS"),
            max_backoff_seconds=settings.getfloat("IMAGECRAWL_RETRY_MAX_BACKOFF_SECONDS"),
            priority_adjust=settings.getint("RETRY_PRIORITY_ADJUST"),
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random; never 0."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1))
        return base / 2 + rng.uniform(0, base / 2)
