from __future__ import annotations

import copy
import json

import pytest

from imagecrawl.pages import PageError, with_cursor
from imagecrawl.pages import civitai as pages
from tests.pages_util import FIXTURES, assert_expected, page_dict

DIR = FIXTURES / "civitai"
API = "http://127.0.0.1:9999"


def read(name: str) -> bytes:
    return (DIR / name).read_bytes()


# ---------------------------------------------------------------- /api/v1/images (hand-written)


def test_images_page_matches_expected() -> None:
    page = pages.parse_images(read("images_page1.json"), API)
    assert_expected(page_dict(page), DIR / "images_page1.expected.json")


def test_images_page_fields() -> None:
    page = pages.parse_images(read("images_page1.json"), API)
    # 9 items: 3 skipped (no url, ftp url, not an object); the rest kept, even with meta null/absent/bad
    assert page.errors == ["missing_url", "missing_url", "bad_item"]
    assert [e.hints.source_id for e in page.entries] == [
        "469632",
        "469633",
        "469634",
        "469635",
        "469636",
        "469639",
    ]
    first = page.entries[0].hints
    assert first.source == "civitai"
    assert first.page_url == f"{API}/images/469632"
    assert first.prompt == "masterpiece, best quality, 1girl, solo, <lora:koreanDollLikeness:0.5>"
    assert first.negative_prompt == "EasyNegative, (worst quality, low quality:1.4)"
    assert (first.seed, first.steps, first.cfg_scale, first.sampler) == (
        4142586160,
        20,
        7.0,
        "DPM++ 2M Karras",
    )
    assert first.model == "AbyssOrangeMix2_sfw"
    assert first.author == "Cooler_Rider"
    assert first.nsfw == "None"
    assert first.origin == "api"
    assert first.params["clipSkip"] == 2
    assert first.params["Size"] == "450x675"
    assert first.params["Model hash"] == "038ba203d8"
    assert first.params["resources"][0]["name"] == "koreanDollLikeness"
    assert first.params["baseModel"] == "SD 1.5"
    assert first.params["postId"] == 138779
    assert first.params["createdAt"] == "2023-04-11T15:33:12.500Z"
    assert "username" not in first.params and "Cooler_Rider" not in json.dumps(first.params)
    assert "hash" not in first.params  # BlurHash: not a content hash, not kept

    null_meta, no_meta = page.entries[1].hints, page.entries[2].hints
    assert null_meta.prompt is None and null_meta.nsfw == "Soft" and null_meta.params["baseModel"] == "SDXL 1.0"
    assert no_meta.prompt is None and no_meta.author is None and "baseModel" not in no_meta.params

    strings = page.entries[3].hints  # numbers as strings are typed; the prompt is stripped
    assert (strings.prompt, strings.seed, strings.steps, strings.cfg_scale) == (
        "a lighthouse at dusk",
        123456789012,
        30,
        6.5,
    )
    assert strings.params == {"comfy": '{"nodes": []}'}

    no_id = page.entries[4].hints  # id missing → from the URL's file name; untypable seed kept in params
    assert no_id.source_id == "469636" and no_id.page_url == f"{API}/images/469636"
    assert no_id.seed is None and no_id.params["seed"] == "not-a-number" and no_id.steps == 25

    assert page.entries[5].hints.prompt is None  # meta of the wrong type is ignored, the image kept
    assert page.next_cursor == "469639|1681227312500"
    assert page.next_page == "https://civitai.com/api/v1/images?limit=9&cursor=469639%7C1681227312500"


def test_images_last_page() -> None:
    page = pages.parse_images(read("images_page2.json"), API)
    assert page.next_cursor is None and page.next_page is None and page.errors == []
    hints = page.entries[0].hints
    assert hints.negative_prompt is None and hints.cfg_scale is None and hints.nsfw == "X"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"<html>503 Service Unavailable</html>", "not_json"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b"", "not_json"),
        (b"[]", "bad_shape"),
        (b'{"items": null}', "bad_shape"),
        (b'{"error": "rate limited"}', "bad_shape"),
        (b'"items"', "bad_shape"),
    ],
)
def test_images_unusable_bodies(body: bytes, kind: str) -> None:
    with pytest.raises(PageError) as info:
        pages.parse_images(body, API)
    assert info.value.kind == kind


def test_images_bad_metadata_is_counted() -> None:
    page = pages.parse_images({"items": [], "metadata": "nope"}, API)
    assert page.errors == ["bad_metadata"] and page.next_cursor is None
    page = pages.parse_images({"items": [], "metadata": {"nextCursor": 123, "nextPage": "javascript:x"}}, API)
    assert page.next_cursor == "123" and page.next_page is None


def test_url_builders() -> None:
    url = pages.images_api_url(
        API + "/", limit=50, nsfw="None", sort="Most Reactions", period="Week", username="a b", model_id=12
    )
    assert url == (
        f"{API}/api/v1/images?limit=50&withMeta=true&nsfw=None&sort=Most+Reactions&period=Week&username=a+b&modelId=12"
    )
    assert "nsfw" not in pages.images_api_url(API, nsfw=None)
    nxt = with_cursor(url, "469639|1681227312500")
    assert nxt.endswith("&modelId=12&cursor=469639%7C1681227312500")
    assert with_cursor(nxt, "2").count("cursor=") == 1
    assert pages.models_api_url(API, model_id=1102) == f"{API}/api/v1/models/1102"
    assert pages.models_api_url(API, limit=200) == (
        f"{API}/api/v1/models?limit=100&nsfw=false&sort=Newest&period=AllTime"
    )


