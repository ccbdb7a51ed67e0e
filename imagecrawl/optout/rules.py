"""X-Robots-Tag headers and HTML ``<meta>`` robots directives. Pure: no Scrapy imports.

``X-Robots-Tag`` may be sent several times; each value is a comma-separated list of directives,
optionally addressed to one crawler with a ``<token>: `` prefix (``X-Robots-Tag: imagecrawl: noai``).
A prefix switches the addressee for the rest of that header value, so
``noindex, otherbot: noai`` addresses ``noindex`` to everyone and ``noai`` to ``otherbot`` only.
Directives that carry a value with a colon (``unavailable_after: ...``, ``max-snippet: 0``) are not
mistaken for a crawler token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Final

from imagecrawl import defaults

#: Directives that opt an image out by default; users may add noindex, noimageindex, none.
DEFAULT_DIRECTIVES: Final = frozenset(defaults.IMAGECRAWL_OPTOUT_DIRECTIVES)
#: Every directive the ``IMAGECRAWL_OPTOUT_DIRECTIVES`` setting accepts.
KNOWN_DIRECTIVES: Final = frozenset({"noai", "noimageai", "noindex", "noimageindex", "none"})
#: Directives whose own syntax contains a colon.
_VALUE_DIRECTIVES: Final = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_.\-*]+$")
#: Meta tags are in <head>; scanning more than this of a page is wasted work on hostile input.
HTML_SCAN_LIMIT_CHARS: Final = 512 * 1024


def _addressed(agent: str | None, token: str) -> bool:
    return agent is None or agent == "*" or agent == token


def parse_x_robots_tag(values: Iterable[str], token: str) -> set[str]:
    """The lower-cased directives of all ``X-Robots-Tag`` values that address ``token`` or everyone."""
    token = token.lower()
    found: set[str] = set()
    for value in values:
        agent: str | None = None
        for raw in value.split(","):
            part = raw.strip().lower()
            if not part:
                continue
            name, sep, rest = part.partition(":")
            name = name.strip()
            if sep and name not in _VALUE_DIRECTIVES and _TOKEN_RE.match(name):
                agent = name
                part = rest.strip()
                if not part:
                    continue
            if _addressed(agent, token):
                found.add(part.split(":", 1)[0].strip())
    return found


def parse_meta_content(content: str) -> set[str]:
    """Directives of one ``<meta name="robots" content="...">`` (commas and/or spaces separate them)."""
    return {p for p in re.split(r"[,\s]+", content.strip().lower()) if p}


def blocking_directives(found: Iterable[str], blocking: Iterable[str]) -> list[str]:
    """The directives in ``found`` that opt out, sorted (``none`` implies ``noindex``)."""
    blocking = set(blocking)
    hits = {d for d in found if d in blocking}
    if "noindex" in blocking and "none" in found:
        hits.add("none")
    return sorted(hits)


@dataclass(slots=True)
class HtmlMeta:
    """What a page's ``<meta>`` tags say about us."""

    robots: set[str] = field(default_factory=set)
    tdm_reservation: int | None = None
    tdm_policy: str | None = None


class _MetaScanner(HTMLParser):
    def __init__(self, token: str) -> None:
        super().__init__(convert_charrefs=True)
        self.token = token
        self.meta = HtmlMeta()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values = {k.lower(): (v or "") for k, v in attrs}
        name = values.get("name", "").strip().lower()
        content = values.get("content", "")
        if name in ("robots", self.token):
            self.meta.robots |= parse_meta_content(content)
        elif name == "tdm-reservation":
            value = parse_tdm_value(content)
            if value is not None:
                # The most restrictive wins when a page repeats the tag.
                self.meta.tdm_reservation = max(value, self.meta.tdm_reservation or 0)
        elif name == "tdm-policy" and content.strip():
            self.meta.tdm_policy = content.strip()


def parse_tdm_value(value: str | bytes | None) -> int | None:
    """``"1"`` → 1, ``"0"`` → 0, anything else → None (not a statement)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    return int(value) if value in ("0", "1") else None


def scan_html_meta(text: str, token: str) -> HtmlMeta:
    """Robots and TDMRep ``<meta>`` tags of an HTML document (never raises on malformed HTML)."""
    scanner = _MetaScanner(token.lower())
    try:
        scanner.feed(text[:HTML_SCAN_LIMIT_CHARS])
        scanner.close()
    except Exception:
        pass
    return scanner.meta
