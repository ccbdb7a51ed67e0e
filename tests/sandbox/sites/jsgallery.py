"""The JavaScript gallery of the sandbox: ``/jsgallery/`` is an empty shell whose items appear only
after its script runs, page by page as the visitor scrolls (infinite scroll).

- ``GET /jsgallery/``: the shell: an empty ``div.grid``, a web font, an autoplaying video, a tracker
  call and a script that fetches ``/jsgallery/api?page=N`` when the window is scrolled near its bottom
  and appends ``a.card`` links to the ordinary detail pages ``/gallery/item/<id>`` (with thumbnails);
- ``GET /jsgallery/api?page=N``: ``{"items": [{"id", "url", "thumb"}], "next": N+1 | null}``;
- ``/jsgallery/assets/*`` (font, video) and ``/analytics/collect``: what a crawler does not need; they
  answer 200 so that any request for them shows in the request log.

A crawler without a browser sees no item at all; one that renders but never scrolls sees the first page.
Pure aiohttp handlers, registered by :func:`add_routes`.
"""

from __future__ import annotations

import html
import json
import math

from aiohttp import web

from tests.sandbox.config import CATALOG_KEY

PAGE_SIZE = 10

_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>JS gallery</title>
<link rel="preload" href="/jsgallery/assets/display.woff2" as="font" type="font/woff2" crossorigin>
<style>
@font-face { font-family: "Display"; src: url("/jsgallery/assets/display.woff2") format("woff2"); }
h1 { font-family: "Display", serif; }
div.grid { display: flex; flex-direction: column; gap: 8px; }
a.card { display: block; height: 260px; border: 1px solid #ccc; }
a.card img.thumb { width: 96px; height: 96px; }
</style></head>
<body>
<h1>JS gallery</h1>
<video class="intro" src="/jsgallery/assets/intro.mp4" autoplay muted playsinline></video>
<div class="grid" id="grid"></div>
<p id="status">loading</p>
<script>
(function () {
  var grid = document.getElementById("grid");
  var status = document.getElementById("status");
  var next = 1, loading = false;
  function load() {
    if (loading || next === null) { return; }
    loading = true;
    fetch("/jsgallery/api?page=" + next).then(function (r) { return r.json(); }).then(function (data) {
      data.items.forEach(function (item) {
        var a = document.createElement("a");
        a.className = "card";
        a.href = item.url;
        var img = document.createElement("img");
        img.className = "thumb";
        img.src = item.thumb;
        a.appendChild(img);
        grid.appendChild(a);
      });
      next = data.next;
      status.textContent = next === null ? "end" : "scroll for more";
      loading = false;
    });
  }
  window.addEventListener("scroll", function () {
    if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 300) { load(); }
  });
  fetch("/analytics/collect?e=pageview&p=jsgallery", {method: "POST", keepalive: true}).catch(function () {});
  load();
})();
</script>
</body></html>
"""


async def shell(request: web.Request) -> web.Response:
    return web.Response(text=_SHELL, content_type="text/html", charset="utf-8")


async def api(request: web.Request) -> web.Response:
    entries = request.app[CATALOG_KEY].entries("gallery")
    pages = max(1, math.ceil(len(entries) / PAGE_SIZE))
    raw = request.query.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= pages:
        raise web.HTTPNotFound()
    page = int(raw)
    chunk = entries[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    items = [{"id": e.id, "url": f"/gallery/item/{html.escape(e.id)}", "thumb": e.image_path} for e in chunk]
    body = {"items": items, "next": page + 1 if page < pages else None}
    return web.Response(text=json.dumps(body), content_type="application/json")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = "font/woff2" if name.endswith(".woff2") else "video/mp4" if name.endswith(".mp4") else "text/plain"
    return web.Response(body=b"\x00" * 64, content_type=kind)


async def collect(request: web.Request) -> web.Response:
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/jsgallery/", shell)
    app.router.add_get("/jsgallery/api", api)
    app.router.add_get("/jsgallery/assets/{name}", asset)
    app.router.add_route("*", "/analytics/collect", collect)
