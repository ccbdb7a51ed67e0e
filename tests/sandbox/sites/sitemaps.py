"""Sitemaps of the gallery (what the ``sitemap`` spider reads), named by ``/robots.txt``:

* ``/sitemaps/index.xml`` (also ``/sitemap.xml``): a sitemap index, newest first, of the image sitemaps,
  the gzipped page sitemap, a nested index and a bad sitemap;
* ``/sitemaps/images-<n>.xml``: image sitemaps of ``--page-size`` gallery entries each, with ``lastmod``
  (the entry's ``created_at``), ``image:loc``, ``image:caption`` (the prompt, for entries that show it)
  and ``image:title``. Sitemap ``n`` holds entries by their place counted from the *oldest*, so a
  revealed entry (``POST /_sandbox/reveal``) lands in the newest sitemap and the older ones keep their
  content and their ``lastmod`` in the index;
* ``/sitemaps/pages.xml.gz``: every detail page, gzipped (served as a ``.gz`` file, no Content-Encoding);
* ``/sitemaps/nested.xml``: an index naming the top index and an image sitemap again (a loop);
* ``/sitemaps/bad.xml``: an HTML page, not a sitemap.
"""

from __future__ import annotations

import gzip
import math
from xml.sax.saxutils import escape

from aiohttp import web

from tests.sandbox.catalog import Catalog, Entry
from tests.sandbox.config import CATALOG_KEY, CONFIG_KEY
from tests.sandbox.markup import document
from tests.sandbox.responses import base_url, html_response

SITEMAP_INDEX = "/sitemaps/index.xml"
_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
_IMAGE_NS = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'


def chunks(catalog: Catalog, page_size: int) -> dict[int, list[Entry]]:
    """The served gallery entries by image sitemap number (``0`` = the oldest), newest first inside."""
    by_chunk: dict[int, list[Entry]] = {}
    for entry in catalog.entries("gallery"):
        by_chunk.setdefault((catalog.items - 1 - entry.index) // page_size, []).append(entry)
    return by_chunk


def _xml(body: str) -> web.Response:
    return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>\n' + body, content_type="application/xml")


def _index_body(base: str, refs: list[tuple[str, str | None]]) -> str:
    rows = []
    for path, lastmod in refs:
        when = f"<lastmod>{lastmod}</lastmod>" if lastmod else ""
        rows.append(f"  <sitemap><loc>{escape(base + path)}</loc>{when}</sitemap>")
    return f"<sitemapindex {_NS}>\n" + "\n".join(rows) + "\n</sitemapindex>\n"


async def index(request: web.Request) -> web.Response:
    catalog, cfg = request.app[CATALOG_KEY], request.app[CONFIG_KEY]
    by_chunk = chunks(catalog, cfg.page_size)
    refs: list[tuple[str, str | None]] = [
        (f"/sitemaps/images-{n}.xml", by_chunk[n][0].created_at) for n in sorted(by_chunk, reverse=True)
    ]
    refs += [("/sitemaps/pages.xml.gz", None), ("/sitemaps/nested.xml", None), ("/sitemaps/bad.xml", None)]
    return _xml(_index_body(base_url(request), refs))


async def nested(request: web.Request) -> web.Response:
    return _xml(_index_body(base_url(request), [(SITEMAP_INDEX, None), ("/sitemaps/images-0.xml", None)]))


def _image_url(base: str, entry: Entry) -> str:
    caption = f"<image:caption>{escape(entry.prompt)}</image:caption>" if entry.show_meta else ""
    return (
        f"  <url><loc>{base}/gallery/item/{escape(entry.id)}</loc><lastmod>{entry.created_at}</lastmod>"
        f"<image:image><image:loc>{escape(base + entry.image_path)}</image:loc>{caption}"
        f"<image:title>gallery {escape(entry.id)}</image:title></image:image></url>"
    )


async def images(request: web.Request) -> web.Response:
    catalog, cfg = request.app[CATALOG_KEY], request.app[CONFIG_KEY]
    raw = request.match_info["n"]
    n_chunks = max(1, math.ceil(catalog.items / cfg.page_size))
    entries = chunks(catalog, cfg.page_size).get(int(raw)) if raw.isdigit() and int(raw) < n_chunks else None
    if entries is None:
        raise web.HTTPNotFound()
    base = base_url(request)
    rows = "\n".join(_image_url(base, e) for e in entries)
    return _xml(f"<urlset {_NS} {_IMAGE_NS}>\n{rows}\n</urlset>\n")


async def pages(request: web.Request) -> web.Response:
    base = base_url(request)
    rows = "\n".join(
        f"  <url><loc>{base}/gallery/item/{escape(e.id)}</loc><lastmod>{e.created_at}</lastmod></url>"
        for e in request.app[CATALOG_KEY].entries("gallery")
    )
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset {_NS}>\n{rows}\n</urlset>\n'
    return web.Response(body=gzip.compress(xml.encode(), mtime=0), content_type="application/x-gzip")


async def bad(request: web.Request) -> web.Response:
    return html_response(document("not a sitemap", "<p>This is an HTML page where a sitemap was promised.</p>"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sitemap.xml", index)
    app.router.add_get(SITEMAP_INDEX, index)
    app.router.add_get("/sitemaps/nested.xml", nested)
    app.router.add_get("/sitemaps/images-{n}.xml", images)
    app.router.add_get("/sitemaps/pages.xml.gz", pages)
    app.router.add_get("/sitemaps/bad.xml", bad)
