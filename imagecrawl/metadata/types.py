"""Public data types of the metadata extractor: :class:`ImageMetadata`, :class:`Limits`, errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ERROR_KINDS",
    "ImageMetadata",
    "Limits",
    "MetadataError",
]

#: The fixed vocabulary of ``ImageMetadata.error``.
ERROR_KINDS: Final = frozenset(
    {
        "empty",  # zero bytes
        "truncated",  # the container ends before its structure says it should
        "unsupported_format",  # magic bytes of no supported image format
        "too_large",  # the input, a text chunk or a decompressed payload exceeded a Limits bound
        "corrupt",  # structurally invalid container (bad lengths, offsets, ...) or internal failure
        "bad_text",  # a metadata payload was found but could not be decoded/parsed
    }
)


class MetadataError(Exception):
    """Raised internally by the parsers; never escapes :func:`extract_metadata`.

    ``kind`` is one of :data:`ERROR_KINDS`.
    """

    def __init__(self, kind: str, message: str = "") -> None:
        if kind not in ERROR_KINDS:
            kind = "corrupt"
        super().__init__(message or kind)
        self.kind = kind


@dataclass(slots=True, frozen=True)
class Limits:
    """Resource bounds applied while extracting metadata from untrusted bytes."""

    #: inputs larger than this are rejected with ``error="too_large"``
    max_input_bytes: int = 256 * 1024 * 1024
    #: a single text chunk / EXIF value / XMP packet larger than this is skipped (counted as too_large)
    max_text_bytes: int = 1024 * 1024
    #: maximum output of one zlib/gzip decompression (zTXt, compressed iTXt, stealth_pngcomp)
    max_decompressed_bytes: int = 4 * 1024 * 1024
    #: the total of every text kept from one file (tEXt as stored, zTXt/iTXt as inflated): a file of
    #: many small compressed chunks cannot add up to more than this; later text chunks are skipped
    max_text_total_bytes: int = 8 * 1024 * 1024
    #: stealth decoding is skipped when it would need to decode more pixels than this
    max_stealth_pixels: int = 16 * 1024 * 1024
    #: at most this many PNG chunks / JPEG segments / WebP chunks are walked
    max_chunks: int = 10_000
    #: maximum nesting when following links in a ComfyUI graph (capped at 250)
    max_graph_depth: int = 64


@dataclass(slots=True)
class ImageMetadata:
    """Prompt and generation parameters read from one image file."""

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None
    cfg_scale: float | None = None
    model: str | None = None
    #: generation size declared in the metadata (not the pixel size)
    width: int | None = None
    height: int | None = None
    #: every other parsed parameter (JSON-serialisable)
    params: dict[str, Any] = field(default_factory=dict)
    #: where the values came from, e.g. ``png:parameters``, ``exif:usercomment``, ``stealth-alpha``
    metadata_source: str | None = None
    #: the program that wrote the metadata, e.g. ``a1111``, ``comfyui``, ``novelai``
    generator: str | None = None
    #: format sniffed from the magic bytes: ``PNG``, ``JPEG``, ``WEBP``, ``GIF``, ...
    image_format: str | None = None
    #: typed error kind (see :data:`ERROR_KINDS`) or None
    error: str | None = None

    def found(self) -> bool:
        """True when any generation metadata was found."""
        return self.metadata_source is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, dict) else value
        return out
