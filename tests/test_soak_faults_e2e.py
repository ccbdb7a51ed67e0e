"""A tiny run of benchmarks/soak_faults.py: SIGKILLed workers, S3 outages, a full outbox and two processes on
one S3 store, then the audit (every item once, no duplicate id or image)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.e2e


def test_a_short_faults_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.soak_faults", "--items", "60", "--workers", "2", "--seconds", "20"]
    done = subprocess.run([*cmd, "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "AUDIT PASSED" in done.stdout
    figures = re.search(r"starts (\d+), kills (\d+), S3 outages (\d+)", done.stdout)
    assert figures is not None, done.stdout
    starts, kills, outages = map(int, figures.groups())
    assert kills >= 2 and outages >= 1 and starts > kills, done.stdout  # the faults did happen
    assert "missing 0, duplicate ids 0, duplicate images 0" in done.stdout
