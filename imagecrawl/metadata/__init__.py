"""Temporary minimal extractor (A1111 PNG infotext only); replaced by the full library."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass(slots=True)
class ImageMetadata:
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None
    cfg_scale: float | None = None
    model: str | None = None
    width: int | None = None
    height: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metadata_source: str | None = None
    generator: str | None = None
    image_format: str | None = None
    error: str | None = None

    def found(self) -> bool:
        return self.metadata_source is not None


def extract_metadata(data: bytes, *, filename: str | None = None, limits: Any = None) -> ImageMetadata:
    try:
        text = Image.open(io.BytesIO(data)).info.get("parameters")
    except Exception:
        return ImageMetadata(error="corrupt")
    if not isinstance(text, str):
        return ImageMetadata()
    lines = text.strip().split("\n")
    kv = dict(re.findall(r"\s*([\w ]+):\s*([^,]+)", lines[-1]))
    neg = None
    body = lines[:-1]
    for i, line in enumerate(body):
        if line.startswith("Negative prompt:"):
            neg = "\n".join([line[16:].strip(), *body[i + 1 :]])
            body = body[:i]
            break
    w, _, h = kv.get("Size", "x").partition("x")
    return ImageMetadata(
        prompt="\n".join(body),
        negative_prompt=neg,
        seed=int(kv["Seed"]) if "Seed" in kv else None,
        steps=int(kv["Steps"]) if "Steps" in kv else None,
        sampler=kv.get("Sampler"),
        cfg_scale=float(kv["CFG scale"]) if "CFG scale" in kv else None,
        model=kv.get("Model"),
        width=int(w) if w.isdigit() else None,
        height=int(h) if h.isdigit() else None,
        metadata_source="png:parameters",
        generator="a1111",
    )
