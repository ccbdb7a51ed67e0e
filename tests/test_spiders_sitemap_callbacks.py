"""The sitemap spider's callbacks driven offline: discovery, indexes, loops, depth, gzip limits, bad
sitemaps as counted skips, image entries vs pages handed to a gallery profile."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from scrapy.http import Request, Response, TextResponse, XmlResponse

from spiders.sitemap import SitemapSpider
from tests.crawlers import make_crawler
from tests.test_spiders_callbacks import start_requests, stats

SITE = "http://127.0.0.1:9"


def sitemap_response(url: str, body: bytes, **kw: Any) -> Response:
    return XmlResponse(url, body=body, request=Request(url, cb_kwargs={"depth": 0}), **kw)


def urlset(*pages: str, images: bool = True) -> bytes:
    entries = []
    for page in pages:
        image = (
            f"<image:image><image:loc>{SITE}/img/{page}.png</image:loc><image:caption>cap {page}</image:caption>"
            "</image:image>"
            if images
            else ""
        )
        entries.append(f"<url><loc>{SITE}/gallery/item/{page}</loc>{image}</url>")
    return (
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
        'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">' + "".join(entries) + "</urlset>"
    ).encode()


def index(*locs: str) -> bytes:
    return (
        "<sitemapindex>" + "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs) + "</sitemapindex>"
    ).encode()


def spider(tmp_path: Path, **kwargs: Any) -> SitemapSpider:
    """The spider with ``kwargs`` as its ``-a`` arguments, upper-case ones as settings."""
    settings = {k: v for k, v in kwargs.items() if k.isupper()}
    crawler = make_crawler(SitemapSpider, IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_AUTHOR_SALT="s", **settings)
    crawler._apply_settings()
    return SitemapSpider.from_crawler(crawler, **{k: v for k, v in kwargs.items() if not k.isupper()})


def test_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_url"):
        spider(tmp_path)
    with pytest.raises(ValueError, match="source"):
        spider(tmp_path, start_url=SITE + "/", source="Bad Name")
    with pytest.raises(ValueError, match="profile names it"):
        spider(tmp_path, start_url=SITE + "/", source="x", profile="sandbox")
    assert start_requests(spider(tmp_path, start_url=SITE + "/", max_items="0")) == []


def test_root_asks_robots_then_falls_back_to_sitemap_xml(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/")
    (first,) = start_requests(s)
    assert first.url == SITE + "/robots.txt" and first.callback == s.parse_robots
    robots = TextResponse(first.url, body=b"User-agent: *\nDisallow: /private/\n", request=first)
    (fallback,) = list(s.parse_robots(robots))
    assert fallback.url == SITE + "/sitemap.xml" and fallback.meta["download_maxsize"] == 50 * 1024 * 1024
    s2 = spider(tmp_path, start_url=SITE + "/robots.txt")
    robots = TextResponse(
        first.url,
        body=f"Sitemap: {SITE}/a.xml\nsitemap: /b.xml.gz\nSitemap: {SITE}/a.xml\n".encode(),
        request=first,
    )
    assert [r.url for r in s2.parse_robots(robots)] == [SITE + "/a.xml", SITE + "/b.xml.gz"]
    assert stats(s2)["imagecrawl/pages/sitemap/robots_sitemaps"] == 2


def test_sitemap_url_is_read_directly_and_images_taken(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/sitemap.xml", source="mysite")
    (first,) = start_requests(s)
    assert first.callback == s.parse_sitemap and first.cb_kwargs == {"depth": 0}
    out = list(s.parse_sitemap(sitemap_response(first.url, urlset("a", "b")), 0))
    assert [r.url for r in out] == [SITE + "/img/a.png", SITE + "/img/b.png"]
    hints = out[0].cb_kwargs["hints"]
    assert (hints["source"], hints["prompt"], hints["origin"], hints["page_url"]) == (
        "mysite",
        "cap a",
        "sitemap:caption",
        SITE + "/gallery/item/a",
    )
    assert stats(s) == {
        "imagecrawl/pages/sitemap/sitemaps": 1,
        "imagecrawl/pages/sitemap/pages": 2,
        "imagecrawl/pages/sitemap/images": 2,
    }


def test_profile_gets_the_pages_and_max_items(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/sitemap.xml", profile="sandbox", max_items="2")
    out = list(s.parse_sitemap(sitemap_response(SITE + "/sitemap.xml", urlset("a", "b", "c")), 0))
    assert [r.url for r in out] == [SITE + "/gallery/item/a", SITE + "/gallery/item/b"]
    assert all(r.callback == s.parse_detail for r in out)


def test_index_loops_and_depth_are_cut(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/index.xml", IMAGECRAWL_TUNING={"sitemap_max_depth": 1})
    (first,) = start_requests(s)
    out = list(s.parse_sitemap(sitemap_response(first.url, index(SITE + "/index.xml", SITE + "/sub.xml")), 0))
    assert [(r.url, r.cb_kwargs) for r in out] == [(SITE + "/sub.xml", {"depth": 1})]
    assert list(s.parse_sitemap(sitemap_response(SITE + "/sub.xml", index(SITE + "/deep.xml")), 1)) == []
    got = stats(s)
    assert got["imagecrawl/pages/errors/sitemap_loop"] == 1 and got["imagecrawl/pages/errors/sitemap_depth"] == 1
    assert got["imagecrawl/pages/sitemap/indexes"] == 2


def test_max_sitemaps(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/index.xml", IMAGECRAWL_TUNING={"sitemap_max_sitemaps": 3})
    start_requests(s)
    out = list(s.parse_sitemap(sitemap_response(SITE + "/index.xml", index(*(f"{SITE}/{i}.xml" for i in range(5)))), 0))
    assert len(out) == 2 and stats(s)["imagecrawl/pages/errors/sitemap_limit"] == 3


def test_gzip_read_and_bounded(tmp_path: Path) -> None:
    s = spider(tmp_path, start_url=SITE + "/s.xml.gz", IMAGECRAWL_TUNING={"sitemap_max_decompressed_bytes": 4096})
    small = gzip.compress(urlset("a"))
    assert [r.url for r in s.parse_sitemap(Response(SITE + "/s.xml.gz", body=small), 0)] == [SITE + "/img/a.png"]
    bomb = gzip.compress(urlset(*(str(i) for i in range(200))))
    assert list(s.parse_sitemap(Response(SITE + "/big.xml.gz", body=bomb), 0)) == []
    assert list(s.parse_sitemap(Response(SITE + "/broken.xml.gz", body=small[:12]), 0)) == []
    got = stats(s)
    assert got["imagecrawl/pages/errors/sitemap_too_large"] == 1 and got["imagecrawl/pages/errors/bad_sitemap"] == 1


def test_bad_sitemap_is_a_counted_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = spider(tmp_path, start_url=SITE + "/sitemap.xml")
    html = TextResponse(SITE + "/sitemap.xml", body=b"<html><body>Not found</body></html>")
    assert list(s.parse_sitemap(html, 0)) == []
    assert stats(s) == {"imagecrawl/pages/errors/bad_sitemap": 1}
    assert "Skipping page http://127.0.0.1:9/sitemap.xml (bad_sitemap)" in caplog.text
