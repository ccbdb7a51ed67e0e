"""The HTML gallery: listing pages ``/gallery/?page=N`` and detail pages ``/gallery/item/<id>``
(markup from :mod:`tests.sandbox.markup`, shared with the static benchmark site)."""

from __future__ import annotations

import math

from aiohttp import web

from tests.sandbox.config import CATALOG_KEY, CONFIG_KEY
from tests.sandbox.markup import SANDBOX_GALLERY, gallery_detail, gallery_listing
from tests.sandbox.responses import html_response


async def gallery_list(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG_KEY]
    page_size = request.app[CONFIG_KEY].page_size
    entries = catalog.entries("gallery")
    n_pages = max(1, math.ceil(len(entries) / page_size))
    raw = request.query.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= n_pages:
        raise web.HTTPNotFound()
    page = int(raw)
    chunk = entries[(page - 1) * page_size : page * page_size]
    return html_response(gallery_listing(SANDBOX_GALLERY, chunk, page, n_pages))


async def gallery_item(request: web.Request) -> web.Response:
    entry = request.app[CATALOG_KEY].find("gallery", request.match_info["id"])
    if entry is None:
        raise web.HTTPNotFound()
    return html_response(gallery_detail(SANDBOX_GALLERY, entry))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/gallery/", gallery_list)
    app.router.add_get("/gallery/item/{id}", gallery_item)
