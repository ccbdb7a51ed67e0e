from __future__ import annotations

from pathlib import Path

import pytest

from imagecrawl.pages import PageError
from imagecrawl.pages import gallery as pages
from tests.pages_util import FIXTURES, assert_expected, entry_dict

DIR = FIXTURES / "gallery"
BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def profile() -> pages.Profile:
    return pages.load_profile("sandbox")


def html(name: str) -> bytes:
    return (DIR / name).read_bytes()


def test_bundled_sandbox_profile(profile: pages.Profile) -> None:
    assert "sandbox" in pages.bundled_profiles()
    assert profile.name == "sandbox" and profile.source == "gallery" and profile.render == "http"
    assert profile.start_url == f"{BASE}/gallery/"
    assert profile.item_links == pages.Sel("css", "div.grid a.card")
    assert profile.path == "imagecrawl/profiles/sandbox.toml"


def test_listing(profile: pages.Profile) -> None:
    listing = pages.parse_listing(html("listing_page1.html"), f"{BASE}/gallery/", profile)
    # absolute, fragment dropped, repeats removed, page order kept; /private/ is not a card
    assert listing.detail_urls == [
        f"{BASE}/gallery/item/g0001",
        f"{BASE}/gallery/item/g0002",
        f"{BASE}/gallery/item/g0003",
    ]
    assert listing.next_url == f"{BASE}/gallery/?page=2"
    assert listing.healthy is True
    last = pages.parse_listing(html("listing_last.html"), f"{BASE}/gallery/?page=5", profile)
    assert last.detail_urls == [f"{BASE}/gallery/item/g0060"] and last.next_url is None


def test_listing_block_page_is_unhealthy(profile: pages.Profile) -> None:
    listing = pages.parse_listing(html("listing_blocked.html"), f"{BASE}/gallery/", profile)
    assert listing.detail_urls == [] and listing.next_url is None and listing.healthy is False


def test_detail_full(profile: pages.Profile) -> None:
    url = f"{BASE}/gallery/item/g0001"
    entry, healthy = pages.parse_detail(html("detail_full.html"), url, profile)
    assert_expected(entry_dict(entry), DIR / "detail_full.expected.json")
    assert healthy is True
    assert entry.url == f"{BASE}/images/gallery/g0001.png"
    h = entry.hints
    assert (h.source, h.source_id, h.page_url, h.origin) == ("gallery", "g0001", url, "html")
    assert h.prompt == "a castle on a hill at sunset, <lora:detail:0.6>, (masterpiece:1.2)"
    assert h.negative_prompt == "lowres, bad anatomy & blurry"
    assert (h.steps, h.sampler, h.cfg_scale, h.seed, h.model) == (
        20,
        "DPM++ 2M Karras",
        7.5,
        3141592653,
        "dreamshaper_8",
    )
    assert h.params == {"Clip skip": "2"}
    assert h.author == "pixel_painter42"


def test_detail_without_meta(profile: pages.Profile) -> None:
    entry, _ = pages.parse_detail(html("detail_nometa.html"), f"{BASE}/gallery/item/g0002", profile)
    assert entry.url == f"{BASE}/images/gallery/g0002.jpg"
    h = entry.hints
    assert h.prompt is None and h.negative_prompt is None and h.seed is None and h.params == {}
    assert h.source_id == "g0002"


def test_detail_odd_params(profile: pages.Profile) -> None:
    entry, _ = pages.parse_detail(html("detail_oddparams.html"), f"{BASE}/gallery/item/g0004?v=2", profile)
    assert_expected(entry_dict(entry), DIR / "detail_oddparams.expected.json")
    h = entry.hints
    assert entry.url == f"{BASE}/images/gallery/g0004.png"  # data-src when src is empty
    assert h.prompt == "a quiet harbour"
    assert h.steps is None and h.cfg_scale is None and h.seed == -1
    assert h.params == {"steps": "many", "cfg_scale": "n/a", "VAE": "ft-mse"}
    assert h.source_id == "g0004"  # id_pattern ignores the query


