"""The catalog gains items between runs: ``POST /_sandbox/reveal?n=K`` serves the K newest of the
``--hidden`` entries of every source from then on (they appear first in newest-first listings, in the
gallery's first listing page and in the newest image sitemap). Answers ``{"hidden": <still hidden>}``."""

from __future__ import annotations

from aiohttp import web

from tests.sandbox.config import CATALOG_KEY
from tests.sandbox.responses import json_error


async def reveal(request: web.Request) -> web.Response:
    raw = request.query.get("n", "")
    if not raw.isdigit():
        return json_error(400, "n must be a non-negative integer")
    return web.json_response({"hidden": request.app[CATALOG_KEY].reveal(int(raw))})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_sandbox/reveal", reveal)
