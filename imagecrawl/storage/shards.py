"""Parquet shard writing: rows buffered into row groups, written to a local temp file, rolled by
rows, bytes and age. No Scrapy imports."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from imagecrawl import failpoints
from imagecrawl.dedupe.sqlite import Entry
from imagecrawl.schema import COLUMNS, schema_with_metadata

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def partition_of(row: dict[str, Any]) -> tuple[str, str]:
    crawled: datetime = row["crawled_at"]
    return _SAFE.sub("_", str(row["source"])) or "unknown", crawled.strftime("%Y-%m-%d")


def shard_key(partition: tuple[str, str], run_id: str, seq: int) -> str:
    source, date = partition
    return f"source={source}/date={date}/part-{run_id}-{seq:05d}.parquet"


def row_bytes(row: dict[str, Any]) -> int:
    image = row.get("image") or {}
    size = len(image.get("bytes") or b"")
    for name in ("prompt", "negative_prompt", "params", "image_url", "page_url"):
        value = row.get(name)
        if value:
            size += len(value)
    return size + 200


@dataclass
class ShardWriter:
    """One open shard of one partition."""

    key: str
    path: Path
    row_group_rows: int
    rows: int = 0
    bytes: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)
    _buffer: list[dict[str, Any]] = field(default_factory=list)
    _writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        self.rows += 1
        self.bytes += row_bytes(row)
        self.entries.append((row["image_sha256"], row["id"], row.get("image_phash"), row.get("image_url")))
        if len(self._buffer) >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        schema = schema_with_metadata()
        table = pa.Table.from_pylist(self._buffer, schema=schema)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                str(self.path),
                schema,
                compression="zstd",
                use_dictionary=[
                    "source",
                    "model",
                    "sampler",
                    "metadata_source",
                    "image_format",
                    "nsfw",
                    "license",
                ],
                write_statistics=[c for c in COLUMNS if c != "image"],
            )
        self._writer.write_table(table, row_group_size=len(self._buffer))
        failpoints.hit("shard.row_group.written")
        self._buffer.clear()

    def close(self) -> Path:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.path.unlink(missing_ok=True)
