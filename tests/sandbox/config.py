"""Configuration of the sandbox server: what ``--flags`` choose, and the keys handlers share.

Every other sandbox module may import this one; it imports no other sandbox module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Final

from aiohttp import web

from tests.sandbox.catalog import Catalog


@dataclass(frozen=True, slots=True)
class MisbehaveConfig:
    """Overload and ban behaviours, per site (see :mod:`tests.sandbox.misbehave`)."""

    capacity: float | None = None
    burst: float | None = None
    retry_after: float | None = None
    retry_after_date: bool = False
    retry_after_share: float = 1.0  # of the 429s that open a window, the share that carries Retry-After
    latency: float = 0.0
    latency_per_queued: float = 0.0
    ban_mode: str | None = None
    ban_rate: float | None = None
    ban_after: int | None = None
    ban_seconds: float = 30.0
    ban_extend: bool = False
    status_paths: bool = False

    @property
    def active(self) -> bool:
        return bool(self.capacity is not None or self.latency or self.latency_per_queued or self.ban_mode is not None)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    items: int = 200
    seed: int = 0
    hidden: int = 0  # the newest entries per source served only after POST /_sandbox/reveal
    page_size: int = 24
    crawl_delay: float | None = None
    content_signal: str | None = None  # a site-wide Content-Signal line in robots.txt
    # behaviours (see behaviours.py); all off by default
    rate_limit: float | None = None  # tokens per second per client IP; None = unlimited
    burst: int | None = None  # bucket capacity; default ceil(rate_limit)
    retry_after: bool = True  # send Retry-After with 429
    hostile: bool = False
    misbehave: MisbehaveConfig | None = None  # overload/ban behaviours (tests.sandbox.misbehave)
    #: ``--overrides``: fields of chosen catalog entries replaced ({source: {index: {field: value}}})
    overrides: dict[str, Any] | None = field(default=None, hash=False, compare=False)


CATALOG_KEY: Final = web.AppKey("catalog", Catalog)
CONFIG_KEY: Final = web.AppKey("config", SandboxConfig)
LOGFILE_KEY: Final[web.AppKey[IO[str] | None]] = web.AppKey("logfile")

#: Response key: the body bytes a streaming, truncating or chunking handler really wrote. The
#: request log reads it (see :func:`tests.sandbox.requestlog.body_bytes_sent`).
BODY_BYTES_KEY: Final = "sandbox_body_bytes"
