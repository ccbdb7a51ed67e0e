"""Read text-to-image prompts and generation parameters out of AI image files.

Pure library (stdlib + Pillow + numpy, no Scrapy)::

    from imagecrawl.metadata import extract_metadata
    meta = extract_metadata(open("x.png", "rb").read())
    if meta.found():
        print(meta.prompt, meta.seed, meta.metadata_source)

See ``docs/metadata.md`` for the supported formats and the precedence rules.
"""

from __future__ import annotations

from imagecrawl.metadata.extract import extract_metadata
from imagecrawl.metadata.types import ERROR_KINDS, ImageMetadata, Limits, MetadataError

__all__ = ["ERROR_KINDS", "ImageMetadata", "Limits", "MetadataError", "extract_metadata"]
