from __future__ import annotations

import io
import json
import struct
import time
import zlib

import pytest
from PIL import Image

from imagecrawl.media import MediaError, hamming, probe_image, sniff_format

from .realworld import REALWORLD, manifest


def _png(w: int, h: int, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat_data = zlib.compress(b"\x00" * 1000)
    idat = struct.pack(">I", len(idat_data)) + b"IDAT" + idat_data + struct.pack(">I", zlib.crc32(b"IDAT" + idat_data))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


@pytest.mark.skipif(not REALWORLD.exists(), reason=f"real-world corpus not found at {REALWORLD}")
def test_real_files_format_and_pixel_size() -> None:
    checked = 0
    for entry in manifest():
        data = (REALWORLD / "images" / entry["file"]).read_bytes()
        if entry["actual_format"] == "EMPTY":
            with pytest.raises(MediaError) as err:
                probe_image(data)
            assert err.value.kind == "empty"
            continue
        facts = probe_image(data)
        assert facts.format == entry["actual_format"], entry["file"]
        assert [facts.width, facts.height] == entry["pixel_size"], entry["file"]
        assert facts.sha256 == entry["sha256"]
        assert facts.size_bytes == entry["bytes"]
        checked += 1
    assert checked >= 10


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    bomb = _png_header_only(30000, 30000)
    start = time.perf_counter()
    with pytest.raises(MediaError) as err:
        probe_image(bomb, max_pixels=64_000_000)
    assert err.value.kind == "too_many_pixels"
    assert time.perf_counter() - start < 1.0


def test_bad_bodies_are_typed_errors() -> None:
    for body, kind in [
        (b"", "empty"),
        (b"<html>nope</html>", "not_an_image"),
        (_png(50, 50)[:60], "truncated"),
    ]:
        with pytest.raises(MediaError) as err:
            probe_image(body)
        assert err.value.kind == kind, body[:20]


def test_sniff_ignores_names() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "JPEG")
    assert sniff_format(buf.getvalue()) == "JPEG"
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "WEBP")
    assert sniff_format(buf.getvalue()) == "WEBP"


def test_phash_survives_resize_and_reencode_but_separates_pictures() -> None:
    from PIL import ImageDraw

    base = Image.linear_gradient("L").convert("RGB").resize((256, 256))
    draw = ImageDraw.Draw(base)
    draw.ellipse((40, 60, 150, 170), fill=(220, 30, 30))
    draw.rectangle((150, 20, 230, 120), fill=(20, 40, 200))
    other = Image.linear_gradient("L").rotate(90).convert("RGB").resize((256, 256))
    draw = ImageDraw.Draw(other)
    draw.ellipse((120, 120, 240, 240), fill=(30, 200, 60))
    draw.polygon([(10, 10), (100, 30), (40, 110)], fill=(250, 250, 0))

    def enc(img: Image.Image, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    original = probe_image(enc(base, "PNG"))
    small = probe_image(enc(base.resize((128, 128)), "JPEG", quality=70))
    different = probe_image(enc(other, "PNG"))
    assert original.phash is not None and small.phash is not None and different.phash is not None
    assert hamming(original.phash, small.phash) <= 6
    assert hamming(original.phash, different.phash) > 16


def test_tiny_images_get_no_phash() -> None:
    assert probe_image(_png(1, 1)).phash is None
    assert json.dumps(probe_image(_png(64, 64)).phash) != "null"


def _classic_phash(img: Image.Image) -> int:
    """The textbook pHash, written out: 32x32 grey (over white), 2-D DCT-II, the low 8x8 block against
    its median, bits read row by row, first one highest; as a signed 64-bit value."""
    import numpy as np

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    dct = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    dct[0, :] = np.sqrt(1.0 / n)
    low = (dct @ pixels @ dct.T)[:8, :8].flatten()
    value = 0
    for bit in low > np.median(low):
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= (1 << 63) else value


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA"])
def test_phash_is_the_classic_phash_bit_for_bit(mode: str) -> None:
    """Stored hashes are compared across runs and stores: the packed bits and the median must stay the
    textbook ones, for noise, gradients and flat images (ties at the median), any size and mode."""
    import numpy as np

    from imagecrawl.media import phash_of

    rng = np.random.default_rng(7)
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "P": 1, "LA": 2}[mode]
    checked = 0
    for n in range(40):
        height, width = 16 + (n * 37) % 300, 16 + (n * 53) % 260
        if n % 4 == 0:
            arr = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
        elif n % 4 == 1:  # a gradient: few distinct DCT magnitudes
            ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :, None] * np.ones((height, 1, bands))
            arr = ramp.astype(np.uint8)
        elif n % 4 == 2:  # flat: every AC coefficient ties
            arr = np.full((height, width, bands), n * 5 % 256, dtype=np.uint8)
        else:  # blocks
            arr = np.kron(
                rng.integers(0, 256, (4, 4, bands), dtype=np.uint8),
                np.ones((height // 4 + 1, width // 4 + 1, 1), dtype=np.uint8),
            )[:height, :width]
        base = Image.fromarray(
            arr[:, :, 0] if bands == 1 else arr,
            "L" if bands == 1 else ("LA" if bands == 2 else ("RGB" if bands == 3 else "RGBA")),
        )
        img = base.convert("P") if mode == "P" else base
        assert phash_of(img) == _classic_phash(img)
        checked += 1
    assert checked == 40
