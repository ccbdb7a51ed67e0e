"""The site root: the index page, ``/robots.txt`` (naming the sitemap index) and the robots-disallowed
``/private/`` pages."""

from __future__ import annotations

from aiohttp import web

from tests.sandbox.config import CONFIG_KEY
from tests.sandbox.markup import document
from tests.sandbox.responses import base_url, html_response
from tests.sandbox.sites import aipref, consent
from tests.sandbox.sites.sitemaps import SITEMAP_INDEX


async def index(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    body = (
        "<h1>imagecrawl sandbox</h1>\n<ul>\n"
        '<li><a href="/gallery/">HTML gallery</a></li>\n'
        '<li><a href="/api/v1/images?limit=20&amp;withMeta=true">Civitai-style images API</a></li>\n'
        '<li><a href="/api/v1/search?q=portrait">Lexica-style search API</a></li>\n'
        '<li><a href="/robots.txt">robots.txt</a></li>\n'
        f"</ul>\n<p>items per source: {cfg.items}, seed: {cfg.seed}</p>"
    )
    return html_response(document("imagecrawl sandbox", body))


async def robots(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    text = "User-agent: *\nDisallow: /private/\n"
    if cfg.crawl_delay is not None:
        text += f"Crawl-delay: {cfg.crawl_delay:g}\n"
    text += consent.extra_lines(request.app)  # POST /_sandbox/robots: consent that changes between runs
    text += aipref.robots_lines(cfg.content_signal)
    text += f"\nSitemap: {base_url(request)}{SITEMAP_INDEX}\n"
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def private(request: web.Request) -> web.Response:
    return html_response(document("private", "<p>This page is disallowed by robots.txt.</p>"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/private/{tail:.*}", private)
