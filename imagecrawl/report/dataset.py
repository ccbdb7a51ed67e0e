"""What a crawl's items hold, tallied as they are scraped, for the report's dataset section. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

#: image sizes by megapixels: (upper bound, label)
SIZE_BUCKETS = ((0.26, "< 0.25 MP"), (0.6, "0.25-0.6 MP"), (1.1, "0.6-1 MP"), (2.2, "1-2 MP"), (4.5, "2-4 MP"))
#: the label of images bigger than the last bucket, and of rows without a usable size
SIZE_OVER, SIZE_UNKNOWN = "> 4 MP", "unknown"
#: prompt lengths in characters: (upper bound, label); longer ones are PROMPT_OVER
PROMPT_BUCKETS = ((50, "1-49"), (100, "50-99"), (200, "100-199"), (400, "200-399"), (800, "400-799"))
PROMPT_OVER = "800+"
TOP = 10


def size_order() -> list[str]:
    """The size buckets smallest first (the histogram's axis)."""
    return [label for _, label in SIZE_BUCKETS] + [SIZE_OVER, SIZE_UNKNOWN]


def prompt_order() -> list[str]:
    """The prompt-length buckets shortest first."""
    return [label for _, label in PROMPT_BUCKETS] + [PROMPT_OVER]


class DatasetTally:
    def __init__(self) -> None:
        self.items = 0
        self.with_prompt = 0
        self.with_negative = 0
        self.with_seed = 0
        self.sources: Counter[str] = Counter()
        self.metadata_sources: Counter[str] = Counter()
        self.formats: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.sizes: Counter[str] = Counter()
        self.prompt_lengths: Counter[str] = Counter()

    def add(self, row: Mapping[str, Any]) -> None:
        self.items += 1
        prompt = row.get("prompt")
        self.with_prompt += bool(prompt)
        if prompt:
            n = len(str(prompt))
            self.prompt_lengths[next((label for bound, label in PROMPT_BUCKETS if n < bound), PROMPT_OVER)] += 1
        self.with_negative += bool(row.get("negative_prompt"))
        self.with_seed += row.get("seed") is not None
        self.sources[str(row.get("source") or "?")] += 1
        self.metadata_sources[str(row.get("metadata_source") or "none")] += 1
        self.formats[str(row.get("image_format") or "?")] += 1
        if row.get("model"):
            self.models[str(row["model"])[:80]] += 1
        width, height = row.get("width"), row.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            mp = width * height / 1e6
            self.sizes[next((label for bound, label in SIZE_BUCKETS if mp < bound), SIZE_OVER)] += 1
        else:
            self.sizes[SIZE_UNKNOWN] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "with_prompt": self.with_prompt,
            "with_negative_prompt": self.with_negative,
            "with_seed": self.with_seed,
            "sources": dict(self.sources.most_common()),
            "metadata_sources": dict(self.metadata_sources.most_common()),
            "formats": dict(self.formats.most_common()),
            "top_models": dict(self.models.most_common(TOP)),
            "sizes": dict(self.sizes.most_common()),
            "prompt_lengths": {
                label: self.prompt_lengths[label] for label in prompt_order() if label in self.prompt_lengths
            },
        }
