"""``imagecrawl inspect STORE``: what a store holds (local path or s3://bucket/prefix)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from imagecrawl.schema import SCHEMA_VERSION_KEY

#: The ``source`` column is in every file already; only ``date`` comes from the path.
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


def filesystem_for(store: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and base path; S3 settings from the standard AWS_* environment variables."""
    if not store.startswith("s3://"):
        return pafs.LocalFileSystem(), os.path.abspath(store.removeprefix("file://"))
    parts = urlsplit(store)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    kwargs: dict[str, Any] = {
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": os.environ.get("AWS_SESSION_TOKEN"),
        "region": os.environ.get("AWS_REGION_NAME") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if endpoint:
        ep = urlsplit(endpoint)
        kwargs["endpoint_override"] = ep.netloc
        kwargs["scheme"] = ep.scheme or "https"
    return pafs.S3FileSystem(
        **{k: v for k, v in kwargs.items() if v is not None}
    ), f"{parts.netloc}{parts.path}".rstrip("/")


def dataset_for(store: str) -> ds.Dataset:
    fs, base = filesystem_for(store)
    try:
        info = fs.get_file_info(base)
        missing = info.type == pafs.FileType.NotFound
    except OSError:
        missing = True
    if missing:
        return ds.dataset([], schema=pa.schema([]), format="parquet")
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    files = [
        f.path
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.path.endswith(".parquet")
        and not any(part.startswith(("_", ".")) for part in f.path[len(base) :].split("/"))
    ]
    return ds.dataset(
        sorted(files), format="parquet", filesystem=fs, partitioning=PARTITIONING, partition_base_dir=base
    )


def inspect_store(store: str, samples: int = 3) -> dict[str, Any]:
    dataset = dataset_for(store)
    files = list(getattr(dataset, "files", []))
    fs, _ = filesystem_for(store)
    versions: dict[str, int] = {}
    total_bytes = 0
    for path in files:
        total_bytes += fs.get_file_info(path).size or 0
        with fs.open_input_file(path) as fh:
            meta = pq.read_metadata(fh).metadata or {}
        version = meta.get(SCHEMA_VERSION_KEY, b"?").decode()
        versions[version] = versions.get(version, 0) + 1
    report: dict[str, Any] = {
        "store": store,
        "shards": len(files),
        "bytes": total_bytes,
        "schema_versions": versions,
    }
    if not files:
        report.update(rows=0, by_source_date=[], duplicate_ids=0, duplicate_sha256=0, samples=[])
        return report
    table = dataset.to_table(columns=["id", "source", "date", "image_sha256", "prompt", "model", "image_url"])
    report["rows"] = table.num_rows
    grouped = (
        table.group_by(["source", "date"])
        .aggregate([("id", "count")])
        .sort_by([("source", "ascending"), ("date", "ascending")])
    )
    report["by_source_date"] = grouped.rename_columns(["source", "date", "rows"]).to_pylist()
    report["duplicate_ids"] = table.num_rows - len(set(table["id"].to_pylist()))
    report["duplicate_sha256"] = table.num_rows - len(set(table["image_sha256"].to_pylist()))
    report["samples"] = table.drop_columns(["date"]).slice(0, samples).to_pylist()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl inspect", description=__doc__)
    parser.add_argument("store", help="a local folder or s3://bucket/prefix (S3 settings from AWS_* variables)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args(argv)
    report = inspect_store(args.store, args.samples)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, default=str))
        return 0
    print(f"store {report['store']}: {report['shards']} shards, {report['rows']} rows, {report['bytes']} bytes")
    print(f"schema versions: {report['schema_versions']}")
    for group in report["by_source_date"]:
        print(f"  source={group['source']} date={group['date']}: {group['rows']} rows")
    print(f"duplicate ids: {report['duplicate_ids']}, duplicate images: {report['duplicate_sha256']}")
    for row in report["samples"]:
        prompt = " ".join(str(row.get("prompt") or "").split())[:100]
        print(f"  {row['id']}  {prompt}")
    return 0
