"""Where the real-world image corpus is: ``IMAGECRAWL_REALWORLD_DIR``, else ``../shared/realworld``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REALWORLD = Path(os.environ.get("IMAGECRAWL_REALWORLD_DIR") or REPO.parent / "shared" / "realworld")


def manifest() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((REALWORLD / "images" / "MANIFEST.json").read_text())
    return data
