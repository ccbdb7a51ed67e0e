"""The perceptual hash within a memory budget (imagecrawl.hashdecode): a big PNG is decoded in strips and
hashes (nearly) as the full decode does, in every row layout; filters that reach across strip boundaries
resolve; truncated data is an error, not a hash; an image with no bounded decoding gets no hash (counted by
the spider) instead of a gigabyte of memory; and the worst case (7999x7999 RGBA) peaks far under 300 MB in a
fresh process."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagecrawl import hashdecode
from imagecrawl.hashdecode import OverBudget, decoded_bytes, reduced_grey
from imagecrawl.media import MediaError, hamming, phash_of, probe_image
from tests.hugepng import measure, write_png


def picture(width: int, height: int, seed: int = 5) -> Image.Image:
    """A photo-like RGBA picture (smooth blobs, an alpha ramp) that every PNG filter type compresses."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((9, 12, 3)) * 255).astype(np.uint8), "RGB")
    rgb = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    alpha = np.broadcast_to(np.linspace(40, 255, width, dtype=np.uint8)[None, :], (height, width))
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def png(img: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **options)
    return buf.getvalue()


BIG = picture(1150, 950)


@pytest.fixture(autouse=True)
def small_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets scaled down with the pictures (the real ones are exercised by the e2e test below)."""
    monkeypatch.setattr(hashdecode, "DIRECT_BYTES", 1024 * 1024)
    monkeypatch.setattr(hashdecode, "DECODE_BUDGET_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(hashdecode, "STRIP_BYTES", 256 * 1024)
    monkeypatch.setattr(hashdecode, "REDUCED_SIDE", 256)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("RGBA", {}),
        ("RGBA", {"compress_level": 1}),  # other filter choices per row
        ("RGB", {}),
        ("LA", {}),
        ("L", {}),
    ],
)
def test_a_big_png_is_hashed_from_strips_as_from_the_whole_image(mode: str, options: dict[str, object]) -> None:
    img = BIG.convert(mode)
    data = png(img, **options)
    opened = Image.open(io.BytesIO(data))
    assert decoded_bytes(opened) > hashdecode.DIRECT_BYTES
    reduced = reduced_grey(opened, data)
    assert reduced is not None and reduced.mode == "L" and max(reduced.size) <= 256
    facts = probe_image(data)
    assert facts.phash is not None
    assert hamming(facts.phash, phash_of(Image.open(io.BytesIO(data)))) <= 3
    # and it tells pictures apart
    other = probe_image(png(picture(1150, 950, seed=9).convert(mode), **options))
    assert other.phash is not None and hamming(facts.phash, other.phash) > 12


def test_strips_are_what_the_whole_decode_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # small strips (a few rows), so every filter type meets a strip boundary many times
    monkeypatch.setattr(hashdecode, "STRIP_BYTES", 1150 * 4 * 3)
    data = png(BIG)
    opened = Image.open(io.BytesIO(data))
    strips = hashdecode._png_strips(opened, data)
    assert strips is not None
    rows = np.concatenate([np.asarray(s) for s in strips])
    assert rows.shape == (950, 1150, 4)
    assert np.array_equal(rows, np.asarray(BIG))


def test_a_palette_png_with_transparency_keeps_its_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashdecode, "DIRECT_BYTES", 1024)  # a palette image is 1 byte a pixel
    img = BIG.convert("RGB").quantize(32)
    img.info["transparency"] = 0
    data = png(img, transparency=0)
    opened = Image.open(io.BytesIO(data))
    assert "transparency" in opened.info
    reduced = reduced_grey(opened, data)
    assert reduced is not None
    assert hamming(phash_of(reduced), phash_of(Image.open(io.BytesIO(data)))) <= 3


def test_truncated_data_is_an_error_not_a_hash() -> None:
    data = png(BIG.convert("RGB"))
    with pytest.raises(MediaError) as caught:
        probe_image(data[: len(data) // 2])
    assert caught.value.kind == "truncated"


def test_an_image_with_no_bounded_decoding_gets_no_hash(tmp_path: Path) -> None:
    # 16-bit RGBA rows cannot be written back by Pillow, and the whole decode would exceed the budget
    path = tmp_path / "deep.png"
    write_png(path, 1500, "rgba16", seed=1)
    data = path.read_bytes()
    opened = Image.open(io.BytesIO(data))
    with pytest.raises(OverBudget):
        reduced_grey(opened, data)
    facts = probe_image(data)
    assert (facts.width, facts.height, facts.phash) == (1500, 1500, None)


@pytest.mark.parametrize("fmt", ["BMP", "WEBP"])
def test_a_format_with_no_strip_decoding_is_decoded_whole_within_the_budget(fmt: str) -> None:
    buf = io.BytesIO()
    BIG.convert("RGB").save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    data = buf.getvalue()
    opened = Image.open(io.BytesIO(data))
    assert decoded_bytes(opened) > hashdecode.DIRECT_BYTES
    reduced = reduced_grey(opened, data)
    assert reduced is not None and max(reduced.size) <= 256
    facts = probe_image(data)
    assert facts.phash is not None
    assert hamming(facts.phash, phash_of(Image.open(io.BytesIO(data)))) <= 3


@pytest.mark.e2e
def test_the_worst_case_image_peaks_far_under_300_mb(tmp_path: Path) -> None:
    paths = [tmp_path / f"worst-{n}.png" for n in range(3)]
    for n, path in enumerate(paths):
        assert write_png(path, 7999, "rgba", seed=n) < 1024 * 1024
    one = measure(paths[:1])
    assert one["hashed"] == 1
    assert one["peak_mb"] - one["base_mb"] < 150, one
    many = measure(paths)
    assert many["hashed"] == 3
    assert many["peak_mb"] < 300, many
