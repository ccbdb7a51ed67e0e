"""TDMRep (W3C Community Group Report, 2024). Pure: no Scrapy imports.

Three places may state a reservation, with this precedence (lowest first): the site-wide
``/.well-known/tdmrep.json`` file < the ``tdm-reservation`` HTTP header < the HTML
``<meta name="tdm-reservation">``. The file is an array of ``{"location", "tdm-reservation",
"tdm-policy"}``; ``location`` is a path pattern with robots.txt syntax (``*`` any run of
characters, ``$`` end of path); the first rule in the array whose location matches applies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from imagecrawl.optout.rules import parse_tdm_value

#: A tdmrep.json bigger than this is not a real declaration file.
MAX_TDMREP_BYTES: Final = 512 * 1024
MAX_TDMREP_RULES: Final = 10_000


@dataclass(frozen=True, slots=True)
class TdmRule:
    location: str
    reservation: int
    policy: str | None = None


class TdmRepError(ValueError):
    """tdmrep.json is present but not a valid declaration file."""


def parse_tdmrep_json(body: bytes) -> list[TdmRule]:
    """The rules of a tdmrep.json body; raises :class:`TdmRepError` when it is not valid."""
    if len(body) > MAX_TDMREP_BYTES:
        raise TdmRepError(f"tdmrep.json larger than {MAX_TDMREP_BYTES} bytes")
    try:
        data: Any = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TdmRepError(f"tdmrep.json is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise TdmRepError("tdmrep.json is not an array")
    rules: list[TdmRule] = []
    for entry in data[:MAX_TDMREP_RULES]:
        if not isinstance(entry, dict):
            continue
        location = entry.get("location")
        raw = entry.get("tdm-reservation")
        ok = isinstance(raw, (int, str)) and not isinstance(raw, bool)
        value = parse_tdm_value(str(raw)) if ok else None
        if not isinstance(location, str) or value is None:
            continue
        policy = entry.get("tdm-policy")
        rules.append(TdmRule(location, value, policy if isinstance(policy, str) else None))
    return rules


@lru_cache(maxsize=4096)
def _pattern(location: str) -> re.Pattern[str]:
    if not location.startswith("/") and not location.startswith("*"):
        location = "/" + location
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    regex = ".*".join(re.escape(unquote(piece)) for piece in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""), re.DOTALL)


def location_matches(location: str, path: str) -> bool:
    """robots.txt-style prefix match of ``location`` against a URL path (+ query)."""
    return _pattern(location).match(unquote(path)) is not None


def url_path(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def tdm_file_reservation(rules: list[TdmRule] | None, url: str) -> TdmRule | None:
    """The first rule of the file that matches ``url``, if any."""
    if not rules:
        return None
    path = url_path(url)
    for rule in rules:
        if location_matches(rule.location, path):
            return rule
    return None


def parse_tdm_header(values: list[bytes] | list[str]) -> int | None:
    """The ``tdm-reservation`` header: 1 if any value says 1, else 0 if one says 0, else None."""
    parsed = [parse_tdm_value(v) for v in values]
    known = [v for v in parsed if v is not None]
    return max(known) if known else None


def tdm_reserved(file: int | None, header: int | None, meta: int | None) -> bool:
    """The spec's precedence: the HTML meta beats the header, which beats the file."""
    for value in (meta, header, file):
        if value is not None:
            return value == 1
    return False
