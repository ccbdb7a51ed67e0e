"""Bytes the fake sites serve besides the catalog's images: noise PNGs, damaged PNGs and
decompression bombs. Pure and cached; no server."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from functools import lru_cache
from typing import Final

import numpy as np
from PIL import Image

MIB: Final = 1024 * 1024
GZIP_BOMB_BYTES: Final = 64 * MIB
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


@lru_cache(maxsize=256)
def optout_png(key: str) -> bytes:
    """A unique 64x64 noise PNG per key (about 12 KB: enough body to stream in chunks)."""
    seed = zlib.crc32(key.encode())
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_chunk(base: bytes, kind: bytes, data: bytes) -> bytes:
    """Insert a chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return base[:33] + _chunk(kind, data) + base[33:]


@lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A valid-looking 100000x100000 greyscale PNG of a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_001 * 2, 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """A gzip stream that inflates to :data:`GZIP_BOMB_BYTES` zero bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        block = b"\x00" * MIB
        for _ in range(GZIP_BOMB_BYTES // MIB):
            gz.write(block)
    return buf.getvalue()


@lru_cache(maxsize=1)
def text_chunk_png() -> bytes:
    """A valid image carrying a 512 KiB ``parameters`` tEXt chunk of binary garbage."""
    garbage = bytes((i * 7919 + 13) % 255 + 1 for i in range(512 * 1024))  # no NUL
    return png_with_chunk(optout_png("/hostile/img/text-chunk.png"), b"tEXt", b"parameters\x00" + garbage)


def bad_crc_png() -> bytes:
    """A noise PNG whose IHDR checksum is wrong."""
    data = bytearray(optout_png("/hostile/img/bad-crc.png"))
    data[29:33] = b"\xde\xad\xbe\xef"  # IHDR's CRC
    return bytes(data)
