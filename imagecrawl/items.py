"""The dataset record, as a Scrapy item (a dataclass read through itemadapter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True, kw_only=True)
class PromptImage:
    """One prompt/image pair. Field names and order follow :data:`imagecrawl.schema.SCHEMA` (checked by
    tests/test_schema_versions.py); keyword-only, so required fields need not come first."""

    id: str
    source: str
    source_id: str | None = None
    page_url: str | None = None
    image_url: str
    prompt: str | None = None
    negative_prompt: str | None = None
    model: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    width: int | None = None
    height: int | None = None
    params: str | None = None
    metadata_source: str | None = None
    image_sha256: str
    image_phash: int | None = None
    image_format: str | None = None
    image_size_bytes: int | None = None
    author_hash: str | None = None
    nsfw: str | None = None
    license: str | None = None
    duplicate_of: str | None = None
    crawled_at: datetime
    digital_source_type: str | None = None
    data_mining: str | None = None
    c2pa_claim_generator: str | None = None
    c2pa_actions: str | None = None
    c2pa_validation: str | None = None
    nsfw_level: str | None = None
    created_at: datetime | None = None
    clip_skip: int | None = None
    denoising_strength: float | None = None
    scheduler: str | None = None
    image: dict[str, Any] | None = field(default=None, repr=False)
