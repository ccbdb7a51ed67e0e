"""Sitemaps (sitemaps.org 0.9) and Google image sitemaps, parsed without Scrapy. Pure.

:func:`parse_sitemap` reads one decompressed sitemap body: a ``<sitemapindex>`` gives its child
sitemaps (:class:`SitemapRef`), a ``<urlset>`` its pages (:class:`SitemapPage`), each with ``lastmod``
and, for image sitemaps, the ``<image:image>`` entries (``image:loc``, ``image:caption``,
``image:title``). The XML is read incrementally with entities unresolved and nothing fetched (no XXE,
no billion laughs); at most ``max_urls`` entries are taken (``truncated`` says more were there). A body
that is not a sitemap at all raises ``PageError("bad_sitemap")``; a bad entry in a usable sitemap is
skipped with its kind in ``errors`` (``missing_url``, ``bad_scheme``, ``invalid_url`` for a relative
or cut-off location).

:func:`image_entries` turns a page's images into :class:`ImageEntry` values: the caption (else the
title) is the prompt, ``metadata_source`` says which (``sitemap:caption`` / ``sitemap:title``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from io import BytesIO
from typing import Final
from urllib.parse import urlsplit

from lxml import etree

from imagecrawl.pages import ImageEntry, PageError
from imagecrawl.records import SourceHints
from imagecrawl.values import to_text

GZIP_MAGIC: Final = b"\x1f\x8b"
#: the sitemap protocol's own cap on entries per file
PROTOCOL_MAX_URLS: Final = 50_000


@dataclass(slots=True, frozen=True)
class SitemapImage:
    loc: str
    caption: str | None = None
    title: str | None = None


@dataclass(slots=True)
class SitemapPage:
    loc: str
    lastmod: dt.datetime | None = None
    images: list[SitemapImage] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class SitemapRef:
    loc: str
    lastmod: dt.datetime | None = None


@dataclass(slots=True)
class ParsedSitemap:
    kind: str  # "urlset" or "sitemapindex"
    pages: list[SitemapPage] = field(default_factory=list)
    sitemaps: list[SitemapRef] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    truncated: bool = False


def is_gzip(body: bytes) -> bool:
    return body[:2] == GZIP_MAGIC


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def parse_lastmod(value: str | None) -> dt.datetime | None:
    """A W3C datetime (``2026-11-02``, ``2026-11-02T10:00:00+01:00``, ``...Z``) as aware UTC; None if unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _url(value: str | None, errors: list[str]) -> str | None:
    text = (value or "").strip()
    if not text:
        errors.append("missing_url")
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        errors.append("invalid_url")
        return None
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        errors.append("bad_scheme")
        return None
    if not parts.scheme or not host:  # the protocol wants absolute URLs; a cut-off one is not taken
        errors.append("invalid_url")
        return None
    return text


def _child_text(elem: etree._Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag) == name:
            return child.text
    return None


def _images(elem: etree._Element, errors: list[str]) -> list[SitemapImage]:
    images = []
    for child in elem:
        if _local(child.tag) != "image":
            continue
        loc = _url(_child_text(child, "loc"), errors)
        if loc is None:
            continue
        caption = to_text(_child_text(child, "caption"))
        title = to_text(_child_text(child, "title"))
        images.append(SitemapImage(loc, caption, title))
    return images


def parse_sitemap(body: bytes, url: str, max_urls: int = PROTOCOL_MAX_URLS) -> ParsedSitemap:
    """One sitemap or sitemap index (decompressed bytes) fetched from ``url`` (named in errors).

    Locations must be absolute http(s) URLs, as the protocol says; others are skipped (``invalid_url``,
    ``bad_scheme``)."""
    if is_gzip(body):
        raise PageError("bad_sitemap", "body is still gzip-compressed")
    events = etree.iterparse(
        BytesIO(body),
        events=("start", "end"),
        recover=True,
        resolve_entities=False,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )
    try:
        _, root = next(events)
    except (StopIteration, etree.XMLSyntaxError) as exc:
        raise PageError("bad_sitemap", f"not XML: {exc or 'empty body'}") from None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise PageError("bad_sitemap", f"root element is <{kind}>, not <urlset> or <sitemapindex>")
    parsed = ParsedSitemap(kind)
    entry = "url" if kind == "urlset" else "sitemap"
    taken = 0
    try:
        for event, elem in events:
            if event != "end" or _local(elem.tag) != entry or elem.getparent() is not root:
                continue
            if taken >= max_urls:
                parsed.truncated = True
                break
            loc = _url(_child_text(elem, "loc"), parsed.errors)
            if loc is not None:
                taken += 1
                lastmod = parse_lastmod(_child_text(elem, "lastmod"))
                if kind == "urlset":
                    parsed.pages.append(SitemapPage(loc, lastmod, _images(elem, parsed.errors)))
                else:
                    parsed.sitemaps.append(SitemapRef(loc, lastmod))
            elem.clear()
            while elem.getprevious() is not None:
                del root[0]
    except etree.XMLSyntaxError as exc:  # recover=True keeps most; a hard stop ends the file here
        parsed.errors.append("bad_xml")
        if taken == 0:
            raise PageError("bad_sitemap", f"broken XML: {exc}") from None
    return parsed


def image_entries(page: SitemapPage, source: str) -> list[ImageEntry]:
    """The images of one sitemap page as entries; the caption (else title) is the prompt."""
    entries = []
    for image in page.images:
        prompt, origin = image.caption, "sitemap:caption"
        if prompt is None and image.title is not None:
            prompt, origin = image.title, "sitemap:title"
        params: dict[str, str] = {}
        if image.title is not None and origin == "sitemap:caption":
            params["sitemap_title"] = image.title
        if page.lastmod is not None:
            params["sitemap_lastmod"] = page.lastmod.isoformat()
        hints = SourceHints(
            source=source,
            page_url=page.loc,
            prompt=prompt,
            origin=origin if prompt is not None else "sitemap",
            params=params,
        )
        entries.append(ImageEntry(image.loc, hints))
    return entries
