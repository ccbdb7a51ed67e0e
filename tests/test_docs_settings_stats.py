"""docs/settings.md and docs/stats.md list every setting the code reads and every stat it sets (found
by parsing imagecrawl/ and spiders/, see tests/codescan.py), and nothing the code no longer has;
docs/schema.md lists every column of the Arrow schema."""

from __future__ import annotations

import re
from pathlib import Path

from imagecrawl.schema import SCHEMA

from .codescan import REPO, canonical, scan

DOCS = REPO / "docs"
ROW = re.compile(r"^\|(.+)\|\s*$", re.M)


def table_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in m.group(1).split("|")] for m in ROW.finditer(path.read_text())]


def documented(path: Path, pattern: str) -> dict[str, list[str]]:
    """First-cell names (in backticks) of the doc's table rows -> the row's cells."""
    out: dict[str, list[str]] = {}
    for cells in table_rows(path):
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if re.fullmatch(pattern, name):
                out[name] = cells
    return out


def test_every_setting_is_documented_with_type_default_and_meaning() -> None:
    found = scan()
    docs = documented(DOCS / "settings.md", r"[A-Z][A-Z0-9_]+")
    missing = {name: sorted(where) for name, where in found.settings.items() if name not in docs}
    assert not missing, f"settings read by the code but not in docs/settings.md: {missing}"
    for name, cells in docs.items():
        assert len(cells) >= 4 and all(cells[:4]), f"{name}: needs type, default and meaning"
    stale = sorted(n for n in docs if n.startswith("IMAGECRAWL_") and n not in found.settings)
    assert not stale, f"docs/settings.md lists settings the code no longer reads: {stale}"


def test_every_stat_is_documented() -> None:
    found = scan()
    docs = {canonical(k): cells for k, cells in documented(DOCS / "stats.md", r"imagecrawl/[^\s]+").items()}
    missing = {key: sorted(where) for key, where in found.stats.items() if key not in docs}
    assert not missing, f"stats set by the code but not in docs/stats.md (dynamic parts as <reason>): {missing}"
    for key, cells in docs.items():
        assert len(cells) >= 3 and all(cells[:3]), f"{key}: needs kind and meaning"
    stale = sorted(k for k in docs if k not in found.stats)
    assert not stale, f"docs/stats.md lists stats the code no longer sets: {stale}"


def test_the_scanner_sees_what_it_should() -> None:
    """The completeness tests are only as good as the scanner: known reads and stats must be found."""
    found = scan()
    for name in ("IMAGECRAWL_STORE", "IMAGECRAWL_WORKER_ID", "IMAGECRAWL_PROGRESS_INTERVAL_SECONDS", "JOBDIR"):
        assert name in found.settings, name
    assert "AWS_ENDPOINT_URL" in found.settings  # settings.get("...") through a parameter named settings
    for key in ("imagecrawl/dedupe/dropped/<*>", "imagecrawl/store/rows_committed", "imagecrawl/pages/urls/rows"):
        assert key in found.stats, key
    # an f-string stat and its documented <reason> form meet in the same canonical key
    assert canonical("imagecrawl/validate/dropped/<reason>") in found.stats


def test_schema_doc_lists_every_column() -> None:
    rows = table_rows(DOCS / "schema.md")
    names = {n for cells in rows for n in re.findall(r"`([a-z_0-9]+)`", cells[0])}
    assert set(SCHEMA.names) <= names, sorted(set(SCHEMA.names) - names)
    assert names - {"column"} <= set(SCHEMA.names), sorted(names - set(SCHEMA.names))
