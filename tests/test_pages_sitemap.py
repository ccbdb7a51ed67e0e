"""The sitemap page object: indexes, url sets, image sitemaps, lastmod, limits and bad input."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from imagecrawl.pages import PageError
from imagecrawl.pages.sitemap import image_entries, is_gzip, parse_lastmod, parse_sitemap

BASE = "https://example.com/sitemap.xml"

IMAGE_SITEMAP = b"""<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
        xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
  <url>
    <loc>https://example.com/item/a1</loc>
    <lastmod>2026-11-02T10:00:00+01:00</lastmod>
    <image:image>
      <image:loc>https://example.com/img/a1.png</image:loc>
      <image:caption> a red fox, oil painting </image:caption>
      <image:title>Fox</image:title>
    </image:image>
    <image:image>
      <image:loc>https://example.com/img/a1-b.png</image:loc>
      <image:title>Fox, second</image:title>
    </image:image>
  </url>
  <url>
    <loc>https://example.com/item/a2</loc>
    <lastmod>2026-11-01</lastmod>
    <image:image><image:loc>https://example.com/img/a2.png</image:loc></image:image>
  </url>
  <url><loc>javascript:alert(1)</loc></url>
  <url><lastmod>2026-11-01</lastmod></url>
  <url><loc>/relative/page</loc></url>
  <url><loc>https://example.com/item/a3</loc>
    <image:image><image:loc>ftp://example.com/x.png</image:loc></image:image></url>
</urlset>
"""

INDEX = b"""<?xml version="1.0"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>https://example.com/s1.xml</loc><lastmod>2026-10-01T00:00:00Z</lastmod></sitemap>
  <sitemap><loc>s2.xml.gz</loc></sitemap>
</sitemapindex>
"""


def test_image_sitemap_pages_images_lastmod_and_skips() -> None:
    parsed = parse_sitemap(IMAGE_SITEMAP, BASE)
    assert parsed.kind == "urlset" and not parsed.truncated
    assert [p.loc for p in parsed.pages] == [
        "https://example.com/item/a1",
        "https://example.com/item/a2",
        "https://example.com/item/a3",
    ]
    first = parsed.pages[0]
    assert first.lastmod == dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
    assert parsed.pages[1].lastmod == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert [(i.loc, i.caption, i.title) for i in first.images] == [
        ("https://example.com/img/a1.png", "a red fox, oil painting", "Fox"),
        ("https://example.com/img/a1-b.png", None, "Fox, second"),
    ]
    assert first.images[1].loc == "https://example.com/img/a1-b.png"
    assert parsed.pages[2].images == []
    assert sorted(parsed.errors) == ["bad_scheme", "bad_scheme", "invalid_url", "missing_url"]


def test_image_entries_prompt_from_caption_else_title() -> None:
    parsed = parse_sitemap(IMAGE_SITEMAP, BASE)
    entries = image_entries(parsed.pages[0], "sitemap")
    assert [e.url for e in entries] == ["https://example.com/img/a1.png", "https://example.com/img/a1-b.png"]
    caption, title = (e.hints for e in entries)
    assert (caption.prompt, caption.origin, caption.source, caption.page_url) == (
        "a red fox, oil painting",
        "sitemap:caption",
        "sitemap",
        "https://example.com/item/a1",
    )
    assert caption.params == {"sitemap_title": "Fox", "sitemap_lastmod": "2026-11-02T09:00:00+00:00"}
    assert (title.prompt, title.origin) == ("Fox, second", "sitemap:title")
    bare = image_entries(parsed.pages[1], "mysite")[0].hints
    assert bare.prompt is None and bare.source == "mysite"


def test_index_takes_absolute_locations_only() -> None:
    parsed = parse_sitemap(INDEX, BASE)
    assert parsed.kind == "sitemapindex" and parsed.pages == []
    assert [(r.loc, r.lastmod) for r in parsed.sitemaps] == [
        ("https://example.com/s1.xml", dt.datetime(2026, 10, 1, tzinfo=dt.UTC)),
    ]
    assert parsed.errors == ["invalid_url"]


def test_max_urls_truncates() -> None:
    body = b"<urlset>" + b"".join(b"<url><loc>https://e.com/%d</loc></url>" % i for i in range(10)) + b"</urlset>"
    parsed = parse_sitemap(body, BASE, max_urls=4)
    assert [p.loc for p in parsed.pages] == [f"https://e.com/{i}" for i in range(4)] and parsed.truncated
    assert not parse_sitemap(body, BASE, max_urls=10).truncated


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<html><body><a href='/x'>x</a></body></html>",
        b'{"urlset": []}',
        gzip.compress(IMAGE_SITEMAP),
    ],
)
def test_not_a_sitemap_is_a_page_error(body: bytes) -> None:
    with pytest.raises(PageError) as info:
        parse_sitemap(body, BASE)
    assert info.value.kind == "bad_sitemap"


def test_entities_are_not_expanded() -> None:
    body = b"""<?xml version="1.0"?>
<!DOCTYPE urlset [<!ENTITY x SYSTEM "file:///etc/passwd"><!ENTITY a "aaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<urlset><url><loc>https://e.com/&x;</loc>
<image:image xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
<image:loc>https://e.com/i.png</image:loc><image:caption>&b;</image:caption></image:image></url></urlset>"""
    parsed = parse_sitemap(body, BASE)
    assert "root:" not in parsed.pages[0].loc
    assert "aaaaaaaaaa" not in str(parsed.pages[0].images[0].caption)


def test_truncated_xml_keeps_what_came_before() -> None:
    body = IMAGE_SITEMAP[: IMAGE_SITEMAP.index(b"<url>\n    <loc>https://example.com/item/a2")] + b"<url><loc>htt"
    parsed = parse_sitemap(body, BASE)
    assert [p.loc for p in parsed.pages] == ["https://example.com/item/a1"]
    assert parsed.errors == ["invalid_url"]


def test_lastmod_and_gzip_helpers() -> None:
    assert parse_lastmod("2026-11-02T10:00Z") == dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    assert parse_lastmod("yesterday") is None and parse_lastmod(None) is None and parse_lastmod(" ") is None
    assert is_gzip(gzip.compress(b"x")) and not is_gzip(b"<urlset/>")
