"""Pluggable server behaviours (middlewares) of the sandbox site.

Every behaviour is an aiohttp middleware chosen from the :class:`SandboxConfig` by
:func:`build_middlewares`.  Routes never know about behaviours: a behaviour may delay a request,
answer it itself (429, 403 ban page, truncated body, slow drip, connection reset, decompression
bomb ...) or decorate the route's response.  Behaviours that should only apply to some URLs match
on ``request.path`` (e.g. a ``/hostile/`` prefix) so ordinary routes stay deterministic.

To add one: write ``def make_xxx(config) -> Middleware | None`` below (returning ``None`` when its
flag is off), add its flag to ``SandboxConfig`` and ``server._parse_args``, and append it in
``build_middlewares``.  Middlewares run in list order, outermost first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp.typedefs import Middleware

if TYPE_CHECKING:
    from imagecrawl.sandbox.server import SandboxConfig

logger = logging.getLogger(__name__)


def build_middlewares(config: SandboxConfig) -> list[Middleware]:
    """The behaviour middlewares enabled by ``config`` (none yet: the site is well-behaved)."""
    from imagecrawl.sandbox.hostile import make_hostile

    middlewares: list[Middleware] = []
    for make in (make_hostile,):
        middleware = make(config)
        if middleware is not None:
            middlewares.append(middleware)
    logger.debug("behaviours enabled: %d", len(middlewares))
    return middlewares
