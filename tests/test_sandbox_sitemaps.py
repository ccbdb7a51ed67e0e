"""The sandbox's sitemaps and its growing catalog: the index and image sitemaps parse with the page
object, revealed entries land first (newest sitemap, gallery page 1, Civitai newest) and the older
sitemaps keep their lastmod."""

from __future__ import annotations

import gzip
import json
import urllib.request

import pytest

from imagecrawl.pages.sitemap import parse_sitemap
from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import sandbox
from tests.test_sandbox_server import fetch

pytestmark = pytest.mark.e2e

ITEMS, SEED, PAGE, HIDDEN = 25, 2, 10, 6


def reveal(url: str) -> dict[str, int]:
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.load(resp))


def test_sitemaps_and_reveal() -> None:
    catalog = build_catalog(ITEMS, SEED)
    gallery = catalog.entries("gallery")
    with sandbox(items=ITEMS, seed=SEED, extra_args=["--page-size", str(PAGE), "--hidden", str(HIDDEN)]) as sb:
        index = parse_sitemap(fetch(sb.url("sitemaps/index.xml"))[2], sb.url("sitemaps/index.xml"))
        before = {r.loc: r.lastmod for r in index.sitemaps}
        images = [r.loc for r in index.sitemaps if "images-" in r.loc]
        assert images == [sb.url(f"sitemaps/images-{n}.xml") for n in (1, 0)]  # images-2 is all hidden yet
        served = []
        for loc in images:
            page = parse_sitemap(fetch(loc)[2], loc)
            assert page.kind == "urlset" and all(p.images and p.lastmod for p in page.pages)
            served += [p.loc for p in page.pages]
        assert served == [sb.url(f"gallery/item/{e.id}") for e in gallery[HIDDEN:]]
        hidden = gallery[HIDDEN - 1]
        assert fetch(sb.url(f"gallery/item/{hidden.id}"))[0] == 404
        assert fetch(sb.url(hidden.image_path))[0] == 404
        body = fetch(sb.url("sitemaps/pages.xml.gz"))[2]
        assert len(parse_sitemap(gzip.decompress(body), "x").pages) == ITEMS - HIDDEN
        assert parse_sitemap(fetch(sb.url("sitemaps/nested.xml"))[2], "x").kind == "sitemapindex"
        assert fetch(sb.url("sitemaps/bad.xml"))[0] == 200

        assert reveal(sb.url("_sandbox/reveal?n=4")) == {"hidden": HIDDEN - 4}
        after = {r.loc: r.lastmod for r in parse_sitemap(fetch(sb.url("sitemaps/index.xml"))[2], "x").sitemaps}
        assert after[sb.url("sitemaps/images-0.xml")] == before[sb.url("sitemaps/images-0.xml")]
        newest = max(after[sb.url("sitemaps/images-1.xml")], after[sb.url("sitemaps/images-2.xml")])
        assert newest.strftime("%Y-%m-%dT%H:%M:%S.000Z") == gallery[HIDDEN - 4].created_at
        assert fetch(sb.url(f"gallery/item/{hidden.id}"))[0] == 200
        listing = fetch(sb.url("gallery/"))[2].decode()
        assert listing.index(gallery[HIDDEN - 4].id) < listing.index(gallery[HIDDEN].id)
        api = json.loads(fetch(sb.url("api/v1/images?limit=3&sort=Newest"))[2])
        assert api["items"][0]["createdAt"] == catalog.entries("civitai")[HIDDEN - 4].created_at
        assert fetch(sb.url("_sandbox/reveal?n=x"))[0] == 405  # GET is not the route
