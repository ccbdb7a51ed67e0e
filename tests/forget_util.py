"""Stores of made-up rows for the forget tests and benchmark: real Parquet shards in the project's
schema, committed through the store itself (local folder or S3), with known sites, accounts and hashes."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imagecrawl.records import author_hash
from imagecrawl.schema import SCHEMA, schema_with_metadata

SALT = b"forget-test-salt"
SITES = ("gallery.example.org", "art.example.net", "cdn.pics.example.com", "other.test")


def sha_of(n: int) -> str:
    return hashlib.sha256(f"image-{n}".encode()).hexdigest()


def site_of_row(n: int, sites: Sequence[str] = SITES) -> str:
    return sites[n % len(sites)]


def account_of_row(n: int) -> str:
    return f"user{n % 7}"


def rows_table(first: int, count: int, *, sites: Sequence[str] = SITES, image_bytes: int = 64) -> pa.Table:
    """Rows ``first`` .. ``first + count - 1``: row n is on ``sites[n % len(sites)]``, by ``user{n % 7}``."""
    n = np.arange(first, first + count)
    rng = np.random.default_rng(first)
    site = [sites[i % len(sites)] for i in n]
    blob = rng.bytes(image_bytes * count)  # a distinct (incompressible) "image" a row
    authors = {i: author_hash(f"user{i}", SALT) for i in range(7)}
    columns: dict[str, Any] = {
        "id": [f"synth:{i}" for i in n],
        "source": ["synth"] * count,
        "source_id": [str(i) for i in n],
        "page_url": [f"https://{s}/post/{i}" for s, i in zip(site, n, strict=True)],
        "image_url": [f"https://{s}/img/{i}.png" for s, i in zip(site, n, strict=True)],
        "prompt": [f"prompt {i}" for i in n],
        "image_sha256": [sha_of(int(i)) for i in n],
        "image_phash": rng.integers(-(2**63), 2**63 - 1, size=count, dtype=np.int64),
        "image_format": ["png"] * count,
        "image_size_bytes": [image_bytes] * count,
        "author_hash": [authors[int(i) % 7] for i in n],
        "crawled_at": [datetime(2026, 11, 23, tzinfo=UTC)] * count,
        "image": [
            {"bytes": blob[k * image_bytes : (k + 1) * image_bytes], "path": f"{i}.png"} for k, i in enumerate(n)
        ],
    }
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(count, f.type) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=schema_with_metadata())


def put_shard(store: Any, key: str, table: pa.Table, *, row_group_rows: int = 512) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard.parquet"
        pq.write_table(table, path, row_group_size=row_group_rows, compression="zstd")
        store.commit(path, key)


def shard_key_of(i: int) -> str:
    return f"synth/date=2026-11-23/part-20261123T000000Z-synth-{i:05d}.parquet"


def build_store(store: Any, *, shards: int, rows_per_shard: int, sites: Sequence[str] = SITES) -> list[str]:
    """``shards`` shards of ``rows_per_shard`` rows each (row numbers run on across shards)."""
    keys = []
    for i in range(shards):
        key = shard_key_of(i)
        put_shard(store, key, rows_table(i * rows_per_shard, rows_per_shard, sites=sites))
        keys.append(key)
    return keys


def store_rows(store: Any) -> pa.Table:
    """Every row of every shard of ``store`` (selection columns), in key order."""
    tables = []
    for shard in store.list_shards():
        with store.open(shard.key) as fh:
            tables.append(pq.read_table(fh, columns=["id", "image_sha256", "page_url", "author_hash"]))
    return pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string())})
