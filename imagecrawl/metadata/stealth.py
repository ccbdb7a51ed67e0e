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
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _inflate_rows(data: bytes, info: PngInfo, rows: int, cols: int) -> bytes:
    """Filtered scanlines of the first ``rows`` rows, each cut to its filter byte + ``cols`` pixels.

    The first ``cols`` pixels of a PNG row only depend on the same columns (left neighbours and the
    row above), so the cut rows form a valid ``cols``-wide image.  The stream is inflated piecewise:
    memory stays ``O(rows * cols)`` whatever the image width.
    """
    channels = _CHANNELS[info.color_type]
    stride = 1 + info.width * channels
    keep = 1 + cols * channels
    d = zlib.decompressobj()
    out: list[bytes] = []
    buf = b""
    done = 0
    piece = max(stride, 1 << 20)
    pending = (data[off : off + length] for off, length in info.idat)
    src = b""
    while done < rows:
        if not src:
            if d.unconsumed_tail:
                src = d.unconsumed_tail
            else:
                nxt = next(pending, None)
                if nxt is None:
                    break
                src = nxt
        try:
            chunk = d.decompress(src, piece)
        except zlib.error:
            break
        src = d.unconsumed_tail
        if not chunk:
            if not src and d.eof:
                break
            continue
        buf += chunk
        n = min(len(buf) // stride, rows - done)
        if n:
            block = np.frombuffer(buf, dtype=np.uint8, count=n * stride).reshape(n, stride)
            out.append(block[:, :keep].tobytes())
            buf = buf[n * stride :]
            done += n
        if d.eof:
            break
    return b"".join(out)


def _png_rows(data: bytes, info: PngInfo, rows: int, cols: int) -> np.ndarray[Any, Any] | None:
    """Decode the top-left ``rows`` x ``cols`` pixels of an 8-bit RGB/RGBA/LA PNG."""
    if info.interlace:  # Adam7: rows are not contiguous; decode everything (caller checked the size)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im)[:rows, :cols]
    channels = _CHANNELS[info.color_type]
    raw = _inflate_rows(data, info, rows, cols)
    got = len(raw) // (1 + cols * channels)
    if got <= 0:
        return None
    ihdr = struct.pack(">IIBBBBB", cols, got, 8, info.color_type, 0, 0, 0)
    png = PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND", b"")
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


def stealth_from_png(data: bytes, info: PngInfo, limits: Limits, problems: Problems) -> tuple[str, str] | None:
    """``(payload, "alpha" | "rgb")`` of a PNG, or None.  Never raises."""
    if info.bit_depth != 8 or info.color_type not in _CHANNELS or not info.idat:
        return None
    w, h = info.width, info.height
    if w <= 0 or h <= 0:
        return None
    has_alpha = info.color_type in (4, 6)
    has_rgb = info.color_type in (2, 6)
    # rows holding the 152 header bits (alpha: 1 bit/pixel, RGB: 3 bits/pixel) of column 0
    probe_rows = min(h, _HEADER_BITS if has_alpha else -(-_HEADER_BITS // 3))
    probe_cols = 1 if probe_rows < h else min(w, -(-_HEADER_BITS // h))
    work = w * h if info.interlace else w * probe_rows  # pixels that must be inflated
    if work > limits.max_stealth_pixels:
        problems.add("too_large", "image too large for stealth probe")
        return None
    try:
        arr = _png_rows(data, info, probe_rows, probe_cols)
        if arr is None or arr.ndim != 3:
            return None
        for alpha, magics, per_pixel, ok in (
            (True, ALPHA_MAGICS, 1, has_alpha),
            (False, RGB_MAGICS, 3, has_rgb),
        ):
            if not ok:
                continue
            head = _header(_bits(arr, alpha, arr.shape[0] == h), magics)
            if head is None:
                continue
            compressed, nbits = head
            _check_len(nbits, w * h, per_pixel, limits)
            total = _HEADER_BITS + nbits
            cols = -(-total // (h * per_pixel))
            rows = h if cols > 1 else -(-total // per_pixel)
            if w * rows > limits.max_stealth_pixels:
                raise MetadataError("too_large", "image too large for stealth decoding")
            full = _png_rows(data, info, rows, cols)
            if full is None or full.shape[0] != rows:
                raise MetadataError("truncated", "image data ends early")
            text = _payload(_bits(full, alpha, cols > 1 or rows == h), nbits, compressed, limits)
            return text, "alpha" if alpha else "rgb"
    except MetadataError as exc:
        problems.add(exc.kind, str(exc))
    except (OSError, ValueError, SyntaxError, zlib.error, MemoryError, Image.DecompressionBombError) as exc:
        # a decoder failure on a file already known to be cut short is that truncation again
        problems.add("truncated" if "truncated" in problems.kinds else "corrupt", f"stealth decode failed: {exc}")
    return None


def stealth_from_image(
    data: bytes, width: int, height: int, limits: Limits, problems: Problems
) -> tuple[str, str] | None:
    """``(payload, channel)`` of a non-PNG image (lossless WebP): full decode, bounded by pixel count."""
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
            return _payload(seq, nbits, compressed, limits), "alpha" if alpha else "rgb"
    except MetadataError as exc:
        problems.add(exc.kind, str(exc))
    except (OSError, ValueError, SyntaxError, zlib.error, MemoryError, Image.DecompressionBombError) as exc:
        # a decoder failure on a file already known to be cut short is that truncation again
        problems.add("truncated" if "truncated" in problems.kinds else "corrupt", f"stealth decode failed: {exc}")
    return None
