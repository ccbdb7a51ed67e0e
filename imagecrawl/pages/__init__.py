"""Page objects: pure extraction from API JSON / HTML / input lists. No Scrapy imports.

Every parser returns plain data (:class:`ImageEntry` = image URL + :class:`SourceHints`) and reports
what it had to skip as short, stable *kinds* (``not_json``, ``bad_shape``, ``missing_url``...). A page
that cannot be used at all raises :class:`PageError`; a bad entry inside a usable page is skipped and
its kind appended to ``errors``. The spiders turn kinds into stats
``imagecrawl/pages/errors/<kind>`` and log them. Single values are cleaned by :mod:`imagecrawl.values`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from imagecrawl.records import SourceHints

__all__ = [
    "ImageEntry",
    "PageError",
    "ParsedPage",
    "load_json",
    "with_cursor",
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
    #: where the entry sits in a newest-first listing, as the page gives it (a timestamp string), when
    #: that is not a field of the record itself: incremental walks compare it with their watermark
    position: str | None = None


@dataclass(slots=True)
class ParsedPage:
    """The images of one API/listing page, the way to the next page, and the kinds of skipped entries."""

    entries: list[ImageEntry] = field(default_factory=list)
    next_cursor: str | None = None
    next_page: str | None = None
    errors: list[str] = field(default_factory=list)


def _no_constant(name: str) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON: read as null, never written on as numbers."""
    return None


def load_json(body: bytes | str | Any) -> Any:
    """Decode a JSON body (dict/list pass through). Raises ``PageError('not_json')``, or
    ``PageError('too_deep')`` for nesting deeper than Python can decode (a hostile or broken API)."""
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
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise PageError("too_deep", f"body is JSON nested too deeply; starts with {text[:60]!r}") from None
    except ValueError as exc:
        raise PageError("not_json", f"body is not JSON: {exc}; starts with {text[:60]!r}") from None


def with_cursor(url: str, cursor: str) -> str:
    """``url`` with its ``cursor`` query parameter set to ``cursor`` (other parameters kept in order)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cursor"]
    query.append(("cursor", cursor))
    return urlunsplit(parts._replace(query=urlencode(query)))
