"""``imagecrawl metadata FILE...`` (``imagecrawl.metadata.cli.main``): JSON lines, errors as data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagecrawl.metadata.cli import main
from tests.test_metadata_parsers import INFOTEXT, png_bytes
from tests.test_metadata_realworld import CORPUS, FULL

KEYS = {
    "file",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "sampler",
    "cfg_scale",
    "model",
    "width",
    "height",
    "params",
    "metadata_source",
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_synthetic_files_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "a1111.png"
    good.write_bytes(png_bytes([("tEXt", "parameters", INFOTEXT)]))
    plain = tmp_path / "plain.png"
    plain.write_bytes(png_bytes())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    code, recs = run([str(good), str(plain), str(empty), str(missing)], capsys)
    assert code == 1  # one file could not be read
    assert [r["file"] for r in recs] == [str(good), str(plain), str(empty), str(missing)]
    for rec in recs:
        assert rec.keys() >= KEYS
    assert recs[0]["seed"] == 4242424242 and recs[0]["metadata_source"] == "png:parameters"
    assert recs[0]["width"] == 832 and isinstance(recs[0]["params"], dict) and "error" not in recs[0]
    assert recs[1]["prompt"] is None and recs[1]["metadata_source"] is None and "error" not in recs[1]
    assert recs[2]["error"] == "empty"
    assert str(recs[3]["error"]).startswith("unreadable") and recs[3]["prompt"] is None


def test_corpus_files(capsys: pytest.CaptureFixture[str]) -> None:
    if CORPUS is None or not FULL:
        pytest.skip("needs the full real-world corpus")
    names = ["sd-metadata__comfyui.png", "sd-parsers__automatic1111_cropped.jpg", "sd-metadata__gimp.webp"]
    code, recs = run([str(CORPUS / n) for n in names], capsys)
    assert code == 0 and len(recs) == 3
    assert recs[0]["seed"] == 422847914351919 and recs[0]["metadata_source"] == "png:comfyui"
    assert recs[1]["prompt"] == "photo of a duck" and recs[1]["metadata_source"] == "exif:usercomment"
    assert recs[2]["metadata_source"] is None and recs[2]["prompt"] is None


def test_usage_error_returns_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    capsys.readouterr()


@pytest.mark.e2e
def test_module_entry_point(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(png_bytes([("tEXt", "parameters", INFOTEXT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "imagecrawl.metadata.cli", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 28
