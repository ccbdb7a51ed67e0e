"""Schema v3's analytics columns, derived from what every source says in its own words. Pure.

* ``nsfw_level``: one safety scale for every source: ``none`` / ``soft`` / ``mature`` / ``x``, or
  ``unknown`` when the source does not say (docs/schema.md lists each source's mapping);
* ``created_at``: when the source says the image was made or posted (an ISO 8601 time), as UTC;
* the generation parameters most generators share, typed: ``clip_skip``, ``denoising_strength``,
  ``scheduler`` (the same values stay in ``params`` too).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final

NSFW_LEVELS: Final = ("none", "soft", "mature", "x", "unknown")

#: a source's own words for its safety level, lower-cased
_NSFW_WORDS: Final = {
    # Civitai's image levels (`nsfwLevel` of /api/v1/images) and the film ratings they follow
    "none": "none",
    "pg": "none",
    "safe": "none",
    "sfw": "none",
    "soft": "soft",
    "pg-13": "soft",
    "pg13": "soft",
    "mature": "mature",
    "r": "mature",
    "x": "x",
    "xxx": "x",
    # a plain yes/no flag (Lexica's `nsfw`): not safe, degree not said
    "false": "none",
    "true": "mature",
}


def nsfw_level(raw: Any) -> str:
    """The normalised level of a source's safety value: a word (``None``, ``Soft``, ``Mature``, ``X``,
    ``true``/``false``), or Civitai's ``nsfwLevel`` bit mask (1 PG, 2 PG-13, 4 R, 8 X, 16 XXX: the
    highest bit set); ``unknown`` for anything else, missing included."""
    if raw is None or isinstance(raw, bool):
        return "unknown" if raw is None else ("mature" if raw else "none")
    text = str(raw).strip().lower()
    if text.isdigit():
        mask = int(text)
        if mask <= 0 or mask >= 1 << 16:
            return "unknown"
        top = mask.bit_length() - 1  # the highest level the image carries
        return ("none", "soft", "mature", "x", "x")[min(top, 4)]
    return _NSFW_WORDS.get(text, "unknown")


def created_at(raw: Any) -> datetime | None:
    """An ISO 8601 time (``2024-03-01T12:00:00.000Z``, with or without an offset; naive means UTC) as an
    aware UTC datetime; None for anything else or a year outside 1970..9999."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value if 1970 <= value.year <= 9999 else None


#: the typed shared parameters and the names generators give them in ``params``
SHARED_PARAMS: Final = {
    "clip_skip": ("Clip skip", "clipSkip", "clip_skip", "CLIP skip", "clip skip"),
    "denoising_strength": ("Denoising strength", "denoise", "denoising_strength", "denoisingStrength"),
    "scheduler": ("Schedule type", "scheduler", "Scheduler", "schedule_type"),
}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 1000 else None
    if isinstance(value, float) and value.is_integer():
        return _int(int(value))
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return _int(int(value.strip()))
    return None


def _strength(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def _word(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= 100:
        return value.strip()
    return None


def shared_params(params: dict[str, Any]) -> dict[str, Any]:
    """``clip_skip`` (0..1000), ``denoising_strength`` (0..1) and ``scheduler`` from ``params`` under any
    of their usual names; a value that does not fit is left out (it stays in ``params``)."""
    convert = {"clip_skip": _int, "denoising_strength": _strength, "scheduler": _word}
    out: dict[str, Any] = {}
    for column, names in SHARED_PARAMS.items():
        for name in names:
            if name in params:
                value = convert[column](params[name])
                if value is not None:
                    out[column] = value
                    break
    return out
