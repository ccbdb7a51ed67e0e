"""``/browsertrap/?iframe=<url>&go=<url>``: a page that makes the browser navigate by itself - an iframe
to each ``iframe`` and, once loaded, a script setting ``location`` to ``go`` - for tests that every
navigation the browser starts passes the crawl's policy. Only loopback URLs are embedded."""

from __future__ import annotations

import html
import json

from aiohttp import web

from tests.sandbox.sites.redirects import is_loopback_url


def _targets(request: web.Request, name: str) -> list[str]:
    urls = request.query.getall(name, [])
    for url in urls:
        if not (url.startswith(("http://", "https://")) and is_loopback_url(url)):
            raise web.HTTPBadRequest(text=f"{name}= must be an absolute loopback URL")
    return urls


async def trap(request: web.Request) -> web.Response:
    iframes, go = _targets(request, "iframe"), _targets(request, "go")[:1]
    body = ["<!doctype html><html><head><title>trap</title></head><body><div class='grid'></div>"]
    for iframe in iframes:
        body.append(f'<iframe src="{html.escape(iframe)}"></iframe>')
    if go:
        body.append(f"<script>setTimeout(function () {{ location.href = {json.dumps(go[0])}; }}, 50);</script>")
    body.append("</body></html>")
    return web.Response(text="".join(body), content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/browsertrap/", trap)