def test_source_id_from_url() -> None:
    assert pages.source_id_from_url("https://i.example/x/width=512/9304.jpeg") == "9304"
    assert pages.source_id_from_url("https://i.example/x/width=512/9304") == "9304"
    assert pages.source_id_from_url("https://i.example/x/uuid-abc.jpeg") is None


# ---------------------------------------------------------------- /api/v1/models (REAL responses)


def test_models_list_real_response() -> None:
    page = pages.parse_models(read("civitai_v1_models_list_limit10.json"), "https://civitai.com")
    assert_expected(page_dict(page), DIR / "models_list_limit10.expected.json")
    assert len(page.entries) == 97 and page.errors == []
    assert len({e.url for e in page.entries}) == 97
    assert page.next_cursor == "37169|338034|122359"
    assert page.next_page == "https://civitai.com/api/v1/models?limit=10&cursor=37169%7C338034%7C122359"
    first = page.entries[0]
    assert first.url.endswith("/width=1200/5706937.jpeg")
    assert first.hints.source_id == "5706937"
    assert first.hints.page_url == "https://civitai.com/images/5706937"
    assert first.hints.prompt is None  # /models never carries meta: the prompt must come from the file
    assert first.hints.nsfw == "1"
    assert first.hints.params["modelName"] == "Pony Diffusion V6 XL"
    assert first.hints.params["modelVersionId"] == "290640"
    assert first.hints.params["baseModel"] == "Pony"
    assert first.hints.params["hasMeta"] is False


def test_models_entries_carry_their_models_newest_version_as_position() -> None:
    raw = json.loads(read("civitai_v1_models_list_limit10.json"))
    newest = {str(m["id"]): max(v["publishedAt"] for v in m["modelVersions"]) for m in raw["items"]}
    page = pages.parse_models(raw, "https://civitai.com")
    assert {e.hints.params["modelId"]: e.position for e in page.entries} == newest
    # a model's first version listed need not be its newest: Pony's second listed version is newer
    assert newest["257749"] == "2024-01-14T06:59:00.622Z"
    images = pages.parse_images(read("images_page1.json"), "https://civitai.com")
    assert {e.position for e in images.entries} == {None}  # images have their own createdAt


def test_model_1102_real_response_images_without_id() -> None:
    page = pages.parse_models(read("civitai_v1_model_1102.json"), "https://civitai.com")
    assert_expected(page_dict(page), DIR / "model_1102.expected.json")
    assert len(page.entries) == 24 and page.errors == []
    assert page.next_cursor is None and page.next_page is None
    # 2022 images have no "id": it comes from the file name (…/width=512/9304.jpeg)
    assert page.entries[0].hints.source_id == "9304"
    assert all(e.hints.source_id and e.url.split("/")[-1].startswith(e.hints.source_id) for e in page.entries)
    assert {e.hints.params["modelVersionName"] for e in page.entries} == {"V1", "V2", "V3 Alpha"}


def test_models_nsfw_filter_and_bad_parts() -> None:
    data = json.loads(read("civitai_v1_model_1102.json"))
    mutated = copy.deepcopy(data)
    images = mutated["modelVersions"][0]["images"]
    images[0]["nsfwLevel"] = 4
    images[1]["url"] = None
    images.append("junk")
    mutated["modelVersions"].append({"id": 1, "images": "nope"})
    safe = pages.parse_models(mutated, "https://civitai.com")
    assert len(safe.entries) == 24 - 2
    assert sorted(safe.errors) == ["bad_item", "bad_version", "filtered_nsfw", "missing_url"]
    everything = pages.parse_models(mutated, "https://civitai.com", max_nsfw_level=None)
    assert len(everything.entries) == 23 and everything.entries[0].hints.nsfw == "4"
    mature = pages.parse_models(mutated, "https://civitai.com", max_nsfw_level=4)
    assert len(mature.entries) == 23
    soft = pages.parse_models(mutated, "https://civitai.com", max_nsfw_level=2)
    assert len(soft.entries) == 22
    # a model without modelVersions / an image without id or a numeric file name
    weird = {
        "items": [
            {"id": 5, "name": "m"},
            {
                "id": 6,
                "modelVersions": [{"id": 7, "images": [{"url": "https://i.example/abc/uuid.png", "nsfwLevel": 1}]}],
            },
        ]
    }
    page = pages.parse_models(weird, API)
    assert page.errors == ["missing_versions"]
    assert page.entries[0].hints.source_id is None
    assert page.entries[0].hints.page_url == f"{API}/models/6?modelVersionId=7"
    with pytest.raises(PageError) as info:
        pages.parse_models(b'{"items": {}}', API)
    assert info.value.kind == "bad_shape"
