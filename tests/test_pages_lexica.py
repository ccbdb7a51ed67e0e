from __future__ import annotations

import pytest

from imagecrawl.pages import PageError
from imagecrawl.pages import lexica as pages
from tests.pages_util import FIXTURES, assert_expected, page_dict

DIR = FIXTURES / "lexica"
API = "http://127.0.0.1:9999/"


def test_search_matches_expected() -> None:
    page = pages.parse_search((DIR / "search.json").read_bytes(), API)
    assert_expected(page_dict(page), DIR / "search.expected.json")


def test_search_fields() -> None:
    page = pages.parse_search((DIR / "search.json").read_bytes(), API)
    assert page.errors == ["missing_url", "bad_item"]
    assert len(page.entries) == 3
    first = page.entries[0]
    assert first.url == "https://image.example/lexica/7c3e9a10-5b2d-4f61-9e8a-2d4b6c8f0a11"
    h = first.hints
    assert (h.source, h.source_id) == ("lexica", "7c3e9a10-5b2d-4f61-9e8a-2d4b6c8f0a11")
    assert h.page_url == "https://lexica.art?q=7c3e9a10-5b2d-4f61-9e8a-2d4b6c8f0a11"  # the `gallery` field
    assert h.prompt == "isometric pixel-art tea house on a floating island"
    assert h.seed == 2718281828  # a string in the real API
    assert h.cfg_scale == 7.0  # `guidance`
    assert h.model == "stability-ai/stable-diffusion"
    assert h.nsfw == "false"
    assert h.params == {"grid": True, "promptid": "5f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5"}
    second = page.entries[1].hints
    assert (second.nsfw, second.seed, second.cfg_scale, second.negative_prompt) == ("true", 42, 8.5, "blurry")
    assert second.page_url == "http://127.0.0.1:9999/prompt/11112222-aaaa-bbbb-cccc-333344445555"  # no gallery
    third = page.entries[2].hints
    assert third.prompt is None and third.seed is None and third.params == {"seed": "random"}
    assert third.nsfw is None
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"Too many requests", "not_json"), (b'{"images": {}}', "bad_shape"), (b"[1,2]", "bad_shape")],
)
def test_unusable_bodies(body: bytes, kind: str) -> None:
    with pytest.raises(PageError) as info:
        pages.parse_search(body, API)
    assert info.value.kind == kind


def test_search_url() -> None:
    assert pages.search_url(API, "a red fox & co") == "http://127.0.0.1:9999/api/v1/search?q=a+red+fox+%26+co"
