"""Opt-out pages of the sandbox: every mechanism imagecrawl must honour, reachable by path.

Images under ``/optout/img/<case>/<n>.png`` stream their body slowly (a pause after the headers,
then small chunks) and record in the request log how many body bytes really left the server
(``bytes``), so a test can prove an opted-out image was abandoned before its body was read.

========================================  =====================================================
path                                      what it says
========================================  =====================================================
/optout/                                  HTML index linking every page below
/optout/img/allowed/<n>.png               nothing: must be fetched (control)
/optout/img/xrobots-noai/<n>.png          ``X-Robots-Tag: noai``
/optout/img/xrobots-token/<n>.png         ``X-Robots-Tag: imagecrawl: noimageai``
/optout/img/xrobots-other/<n>.png         ``X-Robots-Tag: otherbot: noai`` (not for us: fetched)
/optout/img/xrobots-noindex/<n>.png       ``X-Robots-Tag: noindex`` (fetched unless configured)
/optout/img/tdm-header/<n>.png            ``tdm-reservation: 1``
/optout/img/tdm-file/<n>.png              reserved by /.well-known/tdmrep.json
/private/optout-<n>.png                   disallowed by robots.txt (the site's ``Disallow: /private/``)
/optout/page/<case>                       a page linking 3 images ``/optout/img/on-<case>/<n>.png``;
                                          cases: plain, meta-noai, meta-token, tdm-meta, xrobots,
                                          tdm-meta-lifted (tdm-reservation header 1, meta 0)
/.well-known/tdmrep.json                  reserves ``/optout/img/tdm-file/``
========================================  =====================================================
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

from tests.sandbox.markup import document
from tests.sandbox.payloads import optout_png
from tests.sandbox.responses import html_response
from tests.sandbox.streaming import stream_file_slowly

#: Image cases and the headers their responses carry.
IMAGE_CASES: Final[dict[str, dict[str, str]]] = {
    "allowed": {},
    "xrobots-noai": {"X-Robots-Tag": "noai"},
    "xrobots-token": {"X-Robots-Tag": "imagecrawl: noimageai"},
    "xrobots-other": {"X-Robots-Tag": "otherbot: noai"},
    "xrobots-noindex": {"X-Robots-Tag": "noindex"},
    "tdm-header": {"tdm-reservation": "1"},
    "tdm-file": {},
}
#: Page cases: (extra <head> markup, extra response headers).
PAGE_CASES: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "plain": ("", {}),
    "meta-noai": ('<meta name="robots" content="noai, noimageai">', {}),
    "meta-token": ('<meta name="imagecrawl" content="noimageai">', {}),
    "tdm-meta": ('<meta name="tdm-reservation" content="1">', {}),
    "xrobots": ("", {"X-Robots-Tag": "noai"}),
    "tdm-meta-lifted": ('<meta name="tdm-reservation" content="0">', {"tdm-reservation": "1"}),
}
IMAGES_PER_PAGE: Final = 3
ROBOTS_DISALLOW: Final = "/private/optout-"  # under the sandbox's own "Disallow: /private/"
TDMREP_JSON: Final = [
    {"location": "/optout/img/tdm-file/", "tdm-reservation": 1, "tdm-policy": "https://example.org/policy"},
    {"location": "/optout/*", "tdm-reservation": 0},
]


async def optout_image(request: web.Request) -> web.StreamResponse:
    case = request.match_info["case"]
    name = request.match_info["name"]
    if case.startswith("on-"):
        headers: dict[str, str] = {}
    elif case in IMAGE_CASES:
        headers = IMAGE_CASES[case]
    else:
        raise web.HTTPNotFound()
    if not name.endswith(".png") or not name[:-4].isdigit():
        raise web.HTTPNotFound()
    body = optout_png(request.path)
    return await stream_file_slowly(request, body, {"Content-Type": "image/png", **headers})


def _page(title: str, head: str, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return html_response(document(title, body, lang=None, head=head), headers=headers)


async def optout_page(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    if case not in PAGE_CASES:
        raise web.HTTPNotFound()
    head, headers = PAGE_CASES[case]
    imgs = "\n".join(f'<img class="art" src="/optout/img/on-{case}/{n}.png" alt="">' for n in range(IMAGES_PER_PAGE))
    return _page(f"opt-out page {case}", head, f"<h1>{case}</h1>\n{imgs}", headers)


def image_urls() -> list[str]:
    """Every direct image path of the opt-out site (2 per case, plus robots-disallowed ones)."""
    paths = [f"/optout/img/{case}/{n}.png" for case in IMAGE_CASES for n in range(2)]
    return paths + [f"{ROBOTS_DISALLOW}{n}.png" for n in range(2)]


async def optout_index(request: web.Request) -> web.Response:
    pages = "\n".join(f'<li><a class="page" href="/optout/page/{c}">{c}</a></li>' for c in PAGE_CASES)
    imgs = "\n".join(f'<li><img class="art" src="{p}" alt=""></li>' for p in image_urls())
    return _page("opt-out cases", "", f"<h1>Opt-out cases</h1>\n<ul>\n{pages}\n</ul>\n<ul>\n{imgs}\n</ul>")


async def tdmrep(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(TDMREP_JSON), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/optout/", optout_index)
    app.router.add_get("/optout/page/{case}", optout_page)
    app.router.add_get("/optout/img/{case}/{name}", optout_image)
    app.router.add_get("/.well-known/tdmrep.json", tdmrep)
