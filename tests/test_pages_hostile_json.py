"""API bodies built to break the parser: nesting deeper than Python decodes is a counted page error
(never a RecursionError out of the page object), and NaN/Infinity never reach ``params`` (which must
stay strict JSON for every reader)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from imagecrawl.pages import PageError, civitai, lexica
from imagecrawl.records import SourceHints, build_record, params_json


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("parse", [civitai.parse_images, lexica.parse_search])
def test_json_nested_100k_deep_is_a_page_error(parse: Any) -> None:
    body = b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(PageError) as caught:
        parse(body)
    assert caught.value.kind == "too_deep"


def test_nan_and_infinity_from_an_api_never_reach_params() -> None:
    body = (
        '{"items": [{"id": 7, "url": "https://img.example/7.png", "width": 8, "height": 8,'
        ' "meta": {"prompt": "a cat", "cfgScale": NaN, "denoise": Infinity, "eta": -Infinity,'
        ' "nested": {"x": [NaN, 1.5]}}}], "metadata": {}}'
    )
    page = civitai.parse_images(body)
    [entry] = page.entries
    record = build_record(
        hints=entry.hints, image_url=entry.url, body=_png(), salt=b"s", now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert record.params is not None
    params = json.loads(record.params, parse_constant=lambda c: pytest.fail(f"{c} in params"))
    assert params.get("nested") == {"x": [None, 1.5]}
    assert record.cfg_scale is None


def test_params_json_is_strict_even_for_floats_made_in_python() -> None:
    text = params_json({"a": float("nan"), "b": [float("inf"), 2.0], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [None, 2.0], "c": {"d": None}}
    hints = SourceHints(source="t", params={"x": float("nan")})
    record = build_record(hints=hints, image_url="https://i.example/a.png", body=_png(), salt=b"s")
    assert record.params is not None and "NaN" not in record.params
