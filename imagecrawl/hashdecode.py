"""A reduced grey image for the perceptual hash, decoded within a memory budget. Pure: no Scrapy.

The hash needs 32x32 grey pixels; decoding a 7999x7999 RGBA PNG at full size and compositing it over white
costs well over a gigabyte. So (see :func:`reduced_grey`):

* an image whose decoded pixels take at most ``DIRECT_BYTES`` is hashed as it is (the classic path);
* JPEG is decoded at 1/8 scale by its own DCT (``draft``), before this module is asked;
* a non-interlaced PNG with a lossless row layout is decoded **in strips**: its zlib stream is inflated a
  few rows at a time, each strip (with the last decoded row before it, so that the row filters resolve)
  is decoded by Pillow, turned grey over white and box-reduced at once, so no full-size buffer ever exists;
* any other image is decoded whole only when its pixels fit ``DECODE_BUDGET_BYTES``, one such decode at a
  time in the process, and reduced strip by strip without full-size copies; bigger ones get no pHash
  (the gate: :class:`OverBudget`).
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Final

import numpy as np
from PIL import Image

#: decoded size up to which an image is hashed directly (a 2048x2048 RGBA image)
DIRECT_BYTES: Final = 16 * 1024 * 1024
#: the most a whole decode may take when no reduced decoding exists for the image
DECODE_BUDGET_BYTES: Final = 64 * 1024 * 1024
#: the longer side of the reduced image the hash is taken from
REDUCED_SIDE: Final = 512
#: bytes of decoded pixels per strip
STRIP_BYTES: Final = 4 * 1024 * 1024
#: one whole decode over DIRECT_BYTES at a time in the process, whatever the number of media threads
_WHOLE_DECODES: Final = threading.BoundedSemaphore(1)
#: at most this many strip decodes at a time (each holds a few strips: tens of MB)
_STRIP_DECODES: Final = threading.BoundedSemaphore(2)
_BYTES_PER_PIXEL: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "LA": 4, "PA": 4}
_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class OverBudget(Exception):
    """The image cannot be reduced within the memory budget: it gets no perceptual hash."""


def decoded_bytes(img: Image.Image) -> int:
    """What decoding ``img`` at its current size costs (Pillow keeps RGB, RGBA, CMYK... at 4 bytes a pixel)."""
    width, height = img.size
    return width * height * _BYTES_PER_PIXEL.get(img.mode, 4)


def _factor(width: int, height: int) -> int:
    return max(1, math.ceil(max(width, height) / REDUCED_SIDE))


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def _grey(strip: Image.Image) -> Image.Image:
    """``strip`` in grey, composited over white when it has alpha (no full-size RGBA copies: strips only)."""
    if not _has_alpha(strip):
        return strip.convert("L")
    rgba = strip.convert("RGBA")
    grey = np.asarray(rgba.convert("L"), dtype=np.uint16)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint16)
    # over white: L*a + 255*(255-a), /255, rounded
    out = (grey * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "L")


def _stack(parts: list[Image.Image], width: int) -> Image.Image:
    height = sum(p.height for p in parts)
    out = Image.new("L", (width, max(1, height)))
    y = 0
    for part in parts:
        out.paste(part, (0, y))
        y += part.height
    return out


def reduced_grey(img: Image.Image, data: bytes) -> Image.Image | None:
    """A grey image (alpha over white) at most about ``REDUCED_SIDE`` pixels on its longer side for
    ``img`` (opened from ``data``, not yet decoded), or None when ``img`` is small enough to be hashed as
    it is. Raises :class:`OverBudget` when no bounded decoding exists for it."""
    if decoded_bytes(img) <= DIRECT_BYTES:
        return None
    if img.format == "PNG":
        strips = _png_strips(img, data)
        if strips is not None:
            with _STRIP_DECODES:
                return _reduce_strips(strips, img.size)
    if decoded_bytes(img) > DECODE_BUDGET_BYTES:
        raise OverBudget(f"{img.size[0]}x{img.size[1]} {img.mode} {img.format} needs {decoded_bytes(img)} bytes")
    with _WHOLE_DECODES:
        img.load()
        width, height = img.size
        step = max(1, STRIP_BYTES // max(1, width * 4))
        strips = (img.crop((0, y, width, min(height, y + step))) for y in range(0, height, step))
        return _reduce_strips(strips, img.size)


def _reduce_strips(strips: Iterator[Image.Image], size: tuple[int, int]) -> Image.Image:
    """Box-reduce consecutive strips (of any heights) by one factor in both directions."""
    width, height = size
    f = _factor(width, height)
    parts: list[Image.Image] = []
    pending: Image.Image | None = None  # rows not yet a multiple of f
    for strip in strips:
        grey = _grey(strip)
        if pending is not None:
            grey = _stack([pending, grey], width)
            pending = None
        whole = grey.height // f * f
        if whole:
            parts.append(grey.crop((0, 0, width, whole)).reduce(f))
        if whole < grey.height:
            pending = grey.crop((0, whole, width, grey.height))
    if pending is not None:
        parts.append(pending.reduce(f))
    return _stack(parts, math.ceil(width / f))


def _chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    view = memoryview(data)
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", view[pos : pos + 4])
        kind = bytes(view[pos + 4 : pos + 8])
        yield kind, view[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            return


def _png_strips(img: Image.Image, data: bytes) -> Iterator[Image.Image] | None:
    """The rows of a non-interlaced PNG as decoded strips, or None when it cannot be decoded that way
    (interlaced, animated, a row layout Pillow cannot write back losslessly)."""
    tiles = getattr(img, "tile", None) or []
    if getattr(img, "is_animated", False) or img.info.get("interlace") or len(tiles) != 1:
        return None
    tile = tiles[0]
    rawmode = tile.args if isinstance(tile.args, str) else None
    if tile.codec_name != "zip" or rawmode is None:
        return None
    try:
        Image.new(img.mode, (1, 1)).tobytes("raw", rawmode)  # the last row of a strip is written back
    except (ValueError, OSError):
        return None
    header = next(_chunks(data), None)
    if header is None or header[0] != b"IHDR" or len(header[1]) < 13:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", header[1][:10])
    if (width, height) != img.size or colour not in _CHANNELS:
        return None
    row_bytes = (width * depth * _CHANNELS[colour] + 7) // 8
    return _strips(img, data, rawmode, row_bytes)


def _strips(img: Image.Image, data: bytes, rawmode: str, row_bytes: int) -> Iterator[Image.Image]:
    width, height = img.size
    stride = row_bytes + 1  # the filter byte
    per_strip = max(1, STRIP_BYTES // max(1, width * 4))
    inflate = zlib.decompressobj()
    buffer = bytearray()
    previous: bytes | None = None  # the last decoded row, unfiltered (filter byte 0 first)
    done = 0
    palette = img.palette.copy() if img.mode in ("P", "PA") and img.palette is not None else None
    transparency = img.info.get("transparency")

    def decode(rows: int) -> Image.Image:
        nonlocal previous
        chunk = bytes(buffer[: rows * stride])
        del buffer[: rows * stride]
        raw = (previous + chunk) if previous is not None else chunk
        extra = 1 if previous is not None else 0
        strip = Image.frombytes(img.mode, (width, rows + extra), zlib.compress(raw, 0), "zip", rawmode)
        if palette is not None:
            strip.putpalette(palette)
        if transparency is not None:
            strip.info["transparency"] = transparency
        previous = b"\x00" + strip.crop((0, rows + extra - 1, width, rows + extra)).tobytes("raw", rawmode)
        return strip.crop((0, extra, width, rows + extra)) if extra else strip

    for kind, body in _chunks(data):
        if kind != b"IDAT":
            continue
        pending = bytes(body)
        while pending and done < height:
            buffer += inflate.decompress(pending, per_strip * stride)
            pending = inflate.unconsumed_tail
            while len(buffer) >= per_strip * stride and done < height:
                rows = min(per_strip, height - done)
                yield decode(rows)
                done += rows
    buffer += inflate.flush()
    if done < height and len(buffer) >= stride:
        rows = min(height - done, len(buffer) // stride)
        yield decode(rows)
        done += rows
    if done < height:
        raise ValueError(f"image file is truncated: its data ends after {done} of {height} rows")
