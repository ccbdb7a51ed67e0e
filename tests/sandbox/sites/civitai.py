"""The Civitai-like images API: ``GET /api/v1/images`` (cursor pagination, filters, sorts)."""

from __future__ import annotations

import base64
import datetime as dt
import functools
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.sandbox.catalog import (
    BROWSING_LEVEL,
    CATALOG_NOW,
    NSFW_LEVELS,
    Catalog,
    Entry,
    base_model,
    blurhash_placeholder,
    civitai_post_id,
    civitai_stats,
)
from tests.sandbox.config import CATALOG_KEY
from tests.sandbox.responses import base_url, json_error

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


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not raw.startswith("o:"):
        raise ValueError(cursor)
    offset = int(raw[2:])
    if offset < 0:
        raise ValueError(cursor)
    return offset


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


def page_limit(q: Any, default: int, most: int) -> int | web.Response:
    """The ``limit`` query parameter, or the 400 answer Civitai gives for a bad one."""
    try:
        limit = int(q.get("limit", default))
    except ValueError:
        return json_error(400, "limit must be an integer")
    if not 1 <= limit <= most:
        return json_error(400, f"limit must be between 1 and {most}")
    return limit


async def civitai_images(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG_KEY]
    q = request.query
    limit = page_limit(q, DEFAULT_LIMIT, MAX_LIMIT)
    if isinstance(limit, web.Response):
        return limit
    offset = 0
    if q.get("cursor"):
        try:
            offset = decode_cursor(q["cursor"])
        except (ValueError, UnicodeDecodeError):
            return json_error(400, "invalid cursor")
    try:
        entries = civitai_select(catalog, {k: q[k] for k in q})
    except ValueError as exc:
        return json_error(400, str(exc))
    with_meta = q.get("withMeta") == "true"
    base = base_url(request)
    page = entries[offset : offset + limit]
    metadata: dict[str, Any] = {}
    if offset + limit < len(entries):
        cursor = encode_cursor(offset + limit)
        params = {k: v for k, v in q.items() if k != "cursor"}
        params["cursor"] = cursor
        metadata["nextCursor"] = cursor
        metadata["nextPage"] = f"{base}/api/v1/images?{urlencode(params)}"
    body = {"items": [_civitai_item(e, base, with_meta) for e in page], "metadata": metadata}
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/images", civitai_images)
