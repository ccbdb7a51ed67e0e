"""The sandbox HTTP server: a Civitai-like images API, a Lexica-like search API and an HTML gallery.

Run ``python -m imagecrawl.sandbox.server --port 0`` (or ``imagecrawl sandbox``).  Binds to
loopback only unless ``--allow-non-loopback`` is given.

Architecture (see docs/sandbox.md): ``create_app`` builds an aiohttp application from a
:class:`SandboxConfig`.  Routes are plain handlers that read the immutable catalog; cross-cutting
behaviours (rate limiting, latency, bans, hostile responses) are aiohttp middlewares listed by
``imagecrawl.sandbox.behaviours.build_middlewares(config)`` and the request log is written by an
aiohttp access logger *after* each response has been sent, so it records what really went out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import functools
import html
import ipaddress
import json
import logging
import math
import signal
import sys
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from imagecrawl.sandbox import jsgallery, misbehave, optout_site
from imagecrawl.sandbox.behaviours import build_middlewares
from imagecrawl.sandbox.catalog import (
    BROWSING_LEVEL,
    CATALOG_NOW,
    NSFW_LEVELS,
    Catalog,
    Entry,
    base_model,
    blurhash_placeholder,
    build_catalog,
    cached_image,
    civitai_post_id,
    civitai_stats,
    lexica_prompt_id,
    render_image,
)
from imagecrawl.sandbox.misbehave import MisbehaveConfig

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
PERIODS: dict[str, dt.timedelta | None] = {
    "AllTime": None,
    "Year": dt.timedelta(days=365),
    "Month": dt.timedelta(days=30),
    "Week": dt.timedelta(days=7),
    "Day": dt.timedelta(days=1),
}
SORTS = ("Newest", "Most Reactions", "Most Comments")


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    items: int = 200
    seed: int = 0
    page_size: int = 24
    crawl_delay: float | None = None
    # behaviours (see behaviours.py); all off by default
    rate_limit: float | None = None  # tokens per second per client IP; None = unlimited
    burst: int | None = None  # bucket capacity; default ceil(rate_limit)
    retry_after: bool = True  # send Retry-After with 429
    hostile: bool = False
    misbehave: MisbehaveConfig | None = None  # overload/ban behaviours (imagecrawl.sandbox.misbehave)


CATALOG_KEY = web.AppKey("catalog", Catalog)
CONFIG_KEY = web.AppKey("config", SandboxConfig)
LOGFILE_KEY: web.AppKey[IO[str] | None] = web.AppKey("logfile")


# --- helpers --------------------------------------------------------------------------------------


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _base(request: web.Request) -> str:
    """``http://host:port`` as the client addressed us (Host header; else the local socket address)."""
    host = request.headers.get("Host")
    if not host:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            addr = f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0])
            host = f"{addr}:{sockname[1]}"
        else:
            host = request.host
    return f"{request.scheme}://{host}"


def _html_page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    return web.Response(text=doc, content_type="text/html", charset="utf-8", status=status)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not raw.startswith("o:"):
        raise ValueError(cursor)
    offset = int(raw[2:])
    if offset < 0:
        raise ValueError(cursor)
    return offset


# --- routes ---------------------------------------------------------------------------------------


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
    return _html_page("imagecrawl sandbox", body)


