"""What a crawl of the sandbox must produce, computed from the sandbox's own catalog."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.sandbox.catalog import Catalog, Entry, render_image

NSFW_ORDER = ("None", "Soft", "Mature", "X")


@dataclass
class Expected:
    """Entries the crawl may land, grouped: exactly one row per group must land. A group is an original
    with its exact copies (same bytes under another URL) and, with near-duplicate dedupe on, its
    re-encoded/resized copies."""

    groups: dict[str, list[Entry]]  # root entry id -> entries of the group
    by_id: dict[str, Entry]
    sha_to_group: dict[str, str]

    @property
    def rows(self) -> int:
        return len(self.groups)


def expected_rows(
    catalog: Catalog, entries: Iterable[Entry], record_id: Callable[[Entry], str], *, near: bool = True
) -> Expected:
    entries = list(entries)
    parent = {e.id: e.id for e in entries}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            parent[find(a)] = find(b)

    sha_of = {e.id: hashlib.sha256(render_image(catalog, e)).hexdigest() for e in entries}
    first_with_sha: dict[str, str] = {}
    for entry in entries:
        # identical bytes are one group, whatever the catalog says (two copies made alike are identical)
        union(entry.id, first_with_sha.setdefault(sha_of[entry.id], entry.id))
        if entry.same_bytes_as:
            union(entry.id, entry.same_bytes_as)
        if near and entry.copy_of:
            union(entry.id, entry.copy_of)
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[find(entry.id)].append(entry)
    by_id = {record_id(e): e for e in entries}
    sha_to_group = {sha_of[e.id]: find(e.id) for e in entries}
    return Expected(dict(groups), by_id, sha_to_group)


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
    seen_groups = set()
    for row in rows:
        key = expected.sha_to_group.get(row["image_sha256"])
        assert key is not None, f"row {row['id']} has bytes the sandbox never served"
        assert key not in seen_groups, f"two rows of one duplicate group {key}"
        seen_groups.add(key)
        group = expected.groups[key]
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
