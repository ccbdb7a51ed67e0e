"""Stealth metadata hidden in pixel LSBs (A1111/Forge "stealth pnginfo" extension, NovelAI).

Layout: bits are read column by column (x outer, y inner), MSB first.  Alpha modes take the LSB of
the alpha channel (1 bit per pixel); RGB modes take the LSBs of R, G, B (3 bits per pixel).
``magic (15 bytes) | payload length in bits (32-bit big-endian) | payload`` where the magic is
``stealth_pnginfo`` / ``stealth_rgbinfo`` (plain UTF-8) or ``stealth_pngcomp`` / ``stealth_rgbcomp``
(gzip).

Cost control: for PNG only the rows needed are inflated (``zlib`` with ``max_length``) and re-wrapped
into a tiny stored PNG that Pillow unfilters -- the magic check touches the first 152 rows only.
The full image is decoded only when a magic was found and the image is within
``Limits.max_stealth_pixels``.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

from imagecrawl.metadata.containers import PNG_MAGIC, PngInfo, Problems, bounded_decompress, decode_text
from imagecrawl.metadata.types import Limits, MetadataError

logger = logging.getLogger(__name__)

ALPHA_MAGICS = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}
RGB_MAGICS = {b"stealth_rgbinfo": False, b"stealth_rgbcomp": True}
_HEADER_BITS = 15 * 8 + 32
_CHANNELS = {6: 4, 2: 3, 4: 2}  # PNG colour type -> channels (8-bit)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
    )


def _png_rows(data: bytes, info: PngInfo, rows: int) -> np.ndarray[Any, Any] | None:
    """Decode the first ``rows`` rows of an 8-bit RGB/RGBA/LA PNG (all rows when interlaced)."""
    channels = _CHANNELS[info.color_type]
    stride = 1 + info.width * channels
    if info.interlace:
        rows = info.height
        need = info.height * stride + 2 * 7 * info.height + 64
    else:
        need = rows * stride
    d = zlib.decompressobj()
    parts: list[bytes] = []
    got = 0
    for off, length in info.idat:
        if got >= need:
            break
        try:
            chunk = d.decompress(data[off : off + length], need - got)
        except zlib.error:
            break
        parts.append(chunk)
        got += len(chunk)
        while d.unconsumed_tail and got < need:
            chunk = d.decompress(d.unconsumed_tail, need - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    raw = b"".join(parts)
    if not info.interlace:
        rows = min(rows, len(raw) // stride)
        if rows <= 0:
            return None
        raw = raw[: rows * stride]
    ihdr = struct.pack(">IIBBBBB", info.width, rows, 8, info.color_type, 0, 0, info.interlace)
    png = PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 0)) + _chunk(b"IEND", b"")
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return np.asarray(im)


def _bits(arr: np.ndarray[Any, Any], alpha: bool, full_height: bool) -> np.ndarray[Any, Any]:
    """Column-major LSB sequence; with a partial image only column 0 is usable."""
    if alpha:
        plane = arr[:, :, -1] & 1
        return (plane.T.reshape(-1)) if full_height else plane[:, 0]
    rgb = arr[:, :, :3] & 1
    if full_height:
        return rgb.transpose(1, 0, 2).reshape(-1)
    return rgb[:, 0, :].reshape(-1)


def _header(seq: np.ndarray[Any, Any], magics: dict[bytes, bool]) -> tuple[bool, int] | None:
    if seq.size < _HEADER_BITS:
        return None
    magic = np.packbits(seq[:120].astype(np.uint8)).tobytes()
    if magic not in magics:
        return None
    nbits = int.from_bytes(np.packbits(seq[120:152].astype(np.uint8)).tobytes(), "big")
    return magics[magic], nbits


def _payload(seq: np.ndarray[Any, Any], nbits: int, compressed: bool, limits: Limits) -> str:
    if seq.size < _HEADER_BITS + nbits:
        raise MetadataError("truncated", "stealth payload longer than image")
    raw = np.packbits(seq[_HEADER_BITS : _HEADER_BITS + nbits].astype(np.uint8)).tobytes()
    if compressed:
        raw = bounded_decompress(raw, limits, wbits=16 + zlib.MAX_WBITS)
    return decode_text(raw, latin1_fallback=False)


def _check_len(nbits: int, pixels: int, per_pixel: int, limits: Limits) -> None:
    if nbits <= 0 or nbits % 8:
        raise MetadataError("corrupt", "bad stealth length")
    if nbits > limits.max_text_bytes * 8 * 4:
        raise MetadataError("too_large", "stealth payload too large")
    if _HEADER_BITS + nbits > pixels * per_pixel:
        raise MetadataError("corrupt", "stealth length exceeds image")


def stealth_from_png(data: bytes, info: PngInfo, limits: Limits, problems: Problems) -> str | None:
    """The stealth payload of a PNG, or None.  Never raises."""
    if info.bit_depth != 8 or info.color_type not in _CHANNELS or not info.idat:
        return None
    w, h = info.width, info.height
    if w <= 0 or h <= 0:
        return None
    has_alpha = info.color_type in (4, 6)
    has_rgb = info.color_type in (2, 6)
    probe_rows = min(h, _HEADER_BITS if has_alpha else -(-_HEADER_BITS // 3))
    if info.interlace:
        probe_rows = h
    if w * probe_rows > limits.max_stealth_pixels:
        problems.add("too_large", "image too large for stealth probe")
        return None
    try:
        arr = _png_rows(data, info, probe_rows)
        if arr is None or arr.ndim != 3:
            return None
        full = arr.shape[0] == h
        for alpha, magics, per_pixel, ok in (
            (True, ALPHA_MAGICS, 1, has_alpha),
            (False, RGB_MAGICS, 3, has_rgb),
        ):
            if not ok:
                continue
            head = _header(_bits(arr, alpha, full), magics)
            if head is None:
                continue
            compressed, nbits = head
            _check_len(nbits, w * h, per_pixel, limits)
            if not full:
                if w * h > limits.max_stealth_pixels:
                    raise MetadataError("too_large", "image too large for stealth decoding")
                needed_cols = -(-(_HEADER_BITS + nbits) // (h * per_pixel))
                if needed_cols <= 1:
                    rows = -(-(_HEADER_BITS + nbits) // per_pixel)
                    arr = _png_rows(data, info, rows)
                    if arr is None:
                        return None
                    seq = _bits(arr, alpha, False)
                else:
                    arr = _png_rows(data, info, h)
                    if arr is None or arr.shape[0] != h:
                        raise MetadataError("truncated", "image data ends early")
                    seq = _bits(arr[:, :needed_cols], alpha, True)
            else:
                seq = _bits(arr, alpha, True)
            return _payload(seq, nbits, compressed, limits)
    except MetadataError as exc:
        problems.add(exc.kind, str(exc))
    except (OSError, ValueError, SyntaxError, zlib.error, MemoryError, Image.DecompressionBombError) as exc:
        problems.add("corrupt", f"stealth decode failed: {exc}")
    return None


def stealth_from_image(
    data: bytes, width: int, height: int, limits: Limits, problems: Problems
) -> str | None:
    """Stealth payload of a non-PNG image (lossless WebP): full decode, bounded by pixel count."""
    if width <= 0 or height <= 0:
        return None
    if width * height > limits.max_stealth_pixels:
        problems.add("too_large", "image too large for stealth decoding")
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > limits.max_stealth_pixels:
                return None
            if im.mode not in ("RGBA", "RGB", "LA"):
                im.draft(None, im.size)
            im.load()
            mode = im.mode
            arr = np.asarray(im if mode in ("RGBA", "RGB", "LA") else im.convert("RGBA"))
        if arr.ndim != 3:
            return None
        has_alpha = mode in ("RGBA", "LA")
        for alpha, magics, per_pixel, ok in (
            (True, ALPHA_MAGICS, 1, has_alpha),
            (False, RGB_MAGICS, 3, arr.shape[2] >= 3),
        ):
            if not ok:
                continue
            seq = _bits(arr, alpha, True)
            head = _header(seq, magics)
            if head is None:
                continue
            compressed, nbits = head
            _check_len(nbits, arr.shape[0] * arr.shape[1], per_pixel, limits)
            return _payload(seq, nbits, compressed, limits)
    except MetadataError as exc:
        problems.add(exc.kind, str(exc))
    except (OSError, ValueError, SyntaxError, zlib.error, MemoryError, Image.DecompressionBombError) as exc:
        problems.add("corrupt", f"stealth decode failed: {exc}")
    return None
