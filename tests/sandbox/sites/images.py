"""The catalog's image files, ``/images/<source>/<id>.<ext>``, for every source."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.sandbox.catalog import cached_image, render_image
from tests.sandbox.config import CATALOG_KEY


async def image(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG_KEY]
    source = request.match_info["source"]
    name = request.match_info["name"]
    entry_id, _, _ext = name.rpartition(".")
    entry = catalog.find(source, entry_id) if entry_id else None
    if entry is None or entry.image_path != request.path:
        raise web.HTTPNotFound()
    data = cached_image(catalog, entry)
    if data is None:  # first request: render off the event loop so other requests keep flowing
        data = await asyncio.get_running_loop().run_in_executor(None, render_image, catalog, entry)
    return web.Response(
        body=data,
        content_type=entry.content_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/images/{source}/{name}", image)
