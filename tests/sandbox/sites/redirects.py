"""``/redirect?to=<url>``: a 302 to another loopback site (for pacing tests: the target's Crawl-delay,
429s and bans must be charged to the target, not to this site). Only loopback targets are served."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aiohttp import web


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def redirect(request: web.Request) -> web.StreamResponse:
    target = request.query.get("to", "")
    if not target.startswith(("http://", "https://")) or not is_loopback_url(target):
        raise web.HTTPBadRequest(text="to= must be an absolute loopback URL")
    raise web.HTTPFound(target)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/redirect", redirect)
