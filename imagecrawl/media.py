"""Safe image probing and hashing. Pure: no Scrapy imports.

Images come from strangers. Every probe is bounded: the header is read before any pixel, images with
more than ``max_pixels`` are refused before decoding (decompression bombs), and the perceptual hash is
taken from a reduced image decoded within a memory budget (JPEG ``draft`` mode decodes at 1/8 scale, big
PNGs are decoded in strips, see :mod:`imagecrawl.hashdecode`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from imagecrawl.hashdecode import OverBudget, reduced_grey

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: Final = 64_000_000
MIN_PHASH_SIDE: Final = 16

_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


class MediaError(Exception):
    """A downloaded body that is not a usable image. ``kind`` is a short, stable stats key."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def sniff_format(data: bytes) -> str | None:
    """The image format from magic bytes, ignoring names and Content-Type."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    return None


@dataclass(frozen=True, slots=True)
class ImageFacts:
    format: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    phash: int | None


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0, :] = np.sqrt(1.0 / n)
    return m


_DCT32: Final = _dct_matrix(32)


def phash_of(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (the classic pHash: 32x32 grey, low 8x8 DCT block vs its median)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    grey = img.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    dct = _DCT32 @ pixels @ _DCT32.T
    low = dct[:8, :8].flatten()
    ordered = np.sort(low)
    bits = low > (ordered[31] + ordered[32]) / 2  # the median of the 64, as np.median takes it
    # the 64 bits, first one highest: packed by numpy, not a Python loop
    return to_signed64(int.from_bytes(np.packbits(bits).tobytes(), "big"))


def to_signed64(value: int) -> int:
    """Store an unsigned 64-bit hash in a signed int64 column (two's complement)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, want_phash: bool = True) -> ImageFacts:
    """Format, pixel size, sha256 and perceptual hash of ``data``; raises :class:`MediaError`."""
    if not data:
        raise MediaError("empty", "empty body")
    fmt = sniff_format(data)
    if fmt is None:
        raise MediaError("not_an_image", "body is not a known image format")
    sha256 = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
        except Image.DecompressionBombError as exc:
            raise MediaError("too_many_pixels", str(exc)) from exc
        except Exception as exc:
            raise MediaError("unreadable", f"cannot read image header: {exc}") from exc
        if width <= 0 or height <= 0:
            raise MediaError("unreadable", "image has no pixels")
        if width * height > max_pixels:
            raise MediaError("too_many_pixels", f"{width}x{height} exceeds {max_pixels} pixels")
        phash: int | None = None
        # Below 16 px a perceptual hash says nothing (every 1x1 image hashes to 0).
        if want_phash and min(width, height) >= MIN_PHASH_SIDE:
            try:
                if fmt == "JPEG":
                    img.draft("RGB", (64, 64))  # decoded at 1/8 scale by the JPEG's own DCT
                img.seek(0)
                reduced = reduced_grey(img, data)  # big images: decoded in strips, within a budget
                phash = phash_of(reduced if reduced is not None else img)
            except OverBudget as exc:
                logger.info("No perceptual hash for this image: %s", exc)
            except Exception as exc:
                raise MediaError("truncated", f"cannot decode image: {exc}") from exc
    return ImageFacts(fmt, width, height, len(data), sha256, phash)
