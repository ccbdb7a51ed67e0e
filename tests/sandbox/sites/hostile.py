"""Hostile mode (``--hostile``): a catalogue of server misbehaviour, each reachable by path.

``/hostile/`` is an HTML index that links every behaviour: images as ``<img src>``, pages and JSON
APIs as ``<a href>``; so one crawl of the index reaches them all. JSON endpoints speak the
shape ``{"items": [{"url", "prompt"}], "next": url}``. The registry :data:`BEHAVIOURS` names each
behaviour, its path, its kind (``image``/``page``/``json``) and what it does; tests map names to the
crawler stat that must count it.

Sizes follow the crawler's defaults: "oversize" bodies are 64 MiB (DOWNLOAD_MAXSIZE is 50 MiB), the
gzip bomb inflates to 64 MiB (the bytes are built in :mod:`tests.sandbox.payloads`). Streaming
behaviours stop as soon as the client hangs up, and log the body bytes they really sent.

Unlike the other sites this one is a middleware (:func:`make_hostile`), not routes: it answers every
``/hostile/`` path before any other behaviour, whatever the method.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tests.sandbox.config import BODY_BYTES_KEY, SandboxConfig
from tests.sandbox.payloads import (
    MIB,
    PNG_SIGNATURE,
    bad_crc_png,
    bomb_png,
    gzip_bomb,
    optout_png,
    text_chunk_png,
)
from tests.sandbox.streaming import client_gone, stream_body

OVERSIZE_BYTES: Final = 64 * MIB
MANY_IMAGES: Final = 100_000
DUPLICATES: Final = 20
DRIP_SECONDS: Final = 0.5
MAX_STALL_SECONDS: Final = 120.0
HUGE_PROMPT_CHARS: Final = 2 * MIB

BehaviourHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Behaviour:
    name: str
    path: str
    kind: str  # "image" | "page" | "json"
    description: str


BEHAVIOURS: dict[str, Behaviour] = {}
_HANDLERS: dict[str, BehaviourHandler] = {}


def behaviour(name: str, path: str, kind: str, description: str) -> Callable[[BehaviourHandler], BehaviourHandler]:
    def register(fn: BehaviourHandler) -> BehaviourHandler:
        BEHAVIOURS[name] = Behaviour(name, path, kind, description)
        _HANDLERS[path.split("?", 1)[0]] = fn
        return fn

    return register


def _png(request: web.Request, body: bytes | None = None, **headers: str) -> web.Response:
    return web.Response(
        body=optout_png(request.path) if body is None else body, content_type="image/png", headers=headers
    )


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- images -------------------------------------------------------------------------------------


@behaviour("ok", "/hostile/img/ok-0.png", "image", "a valid image (control: must be stored)")
async def ok(request: web.Request) -> web.StreamResponse:
    return _png(request)


@behaviour("truncated", "/hostile/img/truncated.png", "image", "Content-Length promises more than is sent")
async def truncated(request: web.Request) -> web.StreamResponse:
    body = optout_png(request.path)
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 4])
    response[BODY_BYTES_KEY] = len(body) // 4
    await asyncio.sleep(0.05)
    if request.transport is not None:
        request.transport.close()
    return response


def _oversize(chunked: bool) -> BehaviourHandler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        if not chunked:
            response.content_length = OVERSIZE_BYTES
        block = PNG_SIGNATURE + b"\x00" * (MIB - 8)

        def body(sent: int) -> bytes | None:
            return block if sent < OVERSIZE_BYTES else None

        return await stream_body(request, response, body)

    return handler


behaviour("oversize", "/hostile/img/oversize.png", "image", "Content-Length over DOWNLOAD_MAXSIZE")(_oversize(False))
behaviour(
    "oversize_chunked",
    "/hostile/img/oversize-chunked.png",
    "image",
    "chunked body that grows past DOWNLOAD_MAXSIZE",
)(_oversize(True))


@behaviour("slow_drip", "/hostile/img/slow-drip.png", "image", "one byte every 0.5 s: only a timeout ends it")
async def slow_drip(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = 100_000
    limit = int(MAX_STALL_SECONDS / DRIP_SECONDS)
    return await stream_body(
        request, response, lambda sent: b"\x89" if sent < limit else None, pause_seconds=DRIP_SECONDS
    )


@behaviour("slow_headers", "/hostile/slow-headers", "page", "no response at all until the client gives up")
async def slow_headers(request: web.Request) -> web.StreamResponse:
    waited = 0.0
    while waited < MAX_STALL_SECONDS and not client_gone(request):
        await asyncio.sleep(0.25)
        waited += 0.25
    return web.Response(text="too late", content_type="text/html")


@behaviour("reset", "/hostile/img/reset.png", "image", "TCP reset in the middle of the body")
async def reset(request: web.Request) -> web.StreamResponse:
    body = optout_png(request.path)
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[:1000])
    await asyncio.sleep(0.05)
    _reset(request)
    return response


@behaviour("reset_before_headers", "/hostile/img/reset-early.png", "image", "TCP reset before any response byte")
async def reset_early(request: web.Request) -> web.StreamResponse:
    _reset(request)
    return web.Response(status=204)


@behaviour("not_http", "/hostile/img/not-http.png", "image", "bytes that are not an HTTP response")
async def not_http(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.write(b"\x00\xffSSH-2.0-nope\r\n\r\n")
        request.transport.close()
    return web.Response(status=204)


@behaviour("long_header", "/hostile/img/long-header.png", "image", "a 100 KB response header line")
async def long_header(request: web.Request) -> web.StreamResponse:
    return web.Response(body=optout_png(request.path), content_type="image/png", headers={"X-Junk": "a" * 100_000})


@behaviour("wrong_content_type", "/hostile/img/wrong-type.png", "image", "a valid PNG labelled text/html (kept)")
async def wrong_type(request: web.Request) -> web.StreamResponse:
    return web.Response(body=optout_png(request.path), content_type="text/html")


@behaviour("png_bomb", "/hostile/img/bomb.png", "image", "PNG header claiming 100000x100000 pixels")
async def png_bomb(request: web.Request) -> web.StreamResponse:
    return _png(request, bomb_png())


@behaviour("gzip_bomb", "/hostile/img/gzip-bomb.png", "image", "gzip Content-Encoding inflating to 64 MiB")
async def gzip_bomb_image(request: web.Request) -> web.StreamResponse:
    return web.Response(body=gzip_bomb(), content_type="image/png", headers={"Content-Encoding": "gzip"})


@behaviour("text_chunk", "/hostile/img/text-chunk.png", "image", "valid PNG with a 512 KiB garbage tEXt chunk (kept)")
async def text_chunk(request: web.Request) -> web.StreamResponse:
    return _png(request, text_chunk_png())


@behaviour("bad_crc", "/hostile/img/bad-crc.png", "image", "PNG whose IHDR checksum is wrong")
async def bad_crc(request: web.Request) -> web.StreamResponse:
    return _png(request, bad_crc_png())


@behaviour("garbage", "/hostile/img/garbage.png", "image", "PNG signature followed by noise")
async def garbage(request: web.Request) -> web.StreamResponse:
    return _png(request, PNG_SIGNATURE + bytes(range(256)) * 16)


@behaviour("empty", "/hostile/img/empty.png", "image", "200 with an empty body")
async def empty(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"", content_type="image/png")


@behaviour("image_is_html", "/hostile/img/html.png", "image", "an image URL that returns an HTML page")
async def image_is_html(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html><body>Not found, but 200</body></html>", content_type="text/html")


@behaviour("not_found", "/hostile/img/missing.png", "image", "404")
async def not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="gone")


@behaviour("duplicates", "/hostile/dup/0.png", "image", f"the same image under {DUPLICATES} URLs")
async def duplicates(request: web.Request) -> web.StreamResponse:
    return _png(request, optout_png("/hostile/dup/"))


@behaviour("redirect_metadata", "/hostile/img/redirect-metadata.png", "image", "302 to http://169.254.169.254/")
async def redirect_metadata(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://169.254.169.254/latest/meta-data/iam/security-credentials/")


@behaviour("redirect_metadata_v6", "/hostile/img/redirect-metadata-v6.png", "image", "302 to http://[fd00:ec2::254]/")
async def redirect_metadata_v6(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://[fd00:ec2::254]/latest/meta-data/")


@behaviour("redirect_private", "/hostile/img/redirect-private.png", "image", "302 to http://10.0.0.1/")
async def redirect_private(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://10.0.0.1/admin.png")


@behaviour("redirect_external", "/hostile/img/redirect-external.png", "image", "302 to a non-loopback host name")
async def redirect_external(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://example.invalid/stolen.png")


@behaviour("redirect_loop", "/hostile/img/redirect-loop.png", "image", "redirects to itself (with a counter) forever")
async def redirect_loop(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "0")) if request.query.get("n", "0").isdigit() else 0
    raise web.HTTPFound(f"/hostile/img/redirect-loop.png?n={n + 1}")


# --- pages and JSON -----------------------------------------------------------------------------


def _json_bytes(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


@behaviour("not_json", "/hostile/api/not-json", "json", "application/json that is an HTML error page")
async def not_json(request: web.Request) -> web.StreamResponse:
    return _json_bytes(b"<html><body>502 Bad Gateway</body></html>")


@behaviour("wrong_shape", "/hostile/api/wrong-shape", "json", "valid JSON of the wrong shape")
async def wrong_shape(request: web.Request) -> web.StreamResponse:
    return _json_bytes(json.dumps({"items": {"url": 5}, "next": 7}).encode())


@behaviour("deep_json", "/hostile/api/deep", "json", "JSON nested 200000 levels deep")
async def deep_json(request: web.Request) -> web.StreamResponse:
    return _json_bytes(b"[" * 200_000 + b"]" * 200_000)


@behaviour("cursor_cycle", "/hostile/api/cursor-cycle?c=0", "json", "a cursor cycling through 3 pages forever")
async def cursor_cycle(request: web.Request) -> web.StreamResponse:
    c = request.query.get("c", "0")
    nxt = (int(c) + 1) % 3 if c.isdigit() else 0
    return _json_bytes(json.dumps({"items": [], "next": f"/hostile/api/cursor-cycle?c={nxt}"}).encode())


@behaviour("cursor_forever", "/hostile/api/cursor-forever?c=0", "json", "a new cursor on every page, forever")
async def cursor_forever(request: web.Request) -> web.StreamResponse:
    c = request.query.get("c", "0")
    nxt = int(c) + 1 if c.isdigit() else 0
    return _json_bytes(json.dumps({"items": [], "next": f"/hostile/api/cursor-forever?c={nxt}"}).encode())


@behaviour("invalid_utf8", "/hostile/api/invalid-utf8", "json", "a prompt with invalid UTF-8 bytes (image kept)")
async def invalid_utf8(request: web.Request) -> web.StreamResponse:
    return _json_bytes(
        b'{"items": [{"url": "/hostile/img/utf8.png", "prompt": "a cat \xff\xfe\xc3 in \xed\xa0\x80 space"}]}'
    )


@behaviour("huge_prompt", "/hostile/api/huge-prompt", "json", "a 2 MiB prompt (image kept, prompt truncated)")
async def huge_prompt(request: web.Request) -> web.StreamResponse:
    prompt = ("masterpiece, " * (HUGE_PROMPT_CHARS // 13 + 1))[:HUGE_PROMPT_CHARS]
    return _json_bytes(json.dumps({"items": [{"url": "/hostile/img/huge-prompt.png", "prompt": prompt}]}).encode())


@behaviour("many_images", "/hostile/many-images", "page", f"a page linking {MANY_IMAGES} images")
async def many_images(request: web.Request) -> web.StreamResponse:
    imgs = "".join(f'<img src="/hostile/img/many/{n}.png">' for n in range(MANY_IMAGES))
    return web.Response(text=f"<html><body>{imgs}</body></html>", content_type="text/html")


async def many_image(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="no")


async def data_image(request: web.Request) -> web.StreamResponse:
    return _png(request)


async def index(request: web.Request) -> web.StreamResponse:
    items = []
    for b in BEHAVIOURS.values():
        if b.kind == "image":
            items.append(f'<li id="{b.name}"><img src="{b.path}" alt="{b.description}"></li>')
        else:
            items.append(f'<li id="{b.name}"><a href="{b.path}">{b.description}</a></li>')
    items += [f'<li><img src="/hostile/dup/{n}.png"></li>' for n in range(1, DUPLICATES)]
    items += [f'<li><img src="/hostile/img/ok-{n}.png"></li>' for n in range(1, 3)]
    body = "<h1>Hostile behaviours</h1>\n<ul>\n" + "\n".join(items) + "\n</ul>"
    return web.Response(text=f"<!DOCTYPE html><html><body>{body}</body></html>", content_type="text/html")


def _route(path: str) -> BehaviourHandler | None:
    if path == "/hostile/":
        return index
    if path in _HANDLERS:
        return _HANDLERS[path]
    if path.startswith("/hostile/dup/"):
        return duplicates
    if path.startswith("/hostile/img/many/"):
        return many_image
    if path.startswith("/hostile/img/ok-") or path in (
        "/hostile/img/utf8.png",
        "/hostile/img/huge-prompt.png",
    ):
        return data_image
    return None


def make_hostile(config: SandboxConfig) -> Middleware | None:
    """The hostile-mode middleware (None unless ``--hostile``): answers every ``/hostile/`` path."""
    if not config.hostile:
        return None

    @web.middleware
    async def hostile(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/hostile/"):
            return await handler(request)
        route = _route(request.path)
        if route is None:
            raise web.HTTPNotFound()
        return await route(request)

    return hostile
