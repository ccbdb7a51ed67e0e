"""The shards open in the tools analysts use, and every tool sees the same rows: DuckDB, pyarrow.dataset,
Polars and Hugging Face ``datasets`` on a local store; DuckDB (httpfs from PyPI), pyarrow and Polars on
an S3 store (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from .conftest import REPO, MotoS3
from .stores_util import local_store, s3_store

pytestmark = pytest.mark.e2e

#: Compared across readers: every column but the image bytes, plus the hive ``date``.
KEY = ("id", "source", "prompt", "model", "seed", "steps", "width", "height", "image_sha256", "nsfw", "date")


def _normalise(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for row in rows:
        values = []
        for k in KEY:
            v = row.get(k)
            values.append(v.isoformat() if hasattr(v, "isoformat") else v)
        out.append(tuple(values))
    return sorted(out, key=lambda r: r[0])


def _truth(store: Path) -> list[tuple[Any, ...]]:
    rows = []
    for path in store.glob("*/date=*/*.parquet"):
        date = path.parent.name.removeprefix("date=")
        rows += [{**r, "date": date} for r in pq.read_table(path, columns=list(KEY[:-1])).to_pylist()]
    return _normalise(rows)


def _truth_s3(moto_s3: MotoS3, store: str) -> list[tuple[Any, ...]]:
    """The S3 store's rows, read object by object through boto3 (none of the readers under test)."""
    import io

    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    client = moto_s3.client()
    rows = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if not key.endswith(".parquet") or "/.imagecrawl/" in key:
                continue
            date = key.rsplit("/", 2)[-2].removeprefix("date=")
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            rows += [{**r, "date": date} for r in pq.read_table(io.BytesIO(body), columns=list(KEY[:-1])).to_pylist()]
    return _normalise(rows)


def _duckdb_rows(con: Any, glob: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(KEY)
    rel = con.sql(f"SELECT {cols} FROM read_parquet('{glob}', hive_partitioning=true)")
    return _normalise([dict(zip(KEY, r, strict=True)) for r in rel.fetchall()])


def _polars_rows(glob: str, **kwargs: Any) -> list[tuple[Any, ...]]:
    frame = pl.scan_parquet(glob, hive_partitioning=True, **kwargs).select(KEY).collect()
    assert frame.schema["date"] == pl.Date
    return _normalise(frame.to_dicts())


def _pyarrow_rows(path: str, filesystem: Any = None) -> list[tuple[Any, ...]]:
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
    return _normalise(dataset.to_table(columns=list(KEY)).to_pylist())


def test_four_readers_same_rows_locally(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any
) -> None:
    store = Path(local_store(tmp_path_factory, sandbox_site).store)
    expected = _truth(store)
    assert len(expected) > 10 and len({r[1] for r in expected}) == 1
    # the crawl's state and report sit in the store folder, where no reader trips over them
    assert (store / ".imagecrawl" / "state" / "ledger.sqlite3").exists()
    assert any((store / ".imagecrawl" / "reports").glob("*.json"))
    glob = f"{store}/**/*.parquet"
    assert _duckdb_rows(duckdb.connect(), glob) == expected
    assert _pyarrow_rows(str(store)) == expected
    assert _polars_rows(glob) == expected
    # the folder as it is, through pyarrow.parquet and pandas
    assert _normalise(pq.read_table(store, columns=list(KEY)).to_pylist()) == expected
    frame = pd.read_parquet(store, columns=["id", "source", "date"])
    assert sorted(zip(frame["id"], frame["source"], frame["date"].astype(str), strict=True)) == [
        (r[0], r[1], r[-1]) for r in expected
    ]
    # Polars on the glob without Hive keys: every row, no `date`
    plain = pl.read_parquet(glob, columns=["id", "source"])
    assert sorted(plain["id"].to_list()) == [r[0] for r in expected]

    # Hugging Face datasets, offline, in a fresh process (its settings are read at import)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.hf_rows", str(store)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    header, rows = lines[0], lines[1:]
    assert header["image_feature_is_Image"] is True
    assert "date" not in header["columns"]  # documented: no hive column in datasets
    assert header["columns"][-1] == "image"
    assert header["rows"] == len(expected)
    for row in rows:
        assert row["_pil"][0].startswith("PIL.")
        assert row["_pil"][1:] == [row["width"], row["height"]]
        assert row["_bytes_sha256"] == row["image_sha256"]
        row["date"] = row["crawled_at"][:10]  # the partition is the UTC day of crawled_at
    assert _normalise(rows) == expected
    assert (tmp_path / "hf").exists()  # the cache went where we said


def test_readers_on_s3(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any, moto_s3: MotoS3) -> None:
    import duckdb_ext  # type: ignore[import-not-found]

    crawled = s3_store(tmp_path_factory, sandbox_site, moto_s3)
    # the S3 store's own rows (a separate crawl need not keep the same near-duplicate of each pair)
    expected = _truth_s3(moto_s3, crawled.store)
    assert len(expected) == crawled.result.stats["imagecrawl/store/rows_committed"] > 0
    glob = f"{crawled.store}/**/*.parquet"

    # DuckDB through httpfs, loaded from PyPI's duckdb-ext-httpfs package (no download at run time)
    ext = next(Path(next(iter(duckdb_ext.__path__))).glob("extensions/*/*/httpfs.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    con.execute(
        "CREATE SECRET s3 (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
        f"ENDPOINT '127.0.0.1:{moto_s3.port}', URL_STYLE 'path', USE_SSL false)"
    )
    assert _duckdb_rows(con, glob) == expected

    endpoint = urlsplit(moto_s3.endpoint)
    s3 = pafs.S3FileSystem(
        access_key="testing", secret_key="testing", region="us-east-1", endpoint_override=endpoint.netloc, scheme="http"
    )
    assert _pyarrow_rows(crawled.store.removeprefix("s3://"), s3) == expected
    frame = pd.read_parquet(crawled.store.removeprefix("s3://"), filesystem=s3, columns=["id", "date"])
    assert sorted(zip(frame["id"], frame["date"].astype(str), strict=True)) == [(r[0], r[-1]) for r in expected]

    options = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "aws_endpoint_url": moto_s3.endpoint,
        "aws_allow_http": "true",
    }
    assert _polars_rows(glob, storage_options=options) == expected
