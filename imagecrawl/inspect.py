"""``imagecrawl inspect STORE``: what a store holds (local path or s3://bucket/prefix).

Shards, rows per source and date, schema version(s), sizes and the crawl-time range come from the
Parquet footers alone (no data is read); the duplicate check reads only the ``id`` and ``image_sha256``
columns, batch by batch, keeping 8 bytes per row; samples come from the first shard. ``--json`` prints
one JSON object for machines. S3 settings come from the standard AWS_* environment variables
(``AWS_ENDPOINT_URL`` for S3-compatible servers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from imagecrawl.schema import SCHEMA, SCHEMA_VERSION_KEY
from imagecrawl.storage import layout

#: The ``source`` column is in every file already; only ``date`` comes from the path.
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
#: Shards of every schema version read with the current columns (a column an older version lacks is null).
READING_SCHEMA = pa.schema([*SCHEMA, pa.field("date", pa.string())])
REPORTS_DIR = layout.REPORTS_DIR
#: the audit log of ``imagecrawl forget`` (imagecrawl/forget/engine.py): one JSON record a removal
FORGET_LOG_DIR = f"{layout.AUDIT_DIR}/forget"
#: removals listed by the text report (``--json`` has them all)
FORGET_LOG_SHOWN = 10
SAMPLE_COLUMNS = ("id", "source", "model", "prompt", "width", "height", "image_format", "image_size_bytes")


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


def _listing(fs: pafs.FileSystem, base: str) -> list[pafs.FileInfo]:
    # An error here (an S3 endpoint that refuses, bad credentials) is raised, not taken for an empty store.
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        return []
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return [f for f in fs.get_file_info(selector) if f.type == pafs.FileType.File]


def _is_shard(path: str, base: str) -> bool:
    return layout.is_shard_key(path[len(base) :].lstrip("/"))


def shard_files(store: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """The committed shards of a store (``.imagecrawl/`` and other dot- or ``_``-names skipped)."""
    fs, base = filesystem_for(store)
    files = sorted((f for f in _listing(fs, base) if _is_shard(f.path, base)), key=lambda f: f.path)
    return fs, base, files


def dataset_for(store: str) -> ds.Dataset:
    fs, base, files = shard_files(store)
    if not files:
        return ds.dataset([], schema=pa.schema([]), format="parquet")
    return ds.dataset(
        [f.path for f in files],
        format="parquet",
        filesystem=fs,
        partitioning=PARTITIONING,
        partition_base_dir=base,
        schema=READING_SCHEMA,
    )


def _partition(path: str, base: str) -> dict[str, str]:
    source, date = layout.key_source_date(path[len(base) :].strip("/"))
    return {"source": source, "date": date}


def _footer(fs: pafs.FileSystem, info: pafs.FileInfo) -> dict[str, Any]:
    try:
        with fs.open_input_file(info.path) as fh:
            meta = pq.read_metadata(fh)
    except Exception as exc:  # a foreign or damaged file: reported, not fatal
        return {"path": info.path, "error": f"{type(exc).__name__}: {exc}"}
    kv = meta.metadata or {}
    low: Any = None
    high: Any = None
    names = meta.schema.names
    if "crawled_at" in names:
        col = names.index("crawled_at")
        for i in range(meta.num_row_groups):
            st = meta.row_group(i).column(col).statistics
            if st is not None and st.has_min_max:
                low = st.min if low is None else min(low, st.min)
                high = st.max if high is None else max(high, st.max)
    return {
        "path": info.path,
        "rows": meta.num_rows,
        "bytes": info.size or 0,
        "version": kv.get(SCHEMA_VERSION_KEY, b"?").decode(),
        "crawled_at": (low, high),
    }


def _digest64(values: Iterable[str | None], hex_prefix: bool) -> np.ndarray:
    out = np.empty(0, dtype=np.uint64)
    if hex_prefix:  # a sha256 hex digest: its first 64 bits are already uniform
        ints = [int(v[:16], 16) if v and len(v) >= 16 else 0 for v in values]
    else:
        ints = [int.from_bytes(hashlib.blake2b((v or "").encode(), digest_size=8).digest()) for v in values]
    if ints:
        out = np.fromiter(ints, dtype=np.uint64, count=len(ints))
    return out


def _duplicates(dataset: ds.Dataset) -> dict[str, Any]:
    """Rows sharing an id / an image_sha256: a 64-bit digest per row finds candidates, an exact second
    pass over the candidates confirms them and names a few."""
    ids: list[np.ndarray] = []
    shas: list[np.ndarray] = []
    for batch in dataset.to_batches(columns=["id", "image_sha256"], batch_size=65_536):
        ids.append(_digest64(batch.column("id").to_pylist(), hex_prefix=False))
        shas.append(_digest64(batch.column("image_sha256").to_pylist(), hex_prefix=True))
    result: dict[str, Any] = {}
    for name, chunks in (("id", ids), ("image_sha256", shas)):
        digests = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint64)
        uniq, counts = np.unique(digests, return_counts=True)
        suspects = set(uniq[counts > 1].tolist())
        exact: dict[str, int] = {}
        if suspects:
            for batch in dataset.to_batches(columns=[name], batch_size=65_536):
                values = batch.column(name).to_pylist()
                for value, digest in zip(values, _digest64(values, hex_prefix=name != "id").tolist(), strict=True):
                    if digest in suspects:
                        exact[value] = exact.get(value, 0) + 1
        repeated = {k: v for k, v in exact.items() if v > 1}
        result[name] = {
            "duplicates": sum(v - 1 for v in repeated.values()),
            "examples": sorted(repeated, key=lambda k: -repeated[k])[:5],
        }
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def inspect_store(store: str, samples: int = 3, duplicates: bool = True) -> dict[str, Any]:
    fs, base, files = shard_files(store)
    with ThreadPoolExecutor(max_workers=8 if store.startswith("s3://") else 2) as pool:
        footers = list(pool.map(lambda f: _footer(fs, f), files))
    good = [f for f in footers if "error" not in f]
    versions: dict[str, int] = {}
    groups: dict[tuple[str, str], dict[str, int]] = {}
    sources: dict[str, dict[str, int]] = {}
    low: Any = None
    high: Any = None
    for footer in good:
        versions[footer["version"]] = versions.get(footer["version"], 0) + 1
        part = _partition(footer["path"], base)
        key = (part.get("source", "?"), part.get("date", "?"))
        for entry in (
            groups.setdefault(key, {"shards": 0, "rows": 0, "bytes": 0}),
            sources.setdefault(key[0], {"shards": 0, "rows": 0, "bytes": 0}),
        ):
            entry["shards"] += 1
            entry["rows"] += footer["rows"]
            entry["bytes"] += footer["bytes"]
        first, last = footer["crawled_at"]
        if first is not None:
            low = first if low is None else min(low, first)
            high = last if high is None else max(high, last)
    report: dict[str, Any] = {
        "store": store,
        "exists": bool(files) or bool(_listing(fs, base)),
        "shards": len(good),
        "rows": sum(f["rows"] for f in good),
        "bytes": sum(f["bytes"] for f in good),
        "schema_versions": versions,
        "crawled_at": {"min": _jsonable(low), "max": _jsonable(high)},
        "by_source": [{"source": s, **v} for s, v in sorted(sources.items())],
        "by_source_date": [{"source": s, "date": d, **v} for (s, d), v in sorted(groups.items())],
        "unreadable": [{"path": f["path"], "error": f["error"]} for f in footers if "error" in f],
        "reports": _reports(fs, base),
        "forget_log": _forget_log(fs, base),
        "duplicate_ids": None,
        "duplicate_sha256": None,
        "duplicates": None,
        "samples": [],
    }
    if not good:
        report.update(duplicate_ids=0, duplicate_sha256=0)
        return report
    dataset = ds.dataset(
        [f["path"] for f in good],
        format="parquet",
        filesystem=fs,
        partitioning=PARTITIONING,
        partition_base_dir=base,
        schema=READING_SCHEMA,
    )
    if duplicates:
        dup = _duplicates(dataset)
        report["duplicates"] = dup
        report["duplicate_ids"] = dup["id"]["duplicates"]
        report["duplicate_sha256"] = dup["image_sha256"]["duplicates"]
    if samples > 0:
        with fs.open_input_file(good[0]["path"]) as fh:
            pf = pq.ParquetFile(fh)
            columns = [c for c in SAMPLE_COLUMNS if c in pf.schema_arrow.names]
            rows = []
            for batch in pf.iter_batches(batch_size=samples, columns=columns):
                rows = batch.to_pylist()
                break
        report["samples"] = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
    return report


def _reports(fs: pafs.FileSystem, base: str) -> dict[str, Any]:
    """The end-of-crawl reports under ``.imagecrawl/reports/`` (or the first layout's ``_reports/``): how many
    and the latest run's totals."""
    infos = [
        f
        for folder in (REPORTS_DIR, layout.LEGACY_REPORTS_DIR)
        for f in _listing(fs, f"{base}/{folder}")
        if f.path.endswith(".json")
    ]
    if not infos:
        return {"count": 0}
    # The run that finished last: a report is written when its run ends (run ids sort by start time only).
    latest = max(infos, key=lambda f: (f.mtime.timestamp() if f.mtime else 0.0, f.path))
    summary: dict[str, Any] = {"count": len(infos), "latest": latest.path}
    try:
        with fs.open_input_stream(latest.path) as fh:
            data = json.loads(fh.read())
        summary.update(
            run_id=data.get("run_id"),
            spider=data.get("spider"),
            finished_at=data.get("finished_at"),
            finish_reason=data.get("finish_reason"),
            totals=data.get("totals"),
            html=latest.path.removesuffix(".json") + ".html",
        )
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
    return summary


def _forget_log(fs: pafs.FileSystem, base: str) -> list[dict[str, Any]]:
    """Every removal ``imagecrawl forget`` recorded (``.imagecrawl/audit/forget/*.json``), oldest first."""
    records = []
    for info in sorted(_listing(fs, f"{base}/{FORGET_LOG_DIR}"), key=lambda f: f.path):
        if not info.path.endswith(".json"):
            continue
        try:
            with fs.open_input_stream(info.path) as fh:
                records.append(json.loads(fh.read()))
        except Exception as exc:
            records.append({"op": info.path, "error": f"{type(exc).__name__}: {exc}"})
    return records


def _format_forget_log(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    rows = sum(int(r.get("rows_removed") or 0) for r in records)
    lines = [f"forget log: {len(records)} removals, {rows} rows removed (.imagecrawl/audit/forget/)"]
    if len(records) > FORGET_LOG_SHOWN:
        lines.append(f"  ... {len(records) - FORGET_LOG_SHOWN} older removals (--json lists them all)")
    for r in records[-FORGET_LOG_SHOWN:]:
        if "error" in r:
            lines.append(f"  UNREADABLE {r['op']}: {r['error']}")
            continue
        shards = len(r.get("shards_rewritten") or []) + len(r.get("shards_deleted") or [])
        lines.append(
            f"  {r.get('finished_at') or r.get('started_at')}  {r.get('rows_removed')} rows, {shards} shards  "
            f"reason {r.get('reason')!r}  selectors: {'; '.join(r.get('selectors') or [])}"
        )
    return lines


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"store {report['store']}: {report['shards']} shards, {report['rows']:,} rows, {_size(report['bytes'])}",
    ]
    if not report["exists"]:
        lines.append("  (nothing there: check the path, the bucket, or the AWS_* variables)")
        return "\n".join(lines)
    span = report["crawled_at"]
    lines.append(f"schema versions: {report['schema_versions']}; crawled {span['min']} .. {span['max']}")
    lines.append("rows per source and date:")
    for g in report["by_source_date"]:
        lines.append(
            f"  source={g['source']:<12} date={g['date']}: {g['rows']:>9,} rows  {g['shards']:>4} shards  "
            f"{_size(g['bytes']):>10}"
        )
    for s in report["by_source"]:
        lines.append(
            f"  total {s['source']:<18}: {s['rows']:>9,} rows  {s['shards']:>4} shards  {_size(s['bytes']):>10}"
        )
    if report["duplicates"] is not None:
        ok = not (report["duplicate_ids"] or report["duplicate_sha256"])
        lines.append(
            f"duplicates: {report['duplicate_ids']} repeated ids, {report['duplicate_sha256']} repeated images"
            + (" (ok)" if ok else f" e.g. {report['duplicates']['id']['examples'][:3]}")
        )
    for bad in report["unreadable"]:
        lines.append(f"UNREADABLE {bad['path']}: {bad['error']}")
    reports = report["reports"]
    if reports.get("count"):
        totals = reports.get("totals") or {}
        lines.append(
            f"reports: {reports['count']}; last finished {reports.get('run_id')} ({reports.get('spider')}, "
            f"{reports.get('finish_reason')}, {totals.get('rows_committed', '?')} rows committed): "
            f"{reports.get('html')}"
        )
    lines += _format_forget_log(report.get("forget_log") or [])
    if report["samples"]:
        lines.append("samples:")
    for row in report["samples"]:
        prompt = " ".join(str(row.get("prompt") or "").split())[:90]
        lines.append(
            f"  {row.get('id')}  {row.get('width')}x{row.get('height')} {row.get('image_format')} "
            f"{row.get('model') or '-'}  {prompt!r}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="a local folder or s3://bucket/prefix (S3 settings from AWS_* variables)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--samples", type=int, default=3, help="sample rows to show (default 3)")
    parser.add_argument("--no-duplicates", action="store_true", help="skip the duplicate check (reads 2 columns)")
    args = parser.parse_args(argv)
    try:
        report = inspect_store(args.store, args.samples, duplicates=not args.no_duplicates)
    except OSError as exc:
        print(f"imagecrawl inspect: cannot read {args.store}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, ensure_ascii=False, default=str))
    else:
        print(format_report(report))
    if report["unreadable"] or report["duplicate_ids"] or report["duplicate_sha256"]:
        return 2
    return 0 if report["exists"] else 1
