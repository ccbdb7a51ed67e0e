"""Lexica search API page object: ``GET /api/v1/search?q=<query>`` → ``{"images": [...]}``. Pure.

Items: ``id, src, srcSmall, prompt, width, height, seed`` (a *string* in the real API), ``model``,
``guidance`` (the CFG scale), ``nsfw`` (bool), ``gallery`` (the human page). ``nsfw`` becomes the
string ``"true"``/``"false"`` (the source's own boolean label, lower-case as in JSON), None if absent.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote, urlencode

from imagecrawl.pages import ImageEntry, PageError, ParsedPage, load_json
from imagecrawl.records import SourceHints
from imagecrawl.values import is_http_url, to_float, to_int, to_text

SOURCE: Final = "lexica"
DEFAULT_API_URL: Final = "https://lexica.art"

_MAPPED: Final = frozenset(
    {
        "id",
        "src",
        "srcSmall",
        "prompt",
        "negativePrompt",
        "negative_prompt",
        "width",
        "height",
        "seed",
        "model",
        "guidance",
        "nsfw",
        "gallery",
        "steps",
        "sampler",
    }
)


def search_url(api_url: str, q: str) -> str:
    return f"{api_url.rstrip('/')}/api/v1/search?{urlencode({'q': q})}"


def _nsfw(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = to_text(value)
    return text.lower() if text else None


def parse_image_item(item: Any, api_url: str) -> ImageEntry | str:
    """One search result as an :class:`ImageEntry`, or the kind of error that skips it."""
    if not isinstance(item, dict):
        return "bad_item"
    url = item.get("src")
    if not is_http_url(url):
        return "missing_url"
    source_id = to_text(item.get("id"))
    gallery = item.get("gallery")
    if is_http_url(gallery):
        page_url: str | None = gallery.strip()
    elif source_id:
        page_url = f"{api_url.rstrip('/')}/prompt/{quote(source_id, safe='')}"
    else:
        page_url = None
    params = {k: v for k, v in item.items() if k not in _MAPPED and v is not None}
    seed = to_int(item.get("seed"))
    if seed is None and to_text(item.get("seed")):
        params["seed"] = item["seed"]
    hints = SourceHints(
        source=SOURCE,
        source_id=source_id,
        page_url=page_url,
        prompt=to_text(item.get("prompt")),
        negative_prompt=to_text(item.get("negativePrompt", item.get("negative_prompt"))),
        seed=seed,
        steps=to_int(item.get("steps")),
        sampler=to_text(item.get("sampler")),
        cfg_scale=to_float(item.get("guidance")),
        model=to_text(item.get("model")),
        nsfw=_nsfw(item.get("nsfw")),
        origin="api",
        params=params,
    )
    return ImageEntry(url=url.strip(), hints=hints)


def parse_search(body: bytes | str | Any, api_url: str = DEFAULT_API_URL) -> ParsedPage:
    """Parse a search response. Raises :class:`PageError` (``not_json`` / ``bad_shape``) for an unusable
    body; bad items are skipped into ``errors``. Lexica has no pagination: ``next_*`` stay None unless
    the response carries ``nextCursor`` (kept for servers that page)."""
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise PageError("bad_shape", "expected an object with an 'images' list")
    page = ParsedPage()
    for item in data["images"]:
        entry = parse_image_item(item, api_url)
        if isinstance(entry, str):
            page.errors.append(entry)
        else:
            page.entries.append(entry)
    page.next_cursor = to_text(data.get("nextCursor"))
    return page
