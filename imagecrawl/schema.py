"""The Arrow schema of the dataset (v3): column names and types are a contract.

Versions are additive: v2 added the nullable provenance columns (``digital_source_type``,
``data_mining``, ``c2pa_claim_generator``, ``c2pa_actions``, ``c2pa_validation``); v3 the analytics
columns (``nsfw_level``, ``created_at``, ``clip_skip``, ``denoising_strength``, ``scheduler``:
:mod:`imagecrawl.normalise`). A v1 or v2 shard reads with the newer columns null (:data:`SCHEMA` is
the reading schema too).

Pure module: no Scrapy imports.
"""

from __future__ import annotations

import json
from typing import Any, Final

import pyarrow as pa

SCHEMA_VERSION: Final = "3"
#: The columns each version added (a reader of version N knows these).
ADDED_IN: Final = {
    "2": ("digital_source_type", "data_mining", "c2pa_claim_generator", "c2pa_actions", "c2pa_validation"),
    "3": ("nsfw_level", "created_at", "clip_skip", "denoising_strength", "scheduler"),
}
SCHEMA_VERSION_KEY: Final = b"imagecrawl.schema_version"

#: Column order matters: ``image`` stays last so analytics that skip it stay fast.
SCHEMA: Final = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("image_url", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("negative_prompt", pa.string()),
        pa.field("model", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("steps", pa.int32()),
        pa.field("cfg_scale", pa.float32()),
        pa.field("sampler", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("params", pa.string()),
        pa.field("metadata_source", pa.string()),
        pa.field("image_sha256", pa.string(), nullable=False),
        pa.field("image_phash", pa.int64()),
        pa.field("image_format", pa.string()),
        pa.field("image_size_bytes", pa.int64()),
        pa.field("author_hash", pa.string()),
        pa.field("nsfw", pa.string()),
        pa.field("license", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("crawled_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # v2: provenance, from the file's XMP (IPTC / PLUS) and C2PA manifest
        pa.field("digital_source_type", pa.string()),
        pa.field("data_mining", pa.string()),
        pa.field("c2pa_claim_generator", pa.string()),
        pa.field("c2pa_actions", pa.string()),
        pa.field("c2pa_validation", pa.string()),
        # v3: analytics (imagecrawl.normalise): one safety scale, the source's own time, shared parameters
        pa.field("nsfw_level", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("clip_skip", pa.int32()),
        pa.field("denoising_strength", pa.float32()),
        pa.field("scheduler", pa.string()),
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
    ]
)

COLUMNS: Final = tuple(SCHEMA.names)


def _hf_features() -> dict[str, Any]:
    """The ``datasets`` feature description, so ``image`` loads as an ``Image`` feature."""
    features: dict[str, Any] = {}
    for field in SCHEMA:
        if field.name == "image":
            features["image"] = {"_type": "Image"}
            continue
        dtype = {
            pa.string(): "string",
            pa.int64(): "int64",
            pa.int32(): "int32",
            pa.float32(): "float32",
        }.get(field.type)
        if dtype is None and pa.types.is_timestamp(field.type):
            dtype = "timestamp[us, tz=UTC]"
        features[field.name] = {"dtype": dtype, "_type": "Value"}
    return {"info": {"features": features}}


def schema_with_metadata() -> pa.Schema:
    """SCHEMA plus the file-level metadata every shard carries."""
    return SCHEMA.with_metadata(
        {
            SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode(),
            b"huggingface": json.dumps(_hf_features()).encode(),
        }
    )
