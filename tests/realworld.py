"""Where the real-world image corpus is: ``IMAGECRAWL_REALWORLD_DIR``, else ``../shared/realworld``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_FULL = Path(os.environ.get("IMAGECRAWL_REALWORLD_DIR") or REPO.parent / "shared" / "realworld")
#: the full corpus when present, else the small files kept in tests/fixtures/realworld
REALWORLD = _FULL if (_FULL / "images" / "MANIFEST.json").is_file() else REPO / "tests" / "fixtures" / "realworld"


def manifest() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((REALWORLD / "images" / "MANIFEST.json").read_text())
    return data
