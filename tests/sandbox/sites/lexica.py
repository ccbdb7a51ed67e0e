"""The Lexica-like search API: ``GET /api/v1/search?q=`` and its ``/lexica/prompt/<id>`` pages."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from tests.sandbox.catalog import Entry, lexica_prompt_id
from tests.sandbox.config import CATALOG_KEY
from tests.sandbox.markup import document
from tests.sandbox.responses import base_url, html_response, json_error


def _lexica_item(entry: Entry, base: str) -> dict[str, Any]:
    url = base + entry.image_path
    return {
        "id": entry.id,
        "gallery": f"{base}/lexica/prompt/{entry.id}",
        "src": url,
        "srcSmall": url,
        "prompt": entry.prompt,
        "width": entry.width,
        "height": entry.height,
        "seed": str(entry.seed),
        "grid": False,
        "model": "lexica-aperture-v3",
        "guidance": entry.cfg_scale,
        "promptid": lexica_prompt_id(entry),
        "nsfw": entry.nsfw_level != "None",
    }


async def lexica_search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        return json_error(400, "missing query parameter q")
    base = base_url(request)
    entries = request.app[CATALOG_KEY].lexica_search(q)
    return web.json_response({"images": [_lexica_item(e, base) for e in entries]})


async def lexica_prompt(request: web.Request) -> web.Response:
    entry = request.app[CATALOG_KEY].find("lexica", request.match_info["id"])
    if entry is None:
        raise web.HTTPNotFound()
    body = (
        f'<figure class="artwork"><img class="main" src="{html.escape(entry.image_path)}" '
        f'width="{entry.width}" height="{entry.height}" alt=""></figure>\n'
        f'<p class="prompt">{html.escape(entry.prompt)}</p>'
    )
    return html_response(document("Lexica prompt", body))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/search", lexica_search)
    app.router.add_get("/lexica/prompt/{id}", lexica_prompt)