async def robots(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    text = "User-agent: *\nDisallow: /private/\n"
    if cfg.crawl_delay is not None:
        text += f"Crawl-delay: {cfg.crawl_delay:g}\n"
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def private(request: web.Request) -> web.Response:
    return _html_page("private", "<p>This page is disallowed by robots.txt.</p>")


def _civitai_item(entry: Entry, base: str, with_meta: bool) -> dict[str, Any]:
    item = dict(_civitai_item_template(entry, with_meta))  # shallow copy; nested values are shared
    item["url"] = base + entry.image_path
    return item


@functools.lru_cache(maxsize=16384)
def _civitai_item_template(entry: Entry, with_meta: bool) -> dict[str, Any]:
    """The request-independent part of an API item (treat as read-only: it is cached)."""
    item: dict[str, Any] = {
        "id": int(entry.id),
        "url": None,
        "hash": blurhash_placeholder(entry),
        "width": entry.width,
        "height": entry.height,
        "nsfwLevel": entry.nsfw_level,
        "browsingLevel": BROWSING_LEVEL[entry.nsfw_level],
        "nsfw": entry.nsfw_level != "None",
        "createdAt": entry.created_at,
        "postId": civitai_post_id(entry),
        "stats": civitai_stats(entry),
        "username": entry.username,
        "baseModel": base_model(entry.model),
    }
    if with_meta:
        if not entry.show_meta:
            item["meta"] = None
        else:
            meta: dict[str, Any] = {"prompt": entry.prompt}
            if entry.negative_prompt is not None:
                meta["negativePrompt"] = entry.negative_prompt
            meta.update(
                {
                    "seed": entry.seed,
                    "steps": entry.steps,
                    "sampler": entry.sampler,
                    "cfgScale": entry.cfg_scale,
                    "Size": f"{entry.width}x{entry.height}",
                    "Model": entry.model,
                    "Model hash": entry.model_hash,
                    "clipSkip": 2,
                    "resources": [{"name": entry.model, "type": "model", "hash": entry.model_hash}],
                }
            )
            item["meta"] = meta
    return item


def civitai_select(catalog: Catalog, query: dict[str, str]) -> list[Entry]:
    """The filtered, sorted civitai entries for an /api/v1/images query (raises ValueError)."""
    entries = catalog.entries("civitai")
    nsfw = query.get("nsfw")
    if nsfw is not None:
        if nsfw == "true":
            allowed = set(NSFW_LEVELS)
        elif nsfw == "false":
            allowed = {"None"}
        elif nsfw in NSFW_LEVELS:
            allowed = set(NSFW_LEVELS[: NSFW_LEVELS.index(nsfw) + 1])
        else:
            raise ValueError(f"invalid nsfw: {nsfw!r}")
        entries = [e for e in entries if e.nsfw_level in allowed]
    period = query.get("period", "AllTime")
    if period not in PERIODS:
        raise ValueError(f"invalid period: {period!r}")
    span = PERIODS[period]
    if span is not None:
        # created_at strings share one fixed-width UTC format, so they compare chronologically
        since = (CATALOG_NOW - span).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        entries = [e for e in entries if e.created_at >= since]
    username = query.get("username")
    if username:
        entries = [e for e in entries if e.username.casefold() == username.casefold()]
    sort = query.get("sort", "Newest")
    if sort == "Most Reactions":
        entries.sort(key=lambda e: (-sum(v for k, v in civitai_stats(e).items() if k != "commentCount"), e.index))
    elif sort == "Most Comments":
        entries.sort(key=lambda e: (-civitai_stats(e)["commentCount"], e.index))
    elif sort != "Newest":
        raise ValueError(f"invalid sort: {sort!r}")
    return entries


async def civitai_images(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG_KEY]
    q = request.query
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return _json_error(400, "limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return _json_error(400, f"limit must be between 1 and {MAX_LIMIT}")
    offset = 0
    if q.get("cursor"):
        try:
            offset = _decode_cursor(q["cursor"])
        except (ValueError, UnicodeDecodeError):
            return _json_error(400, "invalid cursor")
    try:
        entries = civitai_select(catalog, {k: q[k] for k in q})
    except ValueError as exc:
        return _json_error(400, str(exc))
    with_meta = q.get("withMeta") == "true"
    base = _base(request)
    page = entries[offset : offset + limit]
    metadata: dict[str, Any] = {}
    if offset + limit < len(entries):
        cursor = _encode_cursor(offset + limit)
        params = {k: v for k, v in q.items() if k != "cursor"}
        params["cursor"] = cursor
        metadata["nextCursor"] = cursor
        metadata["nextPage"] = f"{base}/api/v1/images?{urlencode(params)}"
    body = {"items": [_civitai_item(e, base, with_meta) for e in page], "metadata": metadata}
    return web.json_response(body)


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
        return _json_error(400, "missing query parameter q")
    base = _base(request)
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
    return _html_page("Lexica prompt", body)


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
    cards = "\n".join(
        f'<a class="card" href="/gallery/item/{html.escape(e.id)}">'
        f'<img class="thumb" src="{html.escape(e.image_path)}" alt=""></a>'
        for e in chunk
    )
    parts = [
        f'<h1>Gallery</h1>\n<p class="page">Page {page} of {n_pages}</p>',
        f'<div class="grid">\n{cards}\n</div>',
    ]
    nav = []
    if page > 1:
        nav.append(f'<a class="prev" rel="prev" href="/gallery/?page={page - 1}">Previous</a>')
    if page < n_pages:
        nav.append(f'<a class="next" rel="next" href="/gallery/?page={page + 1}">Next</a>')
    parts.append(f'<nav class="pager">{" ".join(nav)}</nav>')
    footer = '<footer><a href="/">Home</a>'
    if page == 1:
        footer += ' <a class="staff" href="/private/staff.html">Staff only</a>'
    parts.append(footer + "</footer>")
    return _html_page(f"Gallery page {page}", "\n".join(parts))


async def gallery_item(request: web.Request) -> web.Response:
    entry = request.app[CATALOG_KEY].find("gallery", request.match_info["id"])
    if entry is None:
        raise web.HTTPNotFound()
    esc = html.escape
    parts = [
        f"<h1>{esc(entry.id)}</h1>",
        f'<figure class="artwork"><img class="main" src="{esc(entry.image_path)}" '
        f'width="{entry.width}" height="{entry.height}" alt=""></figure>',
        f'<p class="author">by <span class="username">{esc(entry.username)}</span> '
        f'<time datetime="{esc(entry.created_at)}">{esc(entry.created_at)}</time></p>',
    ]
    if entry.show_meta:
        parts.append(f'<p class="prompt">{esc(entry.prompt)}</p>')
        if entry.negative_prompt is not None:
            parts.append(f'<p class="negative-prompt">{esc(entry.negative_prompt)}</p>')
        params = (
            ("Steps", entry.steps),
            ("Sampler", entry.sampler),
            ("CFG scale", entry.cfg_scale),
            ("Seed", entry.seed),
            ("Model", entry.model),
        )
        dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in params)
        parts.append(f'<dl class="params">{dl}</dl>')
    parts.append('<p><a href="/gallery/">Back to the gallery</a></p>')
    return _html_page(f"Gallery item {entry.id}", "\n".join(parts))


async def image(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG_KEY]
    source = request.match_info["source"]
    name = request.match_info["name"]
    entry_id, _, _ext = name.rpartition(".")
    entry = catalog.find(source, entry_id) if entry_id else None
    if entry is None or entry.image_path != request.path:
        raise web.HTTPNotFound()
    data = cached_image(catalog, entry)
    if data is None:  # first request: render off the event loop so other requests keep flowing
        data = await asyncio.get_running_loop().run_in_executor(None, render_image, catalog, entry)
    return web.Response(
        body=data,
        content_type=entry.content_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )


# --- request log ----------------------------------------------------------------------------------


BODY_BYTES_KEY = "sandbox_body_bytes"


def body_bytes_sent(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes written for ``response`` (headers excluded).

    Behaviours that stream, truncate or chunk their bodies should store the exact count in
    ``response[BODY_BYTES_KEY]``; otherwise it is derived from the plain response body, or, for
    other stream responses, from the writer's byte count minus the serialized header size."""
    if BODY_BYTES_KEY in response:
        return int(response[BODY_BYTES_KEY])
    if request.method == "HEAD":
        return 0
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    version = request.version
    head = f"HTTP/{version.major}.{version.minor} {response.status} {response.reason}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()) + "\r\n"
    return max(0, response.body_length - len(head.encode("utf-8")))


class JsonLinesAccessLogger(AbstractAccessLogger):
    """Writes one JSON line per request, after the response has been sent."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not isinstance(request, web.Request):
            return
        fh = request.app[LOGFILE_KEY]
        if fh is None:
            return
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = {
            "t": round(_time.time() - time, 6),  # when the request started
            "dur": round(time, 6),
            "method": request.method,
            "path": request.path,
            "query": request.rel_url.raw_query_string,
            "status": response.status,
            "bytes": body_bytes_sent(request, response),
            "ua": request.headers.get("User-Agent", ""),
            "remote": peer[0] if peer else request.remote,
        }
        try:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except (OSError, ValueError):  # closed during shutdown
            logger.debug("could not write request log line", exc_info=True)

    @property
    def enabled(self) -> bool:
        return True


# --- app & main -----------------------------------------------------------------------------------


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "imagecrawl-sandbox"


def create_app(config: SandboxConfig, log_file: IO[str] | None = None) -> web.Application:
    catalog = build_catalog(config.items, config.seed)
    app = web.Application(middlewares=build_middlewares(config))
    app.on_response_prepare.append(_server_header)
    app[CATALOG_KEY] = catalog
    app[CONFIG_KEY] = config
    app[LOGFILE_KEY] = log_file
    app.router.add_get("/", index)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/private/{tail:.*}", private)
    app.router.add_get("/api/v1/images", civitai_images)
    app.router.add_get("/api/v1/search", lexica_search)
    app.router.add_get("/lexica/prompt/{id}", lexica_prompt)
    app.router.add_get("/gallery/", gallery_list)
    app.router.add_get("/gallery/item/{id}", gallery_item)
    app.router.add_get("/images/{source}/{name}", image)
    jsgallery.register(app, CATALOG_KEY)  # /jsgallery/: items appear only after JavaScript runs
    optout_site.add_routes(app)
    return app


def _check_host(host: str, allow_non_loopback: bool) -> str | None:
    if host == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"--host must be an IP address (got {host!r})"
    if not ip.is_loopback and not allow_non_loopback:
        return f"refusing to bind to non-loopback address {host} (use --allow-non-loopback to override)"
    return None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="imagecrawl sandbox", description="Run the deterministic sandbox site.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    p.add_argument("--items", type=int, default=200, help="entries per source (default 200)")
    p.add_argument("--seed", type=int, default=0, help="catalog seed (default 0)")
    p.add_argument("--page-size", type=int, default=24, help="gallery cards per listing page (default 24)")
    p.add_argument("--crawl-delay", type=float, default=None, help="add a Crawl-delay line to robots.txt")
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RPS",
        help="token bucket per client IP: answer 429 past RPS requests/s (robots.txt exempt)",
    )
    p.add_argument("--burst", type=int, default=None, help="token bucket capacity (default ceil(RPS))")
    p.add_argument(
        "--no-retry-after",
        dest="retry_after",
        action="store_false",
        help="send 429 responses without a Retry-After header",
    )
    p.add_argument("--hostile", action="store_true", help="serve the hostile behaviours under /hostile/")
    p.add_argument("--log", type=Path, default=None, help="append one JSON line per request to FILE")
    p.add_argument("--allow-non-loopback", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging to stderr")
    misbehave.add_arguments(p)
    args = p.parse_args(argv)
    if args.items < 0 or args.page_size < 1:
        p.error("--items must be >= 0 and --page-size >= 1")
    if args.rate_limit is not None and args.rate_limit <= 0:
        p.error("--rate-limit must be > 0")
    if args.burst is not None and args.burst < 1:
        p.error("--burst must be >= 1")
    return args


async def _serve(args: argparse.Namespace, log_file: IO[str] | None) -> None:
    config = SandboxConfig(
        items=args.items,
        seed=args.seed,
        page_size=args.page_size,
        crawl_delay=args.crawl_delay,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=args.retry_after,
        hostile=args.hostile,
        misbehave=misbehave.config_from_args(args),
    )
    app = create_app(config, log_file)
    runner = web.AppRunner(
        app,
        access_log_class=JsonLinesAccessLogger,
        access_log=logger,
        handle_signals=False,
    )
    await runner.setup()
    host = "127.0.0.1" if args.host == "localhost" else args.host
    site = web.TCPSite(runner, host, args.port, reuse_address=True, backlog=512)
    await site.start()
    port = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"imagecrawl sandbox listening on http://{shown}:{port}/\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problem = _check_host(args.host, args.allow_non_loopback)
    if problem:
        print(f"imagecrawl sandbox: {problem}", file=sys.stderr)
        return 2
    log_file: IO[str] | None = None
    if args.log is not None:
        try:
            log_file = open(args.log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"imagecrawl sandbox: cannot open request log {args.log}: {exc}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_serve(args, log_file))
    except OSError as exc:
        print(f"imagecrawl sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
