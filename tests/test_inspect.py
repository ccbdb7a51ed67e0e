"""``imagecrawl inspect`` on a crawled local store and a crawled S3 store (moto), as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from imagecrawl.schema import SCHEMA_VERSION

from .conftest import REPO, MotoS3
from .stores_util import local_store, s3_store

pytestmark = pytest.mark.e2e


def inspect(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagecrawl.cli", "inspect", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _truth(store: Path) -> dict[str, Any]:
    """What the store holds, computed by reading every shard in full."""
    rows: dict[tuple[str, str], int] = {}
    ids: list[str] = []
    shards = sorted(p for p in store.rglob("*.parquet") if not p.relative_to(store).parts[0].startswith("_"))
    for path in shards:
        table = pq.read_table(path)
        date = path.parent.name.removeprefix("date=")
        for source in table["source"].to_pylist():
            rows[(source, date)] = rows.get((source, date), 0) + 1
        ids += table["id"].to_pylist()
    return {"rows": rows, "ids": ids, "shards": shards, "bytes": sum(p.stat().st_size for p in shards)}


def test_inspect_local_store_json_and_text(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any) -> None:
    crawled = local_store(tmp_path_factory, sandbox_site)
    store = Path(crawled.store)
    truth = _truth(store)
    proc = inspect(str(store), "--json", "--samples", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["shards"] == len(truth["shards"]) == crawled.result.stats["imagecrawl/store/shards_committed"]
    assert report["rows"] == len(truth["ids"]) == crawled.result.stats["imagecrawl/store/rows_committed"]
    assert report["bytes"] == truth["bytes"]
    assert report["schema_versions"] == {SCHEMA_VERSION: len(truth["shards"])}
    assert {(g["source"], g["date"]): g["rows"] for g in report["by_source_date"]} == truth["rows"]
    assert report["duplicate_ids"] == 0 and report["duplicate_sha256"] == 0
    assert report["crawled_at"]["min"] <= report["crawled_at"]["max"]
    assert [s["id"] for s in report["samples"]] == pq.read_table(truth["shards"][0], columns=["id"])["id"].to_pylist()[
        :2
    ]
    assert "image" not in report["samples"][0]
    assert report["reports"]["count"] == 1
    assert report["reports"]["totals"]["rows_committed"] == report["rows"]
    assert report["reports"]["html"].endswith(".html") and Path(report["reports"]["html"]).exists()

    text = inspect(str(store))
    assert text.returncode == 0, text.stderr
    assert f"{report['rows']:,} rows" in text.stdout
    for (source, date), n in truth["rows"].items():
        assert f"source={source}" in text.stdout and f"date={date}" in text.stdout and f"{n:,} rows" in text.stdout
    assert "0 repeated ids, 0 repeated images (ok)" in text.stdout
    assert report["samples"][0]["id"] in text.stdout


def test_inspect_finds_duplicates_and_damaged_shards(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any
) -> None:
    crawled = local_store(tmp_path_factory, sandbox_site)
    store = tmp_path / "copy"
    shutil.copytree(crawled.store, store)
    first = next(p for p in sorted(store.rglob("part-*.parquet")))
    copied = first.with_name("part-copied-00001.parquet")
    shutil.copyfile(first, copied)  # the same rows twice, as a broken writer would leave them
    (first.parent / "part-broken-00001.parquet").write_bytes(b"PAR1 not really")
    proc = inspect(str(store), "--json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    n = pq.read_metadata(first).num_rows
    assert report["duplicate_ids"] == n and report["duplicate_sha256"] == n
    assert set(report["duplicates"]["id"]["examples"]) <= set(pq.read_table(first, columns=["id"])["id"].to_pylist())
    assert len(report["duplicates"]["id"]["examples"]) == min(5, n)
    assert [Path(u["path"]).name for u in report["unreadable"]] == ["part-broken-00001.parquet"]
    assert report["shards"] == len(_truth(Path(crawled.store))["shards"]) + 1


def test_inspect_missing_store() -> None:
    proc = inspect("/nonexistent/store", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["exists"] is False


def test_inspect_s3_store_and_report_in_the_bucket(
    tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any, moto_s3: MotoS3
) -> None:
    crawled = s3_store(tmp_path_factory, sandbox_site, moto_s3)
    bucket = crawled.store.removeprefix("s3://").split("/")[0]
    objects = moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    shards = [o for o in objects if o["Key"].endswith(".parquet")]
    reports = sorted(o["Key"] for o in objects if "/.imagecrawl/reports/" in o["Key"])
    run_id = shards[0]["Key"].rsplit("/part-", 1)[1].rsplit("-", 1)[0]
    folder = "datasets/v1/.imagecrawl/reports"
    assert reports == [f"{folder}/{run_id}.html", f"{folder}/{run_id}.json"]
    html = moto_s3.client().get_object(Bucket=bucket, Key=reports[0])
    assert html["ContentType"].startswith("text/html") and b"<svg" in html["Body"].read()

    proc = inspect(crawled.store, "--json", env=crawled.env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    stats = crawled.result.stats
    assert report["shards"] == len(shards) == stats["imagecrawl/store/shards_committed"]
    assert report["rows"] == stats["imagecrawl/store/rows_committed"]
    assert report["bytes"] == sum(o["Size"] for o in shards)
    assert report["schema_versions"] == {SCHEMA_VERSION: len(shards)}
    assert report["duplicate_ids"] == 0 and report["duplicate_sha256"] == 0
    assert [g["source"] for g in report["by_source_date"]] == ["civitai"]
    assert report["reports"]["run_id"] == run_id and report["reports"]["spider"] == "civitai"
    assert len(report["samples"]) == 3

    # the same crawl into a local folder lands the same rows per source and date
    local = json.loads(inspect(local_store(tmp_path_factory, sandbox_site).store, "--json").stdout)
    assert report["rows"] == local["rows"]
    assert [(g["source"], g["date"], g["rows"]) for g in report["by_source_date"]] == [
        (g["source"], g["date"], g["rows"]) for g in local["by_source_date"]
    ]
