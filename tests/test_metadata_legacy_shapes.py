"""Shapes other generators wrote that the extractor misread, in files built here faithfully to each
format (no real file of these shapes is available under a licence that allows keeping it):

* InvokeAI 1.x ``Dream`` command lines with values glued to their flags (``-s50 -W512 -H512 -C7.5
  -Ak_lms -S3357757885``, as lstein/stable-diffusion's ``dream.py`` wrote them) and every sibling
  spelling (``-s 50``, ``--steps 50``, ``--steps=50``, ``--sampler=k_lms``, flags, multi-value options);
* InvokeAI 2.x blended prompts: ``sd-metadata`` ``image.prompt`` as weighted pieces, every piece kept;
* EXIF ``UserComment`` infotext whose prompt starts with ``{`` (``{masterpiece}``, JSON-style prompts):
  JSON that fails, or parses into nothing useful, falls back to infotext (the same for PNG
  ``parameters`` and loose text chunks).
"""

from __future__ import annotations

import json

import pytest

from imagecrawl.metadata import extract_metadata
from imagecrawl.metadata.formats import blended_prompt, dream_options
from tests.test_metadata_parsers import jpeg_bytes, png_bytes, tiff, user_comment

GLUED = '"a portrait of a cat [blurry, ugly]" -s50 -W512 -H512 -C7.5 -Ak_lms -S3357757885'


def test_dream_with_glued_values() -> None:
    meta = extract_metadata(png_bytes([("tEXt", "Dream", GLUED)]))
    assert (meta.prompt, meta.negative_prompt) == ("a portrait of a cat", "blurry, ugly")
    assert (meta.steps, meta.width, meta.height, meta.cfg_scale, meta.sampler, meta.seed) == (
        50,
        512,
        512,
        7.5,
        "k_lms",
        3357757885,
    )
    assert meta.params == {} and meta.metadata_source == "png:Dream"


@pytest.mark.parametrize(
    "options",
    [
        "-s 50 -W 512 -H 512 -C 7.5 -A k_lms -S 3357757885",
        "--steps 50 --width 512 --height 512 --cfg_scale 7.5 --sampler k_lms --seed 3357757885",
        "--steps=50 --width=512 --height=512 --cfg_scale=7.5 --sampler=k_lms --seed=3357757885",
        "--steps=50 -W512 --height 512 -C=7.5 --sampler_name=k_lms -S3357757885",
    ],
)
def test_dream_sibling_spellings(options: str) -> None:
    meta = extract_metadata(png_bytes([("tEXt", "Dream", f'"a cat" {options}')]))
    assert (meta.prompt, meta.steps, meta.width, meta.height, meta.cfg_scale, meta.sampler, meta.seed) == (
        "a cat",
        50,
        512,
        512,
        7.5,
        "k_lms",
        3357757885,
    )
    assert meta.params == {}


def test_dream_flags_multi_values_and_quoted_paths() -> None:
    opts = dream_options('-s50 -S-1 -n3 --seamless -U 2 0.75 -G0.8 -I "in it.png" -f0.5 -ft gfpgan -x')
    assert opts == {
        "steps": "50",
        "seed": "-1",
        "iterations": "3",
        "seamless": True,
        "upscale": ["2", "0.75"],
        "gfpgan_strength": "0.8",
        "init_img": "in it.png",
        "strength": "0.5",
        "facetool": "gfpgan",
        "skip_normalize": True,
    }
    meta = extract_metadata(png_bytes([("tEXt", "Dream", '"x" -s50 -Ak_euler_a --seamless -U 2 0.75')]))
    assert meta.params == {"seamless": True, "upscale": ["2", "0.75"]}
    assert not any(k[:1].isupper() for k in meta.params)  # no junk keys such as "Ak_lms"


def test_blended_prompts_keep_every_piece() -> None:
    pieces = [{"prompt": "dog", "weight": 1.0}, {"prompt": "cat", "weight": 2.0}]
    assert blended_prompt(pieces) == "dog:1,cat:2"
    assert blended_prompt([{"prompt": "a dog", "weight": 0.5}, {"prompt": " a cat", "weight": 1.5}]) == (
        "a dog:0.5 a cat:1.5"
    )
    assert blended_prompt([{"prompt": "just one", "weight": 1.0}]) == "just one"
    sd = {
        "model": "stable diffusion",
        "model_weights": "stable-diffusion-1.5",
        "app_id": "invoke-ai/InvokeAI",
        "app_version": "2.2.5",
        "image": {
            "prompt": [{"prompt": "dog [blurry]", "weight": 1.0}, {"prompt": "cat", "weight": 2.0}],
            "steps": 30,
            "cfg_scale": 7.5,
            "seed": 42,
            "sampler": "k_euler_a",
            "width": 512,
            "height": 512,
            "type": "txt2img",
        },
    }
    meta = extract_metadata(png_bytes([("tEXt", "sd-metadata", json.dumps(sd))]))
    assert meta.prompt == "dog:1,cat:2" and meta.negative_prompt == "blurry"
    assert meta.params["prompt_pieces"] == sd["image"]["prompt"]  # type: ignore[index]
    assert (meta.seed, meta.steps, meta.model) == (42, 30, "stable-diffusion-1.5")


INFOTEXT_BRACES = (
    "{masterpiece}, best quality, 1girl, {{detailed eyes}}\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: Euler a, CFG scale: 7, Seed: 123456, Size: 512x768, Model: anything-v3"
)
INFOTEXT_JSON_STYLE = (
    '{"subject": "a cat", "style": "watercolor"}, highly detailed\n'
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 99, Size: 640x640, Model: sd_xl_base_1.0"
)


@pytest.mark.parametrize(
    ("text", "prompt", "seed"),
    [
        (INFOTEXT_BRACES, "{masterpiece}, best quality, 1girl, {{detailed eyes}}", 123456),
        (INFOTEXT_JSON_STYLE, '{"subject": "a cat", "style": "watercolor"}, highly detailed', 99),
    ],
)
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "ascii"])
def test_usercomment_that_only_looks_like_json_is_infotext(text: str, prompt: str, seed: int, encoding: str) -> None:
    exif = tiff([], [(0x9286, 7, user_comment(text, encoding))])
    meta = extract_metadata(jpeg_bytes(exif))
    assert meta.prompt == prompt and meta.seed == seed, meta.to_dict()
    assert meta.metadata_source == "exif:usercomment" and meta.error is None


@pytest.mark.parametrize("text", [INFOTEXT_BRACES, INFOTEXT_JSON_STYLE])
def test_png_parameters_and_loose_chunks_that_only_look_like_json(text: str) -> None:
    for key in ("parameters", "Description"):
        meta = extract_metadata(png_bytes([("iTXt", key, text)]))
        assert meta.prompt is not None and meta.prompt.startswith("{"), (key, meta.to_dict())
        assert meta.steps is not None


def test_real_json_usercomment_still_parses_as_json() -> None:
    payload = {"prompt": "a fox", "negativePrompt": "blur", "seed": 5, "steps": 25, "cfgScale": 6, "sampler": "Euler"}
    exif = tiff([], [(0x9286, 7, user_comment(json.dumps(payload), "utf-16-be"))])
    meta = extract_metadata(jpeg_bytes(exif))
    assert (meta.prompt, meta.seed, meta.steps) == ("a fox", 5, 25)
