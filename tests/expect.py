"""What a crawl of the sandbox must produce, computed from the sandbox's own catalog."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from imagecrawl.sandbox.catalog import Catalog, Entry, render_image

NSFW_ORDER = ("None", "Soft", "Mature", "X")


@dataclass
class Expected:
    """Entries the crawl may land, grouped by identical bytes: exactly one row per group must land."""

    groups: dict[str, list[Entry]]  # sha256 -> entries serving those bytes
    by_id: dict[str, Entry]

    @property
    def rows(self) -> int:
        return len(self.groups)


def expected_rows(catalog: Catalog, entries: Iterable[Entry], record_id: Callable[[Entry], str]) -> Expected:
    groups: dict[str, list[Entry]] = defaultdict(list)
    by_id = {}
    for entry in entries:
        groups[hashlib.sha256(render_image(catalog, entry)).hexdigest()].append(entry)
        by_id[record_id(entry)] = entry
    return Expected(dict(groups), by_id)


FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "cfg_scale", "model")


def check_rows(
    catalog: Catalog,
    expected: Expected,
    rows: list[dict[str, Any]],
    record_id: Callable[[Entry], str],
    *,
    origin: str,
    shown: Iterable[str] = FIELDS,
    fixed: dict[str, Any] | None = None,
) -> None:
    """Every row matches its catalog entry exactly, and exactly one row per identical-bytes group.

    ``shown``: the fields the source itself shows (API/HTML) for entries with ``show_meta``; ``fixed``:
    values the source shows instead of the generation's own (Lexica names its own model). Fields the
    source does not show come from the file when it embeds metadata, else are null."""
    shown = set(shown)
    fixed = fixed or {}
    assert len(rows) == expected.rows, (len(rows), expected.rows)
    seen_sha = set()
    for row in rows:
        assert row["image_sha256"] not in seen_sha, f"duplicate image {row['image_sha256']}"
        seen_sha.add(row["image_sha256"])
        group = expected.groups.get(row["image_sha256"])
        assert group is not None, f"row {row['id']} has bytes the sandbox never served"
        entry = next((e for e in group if record_id(e) == row["id"]), None)
        assert entry is not None, f"row {row['id']} is not one of {[record_id(e) for e in group]}"
        data = render_image(catalog, entry)
        assert row["image"]["bytes"] == data
        assert row["image_size_bytes"] == len(data)
        assert row["image_format"] == entry.image_format
        assert (row["width"], row["height"]) == (entry.width, entry.height)
        if entry.show_meta:
            assert row["metadata_source"] == origin, row["id"]
        elif entry.embed_metadata:
            assert row["metadata_source"] not in (None, "api", "html", "input"), row["id"]
        else:
            assert row["metadata_source"] is None, row["id"]
        for name in FIELDS:
            if entry.show_meta and name in shown:
                want = fixed.get(name, getattr(entry, name))
            elif entry.embed_metadata:
                want = getattr(entry, name)
            else:
                want = None
            if isinstance(want, str):
                want = want.strip() or None
            got = row[name]
            if name == "cfg_scale" and want is not None and got is not None:
                assert abs(got - want) < 1e-6, (row["id"], name, got, want)
            else:
                assert got == want, (row["id"], name, got, want)
