"""Each crawl-wide resource has one owner that closes it: a crawl with any component turned off (or all
of them) ends with no project thread alive and no file of its store held open, and the report still
finds the store open at ``spider_closed``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.state import state_dir_for
from tests.conftest import LOOPBACK, REPO
from tests.crawlers import merge_settings

pytestmark = pytest.mark.e2e

#: one crawl per component turned off, one with all of them on, one with all off
CONFIGS: dict[str, dict[str, str]] = {
    "all_on": {},
    "parquet_off": {"IMAGECRAWL_PARQUET_ENABLED": "False"},
    "dedupe_off": {"IMAGECRAWL_DEDUPE_ENABLED": "False"},
    "near_off": {"IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False"},
    "known_off": {"IMAGECRAWL_SKIP_KNOWN_IMAGES": "False"},
    "incremental_off": {"IMAGECRAWL_INCREMENTAL_ENABLED": "False"},
    "report_off": {"IMAGECRAWL_REPORT_ENABLED": "False"},
    "progress_off": {"IMAGECRAWL_TUNING": {"progress_enabled": "False"}},
    "media_inline": {"IMAGECRAWL_MEDIA_THREADS": "0"},
    "all_off": {
        "IMAGECRAWL_PARQUET_ENABLED": "False",
        "IMAGECRAWL_DEDUPE_ENABLED": "False",
        "IMAGECRAWL_SKIP_KNOWN_IMAGES": "False",
        "IMAGECRAWL_INCREMENTAL_ENABLED": "False",
        "IMAGECRAWL_REPORT_ENABLED": "False",
        "IMAGECRAWL_TUNING": {"progress_enabled": "False"},
    },
}


def test_turning_a_component_off_leaks_nothing(tmp_path: Path, sandbox_site: Any) -> None:
    api = sandbox_site.base_url.rstrip("/")
    specs = []
    for name, off in CONFIGS.items():
        specs.append(
            {
                "spider": "civitai",
                "args": {"api_url": api, "limit": 5, "max_items": 8},
                "settings": merge_settings(LOOPBACK, {"IMAGECRAWL_STORE": str(tmp_path / name / "store")}, off),
                "out": str(tmp_path / name / "out"),
            }
        )
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "resources.json"
    spec_path.write_text(json.dumps(specs))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.resources_runner", str(spec_path), str(result_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-6000:]
    result = json.loads(result_path.read_text())
    assert result["threads"] == []
    for name in CONFIGS:
        out = tmp_path / name / "out"
        assert not (out / "error.txt").exists(), (out / "error.txt").read_text()
        assert result["files"][str(out)] == [], name
        stats = json.loads((out / "stats.json").read_text())
        assert stats["item_scraped_count"] >= 1, name
        store = tmp_path / name / "store"
        # the checks above are not vacuous: these crawls did open the ledger (and wrote rows)
        assert (state_dir_for(str(store), "") / "ledger.sqlite3").exists() == (name != "all_off"), name
        if CONFIGS[name].get("IMAGECRAWL_PARQUET_ENABLED") != "False":
            assert stats["imagecrawl/store/rows_committed"] >= 1, name
        if CONFIGS[name].get("IMAGECRAWL_REPORT_ENABLED") != "False":
            # written at spider_closed, after the pipelines closed: the store was still open
            assert stats.get("imagecrawl/report/written") == 1, name
            assert list(store.rglob("*.html")), name
