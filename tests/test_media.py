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
