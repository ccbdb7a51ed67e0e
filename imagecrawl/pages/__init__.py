"""Page objects: pure extraction from API JSON / HTML / input lists. No Scrapy imports.

Every parser returns plain data (:class:`ImageEntry` = image URL + :class:`SourceHints`) and reports
what it had to skip as short, stable *kinds* (``not_json``, ``bad_shape``, ``missing_url``...). A page
that cannot be used at all raises :class:`PageError`; a bad entry inside a usable page is skipped and
its kind appended to ``errors``. The spiders turn kinds into stats
``imagecrawl/pages/errors/<kind>`` and log them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from imagecrawl.records import SourceHints

__all__ = [
    "ImageEntry",
    "PageError",
    "ParsedPage",
    "is_http_url",
    "load_json",
    "to_float",
    "to_int",
    "to_text",
]


class PageError(Exception):
    """A page that cannot be used at all. ``kind`` is a short, stable stats key."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class ImageEntry:
    """One image found on a page: where to fetch it and what the page said about it."""

    url: str
    hints: SourceHints


@dataclass(slots=True)
class ParsedPage:
    """The images of one API/listing page, the way to the next page, and the kinds of skipped entries."""

    entries: list[ImageEntry] = field(default_factory=list)
    next_cursor: str | None = None
    next_page: str | None = None
    errors: list[str] = field(default_factory=list)


def load_json(body: bytes | str | Any) -> Any:
    """Decode a JSON body (dict/list pass through). Raises ``PageError('not_json')``."""
    if isinstance(body, (dict, list)):
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PageError("not_json", f"body is not UTF-8: {exc}") from None
    elif isinstance(body, str):
        text = body
    else:
        raise PageError("not_json", f"cannot decode a {type(body).__name__} as JSON")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PageError("not_json", f"body is not JSON: {exc}; starts with {text[:60]!r}") from None


def to_text(value: Any) -> str | None:
    """A non-empty stripped string, or None (numbers become their str)."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def to_int(value: Any) -> int | None:
    """An int from an int, an integral float, or a decimal string; None otherwise (never raises)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def to_float(value: Any) -> float | None:
    """A finite float from a number or numeric string; None otherwise (never raises)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def is_http_url(url: Any) -> TypeGuard[str]:
    """True for an absolute http(s) URL with a host."""
    if not isinstance(url, str) or not url:
        return False
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