def test_detail_without_image_raises(profile: pages.Profile) -> None:
    with pytest.raises(PageError) as info:
        pages.parse_detail(html("detail_noimage.html"), f"{BASE}/gallery/item/x", profile)
    assert info.value.kind == "missing_element"


def test_detail_id_fallbacks() -> None:
    bare = pages.profile_from_toml(MINIMAL)
    assert pages.detail_id("http://h/art/123/", bare) == "123"
    assert pages.detail_id("http://h/view?id=9", bare) == "view?id=9"
    assert pages.detail_id("http://h/", bare).startswith("url-")
    assert pages.detail_id("http://h/", bare) == pages.detail_id("http://h/", bare)


MINIMAL = """
name = "mini"
source = "mini"
[listing]
item_links = "xpath://a[@class='card']/@href"
[detail]
image = "css:img.main::attr(src)"
params_names = "table.p th"
params_values = "table.p td"
[detail.param_map]
"Scale" = "cfg_scale"
"""


def test_xpath_and_parallel_params() -> None:
    profile = pages.profile_from_toml(MINIMAL)
    assert profile.item_links.kind == "xpath" and profile.start_url is None
    listing = pages.parse_listing('<a class="card" href="d/1">x</a>', "http://h/list/", profile)
    assert listing.detail_urls == ["http://h/list/d/1"] and listing.healthy is None
    page = (
        '<img class="main" src="/i.png"><table class="p"><tr><th>Scale</th><th>Steps</th></tr>'
        "<tr><td>4</td><td>12</td></tr></table>"
    )
    entry, healthy = pages.parse_detail(page, "http://h/d/1", profile)
    assert entry.url == "http://h/i.png" and healthy is None
    assert (entry.hints.cfg_scale, entry.hints.steps, entry.hints.source) == (4.0, 12, "mini")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = ", "not valid TOML"),
        ('source = "x"\n[listing]\nitem_links="a"\n[detail]\nimage="img"', "name must be"),
        ('name="n"\nsource="x"\n[detail]\nimage="img"', "[listing] table is required"),
        (
            'name="n"\nsource="x"\n[listing]\nnext_page="a"\n[detail]\nimage="img"',
            "listing.item_links is required",
        ),
        ('name="n"\nsource="x"\n[listing]\nitem_links="a[["\n[detail]\nimage="img"', "listing.item_links"),
        ('name="n"\nsource="x"\n[listing]\nitem_links="xpath://a[["\n[detail]\nimage="i"', "invalid xpath"),
        ('name="n"\nsource="X Y"\n[listing]\nitem_links="a"\n[detail]\nimage="img"', "source must be"),
        ('name="n"\nsource="x"\nrender="magic"\n[listing]\nitem_links="a"\n[detail]\nimage="i"', "render"),
        (
            'name="n"\nsource="x"\nstart_url="ftp://h"\n[listing]\nitem_links="a"\n[detail]\nimage="i"',
            "start_url",
        ),
        (
            'name="n"\nsource="x"\n[listing]\nitem_links="a"\n[detail]\nimage="i"\nparams_names="dt"',
            "params_names and detail.params_values",
        ),
        (
            'name="n"\nsource="x"\n[listing]\nitem_links="a"\n[detail]\nimage="i"\nid_pattern="("',
            "id_pattern",
        ),
        ('name="n"\nsource="x"\n[listing]\nitem_links="a"\n[detail]\nimage="i"\nid_pattern="x"', "capturing"),
        (
            'name="n"\nsource="x"\n[listing]\nitem_links="a"\n[detail]\nimage="i"\n[detail.param_map]\nA="b"',
            "detail.param_map.A",
        ),
    ],
)
def test_profile_errors_name_file_and_key(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        pages.load_profile(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(ValueError, match=r"no bundled profile of that name.*sandbox"):
        pages.load_profile("nope")
    with pytest.raises(ValueError, match="cannot read profile"):
        pages.load_profile("/no/such/file.toml")
