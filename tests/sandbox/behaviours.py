"""Pluggable server behaviours (middlewares) of the sandbox site.

Every behaviour is an aiohttp middleware chosen from the :class:`SandboxConfig` by
:func:`build_middlewares`.  Routes never know about behaviours: a behaviour may delay a request,
answer it itself (429, 403 ban page, truncated body, slow drip, connection reset, decompression
bomb ...) or decorate the route's response.  Behaviours that should only apply to some URLs match
on ``request.path`` (e.g. a ``/hostile/`` prefix) so ordinary routes stay deterministic.

To add one: write ``def make_xxx(config) -> Middleware | None`` (returning ``None`` when its flag is
off), add its knobs to ``SandboxConfig`` (:mod:`tests.sandbox.config`) and its flags to
:func:`tests.sandbox.cli.build_parser`, and append it in ``build_middlewares``.  Middlewares run
in list order, outermost first: the rate limit, hostile mode (:mod:`tests.sandbox.sites.hostile`),
then misbehaviour (:mod:`tests.sandbox.misbehave`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tests.sandbox.config import SandboxConfig
from tests.sandbox.misbehave import make_misbehave
from tests.sandbox.sites.hostile import make_hostile

logger = logging.getLogger(__name__)

#: Paths no behaviour interferes with (a crawler must always be able to read robots.txt).
EXEMPT_PATHS = frozenset({"/robots.txt"})


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket: ``capacity`` tokens, refilled at ``rate`` tokens/second."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; return 0.0 on success, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def make_rate_limit(config: SandboxConfig, clock: Callable[[], float] = time.monotonic) -> Middleware | None:
    """``--rate-limit R [--burst N] [--no-retry-after]``: 429 once a client's bucket is empty.

    One bucket per client IP.  The 429 carries ``Retry-After`` (whole seconds, rounded up) unless
    ``config.retry_after`` is false.  Rejected requests do not consume tokens."""
    if config.rate_limit is None:
        return None
    rate = config.rate_limit
    capacity = float(config.burst if config.burst is not None else max(1, math.ceil(rate)))
    buckets: dict[str, TokenBucket] = {}

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        now = clock()
        key = request.remote or "?"
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(rate, capacity, capacity, now)
        wait = bucket.take(now)
        if wait == 0.0:
            return await handler(request)
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if config.retry_after else {}
        logger.debug("429 for %s (retry in %.2fs)", key, wait)
        return web.json_response({"error": "Too Many Requests"}, status=429, headers=headers)

    return rate_limit


def build_middlewares(config: SandboxConfig) -> list[Middleware]:
    """The behaviour middlewares enabled by ``config``, outermost first."""
    factories = (make_rate_limit, make_hostile)
    middlewares = [m for m in (f(config) for f in factories) if m is not None]
    if (mw := make_misbehave(config.misbehave)) is not None:
        middlewares.append(mw)
    logger.debug("behaviours enabled: %d", len(middlewares))
    return middlewares
