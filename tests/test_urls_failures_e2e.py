"""The urls spider's img2dataset habits on a real sandbox: ``save_additional_columns`` keeps input columns in
``params.input_columns``, and every input row that gives no image has exactly one failure record (url, status,
error, stage) in ``<store>/.imagecrawl/failures/<run>.jsonl``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_crawl
from tests.crawlers import merge_settings
from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import MotoS3, SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, SEED = 8, 23
#: one shard per run, committed at the end (no early first shard), so every failure record of these small runs
#: is counted in a shard's stats
ONE_SHARD = {"IMAGECRAWL_TUNING": {"first_shard_max_rows": 0, "first_shard_max_seconds": 0}}


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="urls-failures")


def _stored(store: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(store.glob("*/date=*/*.parquet")):
        rows += pq.read_table(path, columns=["image_url", "prompt", "params"]).to_pylist()
    return rows


def _failures(store: Path) -> list[dict[str, Any]]:
    files = sorted((store / ".imagecrawl" / "failures").glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_extra_columns_and_one_failure_per_row(server: SandboxProcess, tmp_path: Path) -> None:
    catalog = build_catalog(ITEMS, SEED)
    good = [server.url(e.image_path) for e in catalog.entries("civitai")[:4]]
    bad = {
        "not a url": ("input", None),
        server.url("/no/such/image-404.png"): ("http", 404),
        server.url("/private/secret.png"): ("refused", None),  # robots.txt disallows /private/
    }
    urls = [good[0], "not a url", good[1], *list(bad)[1:], *good[2:]]
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption", "license", "score", "unused"])
        for i, url in enumerate(urls):
            writer.writerow([url, f"caption {i}", f"lic-{i}", str(i * 10), "x"])
    store = tmp_path / "store"
    result = run_crawl(
        "urls",
        store=store,
        args={"input": str(listing), "save_additional_columns": "license,score"},
        settings=ONE_SHARD,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    stored = _stored(store)
    assert sorted(r["image_url"] for r in stored) == sorted(good)
    for row in stored:
        params = json.loads(row["params"])
        i = params["input_row"]
        assert urls[i] == row["image_url"] and row["prompt"] == f"caption {i}"
        assert params["input_columns"] == {"license": f"lic-{i}", "score": str(i * 10)}

    failures = _failures(store)
    assert sorted(f["input_row"] for f in failures) == sorted(urls.index(u) for u in bad)
    run_ids = {f["run_id"] for f in failures}
    assert len(run_ids) == 1 and (store / ".imagecrawl" / "failures" / f"{run_ids.pop()}.jsonl").is_file()
    for record in failures:
        url = urls[record["input_row"]]
        stage, status = bad[url]
        assert record["url"] == url and (record["stage"], record["status"]) == (stage, status), record
        assert record["error"]
        if stage != "input":
            assert record["extra"] == {"license": f"lic-{record['input_row']}", "score": str(record["input_row"] * 10)}
    assert not list((store / ".imagecrawl" / "state").glob("failures/*.jsonl"))  # the spool is gone

    # one stats JSON per shard, beside the store's state
    shards = sorted(store.glob("*/date=*/*.parquet"))
    assert shards
    total_failures = 0
    for shard in shards:
        key = shard.relative_to(store).as_posix()
        stats = json.loads((store / ".imagecrawl" / "shards" / key.replace(".parquet", ".json")).read_text())
        assert stats["key"] == key and stats["rows"] == pq.read_metadata(shard).num_rows
        assert stats["bytes"] == shard.stat().st_size
        assert stats["run_id"] == failures[0]["run_id"]
        total_failures += stats["failures"]
    assert total_failures == len(failures)
    assert not list((store / ".imagecrawl").rglob("*.parquet"))


def test_a_run_without_failures_leaves_an_empty_record(server: SandboxProcess, tmp_path: Path) -> None:
    catalog = build_catalog(ITEMS, SEED)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(server.url(e.image_path) + "\n" for e in catalog.entries("civitai")[:2]))
    store = tmp_path / "store"
    result = run_crawl("urls", store=store, args={"input": str(listing)}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_stored(store)) == 2
    assert _failures(store) == []


def test_missing_extra_column_is_a_usage_error(server: SandboxProcess, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("url,caption\n" + server.url("/a.png") + ",a\n")
    result = run_crawl(
        "urls", store=tmp_path / "store", args={"input": str(listing), "save_additional_columns": "nope"}, check=False
    )
    assert result.returncode == 2
    assert "save_additional_columns" in result.stderr and "Traceback" not in result.stderr


def test_failures_and_shard_stats_reach_an_s3_store(server: SandboxProcess, moto_s3: MotoS3, tmp_path: Path) -> None:
    catalog = build_catalog(ITEMS, SEED)
    good = server.url(catalog.entries("civitai")[0].image_path)
    missing = server.url("/no/such/image-404.png")
    listing = tmp_path / "list.jsonl"
    listing.write_text(json.dumps({"url": good, "tag": "a"}) + "\n" + json.dumps({"url": missing}) + "\n")
    bucket = moto_s3.create_bucket("urls-failures")
    result = run_crawl(
        "urls",
        store=f"s3://{bucket}/set",
        args={"input": str(listing), "save_additional_columns": "tag"},
        settings=merge_settings(moto_s3.settings, ONE_SHARD, {"IMAGECRAWL_STATE_DIR": str(tmp_path / "state")}),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = moto_s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="set/")["Contents"])
    failures = [k for k in keys if k.startswith("set/.imagecrawl/failures/")]
    assert len(failures) == 1 and failures[0].endswith(".jsonl")
    body = client.get_object(Bucket=bucket, Key=failures[0])["Body"].read().decode()
    records = [json.loads(line) for line in body.splitlines()]
    assert [(r["input_row"], r["url"], r["status"], r["extra"]) for r in records] == [(1, missing, 404, {"tag": None})]
    shards = [k for k in keys if k.endswith(".parquet")]
    stats = [k for k in keys if k.startswith("set/.imagecrawl/shards/")]
    assert len(shards) == 1
    assert stats == ["set/.imagecrawl/shards/" + shards[0].removeprefix("set/").removesuffix(".parquet") + ".json"]
    shard_stats = json.loads(client.get_object(Bucket=bucket, Key=stats[0])["Body"].read())
    assert (shard_stats["rows"], shard_stats["failures"]) == (1, 1)
