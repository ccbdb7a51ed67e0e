"""Consent that changes between runs: ``POST /_sandbox/robots?content_signal=VALUE&content_usage=VALUE``
adds site-wide ``Content-Signal:`` / ``Content-Usage:`` lines to robots.txt from then on (an empty or
missing value removes that line); ``disallow=PATH`` adds ``Disallow: PATH`` to the robots.txt group of
every crawler. Answers the robots.txt lines now added, as JSON. What ``imagecrawl recheck`` is tested
against (docs/forget.md)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

#: the lines added to the ``User-agent: *`` group of robots.txt, by ``POST /_sandbox/robots``
ROBOTS_EXTRA_KEY: Final = web.AppKey("robots_extra", list)


def extra_lines(app: web.Application) -> str:
    return "".join(line + "\n" for line in app.get(ROBOTS_EXTRA_KEY, []))


async def set_robots(request: web.Request) -> web.Response:
    query = request.query
    lines = []
    if query.get("disallow"):
        path = query["disallow"]
        if not path.startswith("/") or any(ch in path for ch in "\r\n"):
            return web.json_response({"error": "disallow must be a path"}, status=400)
        lines.append(f"Disallow: {path}")
    for name, field in (("content_signal", "Content-Signal"), ("content_usage", "Content-Usage")):
        value = query.get(name, "")
        if any(ch in value for ch in "\r\n"):
            return web.json_response({"error": f"{name} must be one line"}, status=400)
        if value:
            lines.append(f"{field}: {value}")
    request.app[ROBOTS_EXTRA_KEY][:] = lines
    return web.json_response({"robots_lines": lines})


def add_routes(app: web.Application) -> None:
    app[ROBOTS_EXTRA_KEY] = []
    app.router.add_post("/_sandbox/robots", set_robots)
