"""Helpers for the page-object tests: compare parser output with reviewed ``*.expected.json`` files.

Set ``IMAGECRAWL_REGEN_FIXTURES=1`` to (re)write the expected files, then review the diff by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imagecrawl.pages import ImageEntry, ParsedPage

FIXTURES = Path(__file__).parent / "fixtures" / "pages"


def entry_dict(entry: ImageEntry) -> dict[str, Any]:
    return {"url": entry.url, "hints": entry.hints.to_meta()}


def page_dict(page: ParsedPage) -> dict[str, Any]:
    return {
        "entries": [entry_dict(e) for e in page.entries],
        "next_cursor": page.next_cursor,
        "next_page": page.next_page,
        "errors": page.errors,
    }


def assert_expected(actual: Any, expected_path: Path) -> None:
    actual = json.loads(json.dumps(actual))  # tuples → lists, as in the file
    if os.environ.get("IMAGECRAWL_REGEN_FIXTURES") == "1":
        expected_path.write_text(json.dumps(actual, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    expected = json.loads(expected_path.read_text())
    assert actual == expected
