"""The examples in docs/downstream.md (the README's "Analyse the data") run against crawled stores,
local and S3, and every reader computes the same answers as a direct read of the shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from .conftest import REPO, MotoS3
from .docs_runner import blocks
from .stores_util import local_store, s3_store

DOC = REPO / "docs" / "downstream.md"


def truth(store: Path) -> dict[str, list[list[Any]]]:
    """The answers, computed from the shard files with pyarrow.parquet and plain Python."""
    models: Counter[str] = Counter()
    lengths: Counter[int] = Counter()
    days: Counter[str] = Counter()
    for path in store.glob("*/date=*/*.parquet"):
        table = pq.read_table(path, columns=["model", "prompt"])
        models.update(m for m in table["model"].to_pylist() if m is not None)
        lengths.update(len(p) // 50 * 50 for p in table["prompt"].to_pylist() if p is not None)
        days[path.parent.name.removeprefix("date=")] += table.num_rows
    return {
        "top_models": [[k, n] for k, n in sorted(models.items(), key=lambda r: (-r[1], r[0]))[:5]],
        "prompt_lengths": [[str(k), n] for k, n in sorted(lengths.items())],
        "per_day": [[k, n] for k, n in sorted(days.items())],
    }


def test_every_block_sets_a_store() -> None:
    found = blocks(DOC.read_text())
    assert len(found) >= 9
    for heading, code in found:
        assert 'STORE = "data"' in code or 'STORE = "s3://my-bucket/datasets"' in code, heading


def test_downstream_examples_agree(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any, moto_s3: MotoS3
) -> None:
    local = local_store(tmp_path_factory, sandbox_site)
    s3 = s3_store(tmp_path_factory, sandbox_site, moto_s3)
    env = {
        **os.environ,
        **s3.env,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.docs_runner", str(DOC), local.store, s3.store],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = truth(Path(local.store))
    assert expected["top_models"] and len(expected["prompt_lengths"]) > 1 and expected["per_day"]
    headings = [r["heading"] for r in results]
    assert headings == [h for h, _ in blocks(DOC.read_text())]
    checked = Counter()
    for result in results:
        for name in ("top_models", "prompt_lengths", "per_day"):
            if name in result:
                # the S3 store holds the same crawl of the same sandbox, so the answers are the same
                assert result[name] == expected[name], (result["heading"], name)
                checked[name] += 1
        if "first" in result:
            assert result["first"][0] > 0 and result["first"][1] > 0
    # pandas, pyarrow.parquet, DuckDB, pyarrow.dataset, Polars and datasets locally; pandas, DuckDB,
    # pyarrow and Polars on S3
    assert checked == {"top_models": 9, "prompt_lengths": 5, "per_day": 9}
    assert sum("first" in r for r in results) == 1
    assert sum(r["s3"] for r in results) == 4
