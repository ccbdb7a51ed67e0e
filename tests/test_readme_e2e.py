"""The README as a new user follows it: a fresh demo into the default store ``data/`` (next to the
checkout's committed ``data/.gitignore``), then every Python snippet of README.md as written, ``imagecrawl
inspect data/``, the CLI's help, and ``imagecrawl metadata ... | head``. None may print a traceback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like a fresh checkout after `imagecrawl demo`: data/.gitignore, then the demo's shards."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / ".gitignore", root / "data" / ".gitignore")
    demo = _run(root, "-m", "imagecrawl.cli", "demo", "--items", "4")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Traceback" not in demo.stderr
    match = re.search(r"^(\d+) rows in data/ \((\d+) new\)$", demo.stdout, re.M)
    assert match and int(match[1]) == int(match[2]) > 0, demo.stdout
    return root


def test_a_second_demo_adds_nothing_and_says_so(checkout: Path) -> None:
    again = _run(checkout, "-m", "imagecrawl.cli", "demo", "--items", "4")
    assert again.returncode == 0 and "Traceback" not in again.stderr
    assert re.search(r"^\d+ rows in data/ \(0 new\)$", again.stdout, re.M), again.stdout


@pytest.mark.parametrize("index", range(len(BLOCK.findall((REPO / "README.md").read_text()))))
def test_readme_python_snippet_runs_as_written(checkout: Path, index: int) -> None:
    code = BLOCK.findall((REPO / "README.md").read_text())[index]
    proc = _run(checkout, "-c", code)
    assert proc.returncode == 0, f"{code}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_inspect_and_help(checkout: Path) -> None:
    inspect = _run(checkout, "-m", "imagecrawl.cli", "inspect", "data/")
    assert inspect.returncode == 0 and "Traceback" not in inspect.stderr, inspect.stderr[-3000:]
    assert "civitai" in inspect.stdout
    top = _run(checkout, "-m", "imagecrawl.cli", "--help")
    assert top.returncode == 0
    for command in ("demo", "inspect", "metadata", "sandbox", "seed", "spiders"):
        assert re.search(rf"^\s+{command}\s+\S", top.stdout, re.M), top.stdout
        sub = _run(checkout, "-m", "imagecrawl.cli", command, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: imagecrawl {command}"), sub.stdout


def test_metadata_into_a_closed_pipe(tmp_path: Path) -> None:
    images = sorted(str(p) for p in (REPO / "tests" / "fixtures" / "realworld" / "images").glob("*.png"))
    assert images
    files = " ".join(f"'{p}'" for p in (images * 400)[:400])  # more output than a pipe holds
    proc = subprocess.run(
        f"'{sys.executable}' -m imagecrawl.cli metadata {files} | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("{")
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
