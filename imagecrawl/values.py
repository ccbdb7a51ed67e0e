"""Plain-value cleaning shared by the page objects and the record builder. Pure, never raises.

Sources hand over anything (JSON scalars, HTML text, CSV cells, values embedded in image files); these
turn one value into clean text, a bounded int, a finite float, or None. The defaults are the page
objects' rules; keyword arguments name the variants other callers rely on.
"""

from __future__ import annotations

import math
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

__all__ = ["NOT_TEXT", "is_http_url", "repair_text", "to_float", "to_int", "to_text", "utf8_safe"]

#: Values that are not text by default: a JSON object or array, or a boolean.
NOT_TEXT: Final[tuple[type, ...]] = (dict, list, bool)


def to_text(value: Any, *, refuse: tuple[type, ...] = NOT_TEXT, keep_nul: bool = False) -> str | None:
    """``str(value)`` stripped, or None when that is empty, ``value`` is None, or an instance of ``refuse``.

    NUL characters are removed before stripping unless ``keep_nul``. ``refuse=()`` turns every value
    but None into its ``str`` (numbers too, whatever ``refuse`` is)."""
    if value is None or isinstance(value, refuse):
        return None
    text = str(value)
    if not keep_nul:
        text = text.replace("\x00", "")
    return text.strip() or None


#: what an unencodable character (a lone surrogate) becomes
REPLACEMENT: Final = "\ufffd"


def repair_text(text: str) -> tuple[str, int]:
    """``text`` as valid Unicode (encodable as UTF-8), and how many characters were replaced (at least 1
    whenever the text changed, a joined pair included: 0 means ``text`` itself is returned).

    A string decoded from JSON escapes, from UTF-16 or with ``surrogateescape`` may hold surrogates:
    a pair (``"\\ud83d\\ude00"``) is joined into its character, a lone one (a prompt cut in the middle of
    an emoji) becomes U+FFFD. Valid text is returned as it is (the common case costs one encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed, max(1, fixed.count(REPLACEMENT) - text.count(REPLACEMENT))
    return text, 0


def utf8_safe(text: str) -> str:
    """:func:`repair_text` without the count: for text about to be printed, logged or written."""
    return repair_text(text)[0]


def to_int(value: Any, lo: int | None = None, hi: int | None = None, *, truncate: bool = False) -> int | None:
    """An int within ``lo..hi`` (inclusive; None = unbounded), or None. Booleans are never ints.

    By default only integral values count: an int, an integral finite float, or a string holding either
    (``"12"``, ``"12.0"``, ``"1e3"``); ``12.5`` and other types give None. ``truncate=True`` applies
    Python's ``int()`` instead: floats are truncated toward zero, any int-like object (a numpy integer,
    a ``Decimal``, bytes of digits) is converted, and a string must be an integer literal."""
    number = _int_like(value) if truncate else _integral(value)
    if number is None or (lo is not None and number < lo) or (hi is not None and number > hi):
        return None
    return number


def _integral(value: Any) -> int | None:
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


def _int_like(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def to_float(value: Any, *, strip: bool = True) -> float | None:
    """A finite float from a number or numeric string, or None. Booleans are never floats.

    A string is ``str.strip()``-ed first unless ``strip=False``; ``float()`` itself ignores surrounding
    whitespace too, except the ``\\x1c``-``\\x1f`` separators."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if strip and isinstance(value, str) else value)
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
