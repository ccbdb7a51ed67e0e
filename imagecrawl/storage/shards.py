"""Parquet shard writing: rows buffered into row groups, written to a local temp file, rolled by
rows, bytes and age. No Scrapy imports."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.parquet as pq

from imagecrawl import failpoints
from imagecrawl.dedupe.base import Entry
from imagecrawl.schema import COLUMNS, schema_with_metadata
from imagecrawl.storage import layout
from imagecrawl.tuning import DEFAULTS

logger = logging.getLogger(__name__)


def partition_of(row: dict[str, Any]) -> tuple[str, str]:
    crawled: datetime = row["crawled_at"]
    return layout.source_folder(str(row["source"])), crawled.strftime("%Y-%m-%d")


def shard_key(partition: tuple[str, str], run_id: str, seq: int) -> str:
    """``<source>/date=<day>/part-<run>-<seq>.parquet`` (:mod:`imagecrawl.storage.layout`)."""
    source, date = partition
    return layout.shard_key(source, date, run_id, seq)


def row_bytes(row: dict[str, Any]) -> int:
    image = row.get("image") or {}
    size = len(image.get("bytes") or b"")
    for name in ("prompt", "negative_prompt", "params", "image_url", "page_url"):
        value = row.get(name)
        if value:
            size += len(value)
    return size + 200


_DICTIONARY_COLUMNS = [
    "source",
    "model",
    "sampler",
    "metadata_source",
    "image_format",
    "nsfw",
    "license",
    "digital_source_type",
    "data_mining",
    "c2pa_claim_generator",
    "c2pa_validation",
]
SPOOL_SUFFIX = ".spool"


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write a shard's sidecar (key, owner, rows) so that a reader in another process never sees it half
    written: another run decides from it whether the shard's files are its owner's or left over."""
    tmp = path.with_name(path.name + "-new")
    try:
        tmp.write_text(json.dumps(data))
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written file left behind
        raise
    os.replace(tmp, path)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of a shard's files, or ``{}`` if there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parquet_writer(path: Path) -> pq.ParquetWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    return pq.ParquetWriter(
        str(path),
        schema_with_metadata(),
        compression="zstd",
        use_dictionary=_DICTIONARY_COLUMNS,
        write_statistics=[c for c in COLUMNS if c != "image"],
    )


def _entries(batch: pa.RecordBatch) -> list[Entry]:
    cols = batch.select(["image_sha256", "id", "image_phash", "image_url"]).to_pydict()
    return list(zip(cols["image_sha256"], cols["id"], cols["image_phash"], cols["image_url"], strict=True))


def spool_to_parquet(spool: Path, parquet: Path, row_group_rows: int) -> list[Entry]:
    """Write every complete batch of a spool into a Parquet file; a torn tail (the process died while
    appending) is ignored. Returns the entries written (empty: no Parquet file is left behind)."""
    entries: list[Entry] = []
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        with pa.OSFile(str(spool), "rb") as source:
            try:
                reader = pa.ipc.open_stream(source)
                for batch in reader:
                    pending.append(batch)
                    pending_rows += batch.num_rows
                    entries.extend(_entries(batch))
                    if pending_rows >= row_group_rows:
                        writer = writer or _parquet_writer(parquet)
                        writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
                        failpoints.hit("shard.row_group.written")
                        pending, pending_rows = [], 0
            except (pa.ArrowInvalid, OSError, EOFError) as exc:
                logger.warning(
                    "Spool %s ends in a torn write (%s); keeping its %d complete rows", spool, exc, len(entries)
                )
        if pending:
            writer = writer or _parquet_writer(parquet)
            writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
    finally:
        if writer is not None:
            writer.close()
    if not entries:
        parquet.unlink(missing_ok=True)
    return entries


#: errno values that mean the disk (or the file size limit, or a quota) has no room
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_room(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk has no room (not any other I/O error or a bug)."""
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        return True
    text = str(exc).lower()
    return any(words in text for words in ("no space left", "disk quota", "file too large"))


@dataclass(frozen=True, slots=True)
class Written:
    """What :meth:`ShardWriter.write_rows` did: the spool's size after the batch, and the rows left out
    (their index in the batch and why: ``unencodable``, ``out_of_range``, ``bad_value``)."""

    size: int
    dropped: list[tuple[int, str]] = field(default_factory=list)


def _drop_reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeError):
        return "unencodable"
    text = str(exc).lower()
    if isinstance(exc, OverflowError) or any(w in text for w in ("overflow", "out of bounds", "too large")):
        return "out_of_range"
    return "bad_value"


#: what converting rows to Arrow raises for a value the schema cannot hold
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError)


def rows_to_batch(rows: list[dict[str, Any]]) -> tuple[pa.RecordBatch | None, list[tuple[int, str]]]:
    """``rows`` as one record batch of the shard schema. When the batch does not convert, each row is
    converted alone and those that fail are left out: ``(batch or None, [(index, reason), ...])``."""
    schema = schema_with_metadata()
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema), []
    except _CONVERSION_ERRORS:
        pass
    good: list[dict[str, Any]] = []
    dropped: list[tuple[int, str]] = []
    for index, row in enumerate(rows):
        try:
            pa.RecordBatch.from_pylist([row], schema=schema)
        except _CONVERSION_ERRORS as exc:
            dropped.append((index, _drop_reason(exc)))
            logger.error("Row %s cannot be stored (%s): left out of its shard", row.get("id"), _drop_reason(exc))
            continue
        good.append(row)
    return (pa.RecordBatch.from_pylist(good, schema=schema) if good else None), dropped


class SpoolWriteError(OSError):
    """Appending to a spool failed (disk full, file too large, I/O error): the spool was sealed at its
    last good batch, and the rows not in it are not part of the shard."""


@dataclass
class ShardWriter:
    """One open shard of one partition.

    Rows are appended to a spool (an Arrow IPC stream, fsynced in small batches) so that a crash loses at
    most the last unflushed batch; :meth:`close` turns the spool into the Parquet shard.

    The file work can run on another thread than the one adding rows: :meth:`take_batch` (caller's
    thread) hands the buffered rows over, :meth:`write_rows` (any thread, one at a time) makes them
    durable, and :meth:`batch_written` / :meth:`batch_failed` (caller's thread) account for them."""

    key: str
    path: Path  # where the finished Parquet file goes (the outbox's partial name)
    row_group_rows: int
    spool_batch_rows: int = DEFAULTS.spool_batch_rows
    #: :meth:`add` writes a full batch itself (off: the caller flushes, e.g. on another thread)
    auto_flush: bool = True
    #: the run writing it (recorded in the sidecar: a run recovers only files of runs that have ended)
    owner: str = ""
    rows: int = 0
    bytes: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)
    _buffer: list[dict[str, Any]] = field(default_factory=list)
    _sink: Any = None
    _stream: Any = None
    #: spool size after the last batch made durable; a failed write is cut back to it
    _good_size: int = 0
    #: rows durable in the spool (what the shard will hold)
    durable_rows: int = 0
    #: set once a write failed: the spool is sealed and takes no more rows
    failed: BaseException | None = None
    #: rows left out because the schema cannot hold them, by reason (not yet taken by :meth:`take_dropped`)
    dropped_rows: dict[str, int] = field(default_factory=dict)

    @property
    def spool(self) -> Path:
        return self.path.with_suffix(SPOOL_SUFFIX)

    def add(self, row: dict[str, Any]) -> None:
        if self.failed is not None:
            raise SpoolWriteError(f"spool {self.spool.name} is sealed after a failed write: {self.failed}")
        self._buffer.append(row)
        self.rows += 1
        self.bytes += row_bytes(row)
        self.entries.append((row["image_sha256"], row["id"], row.get("image_phash"), row.get("image_url")))
        if self.auto_flush and len(self._buffer) >= self.spool_batch_rows:
            self.flush()

    @property
    def batch_full(self) -> bool:
        return len(self._buffer) >= self.spool_batch_rows

    def flush(self) -> None:
        """Append buffered rows to the spool and make them durable."""
        rows = self.take_batch()
        if rows is None:
            return
        try:
            written = self.write_rows(rows)
        except Exception as exc:
            self.batch_failed(rows, exc)
        self.batch_written(rows, written)

    def take_batch(self) -> list[dict[str, Any]] | None:
        """The buffered rows, to be written with :meth:`write_rows` (None: nothing to write)."""
        if not self._buffer or self.failed is not None:
            return None
        rows, self._buffer = self._buffer, []
        return rows

    def write_rows(self, rows: list[dict[str, Any]]) -> Written:
        """Append ``rows`` to the spool and fsync it. A row the shard schema cannot hold is left out
        alone (:attr:`Written.dropped`), never its batch. Raises what the disk raised (the caller then
        calls :meth:`batch_failed`)."""
        batch, dropped = rows_to_batch(rows)
        if batch is None:  # every row was left out: nothing to write
            return Written(self._good_size, dropped)
        if self._stream is None:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            # the key travels with the spool, for recovery after a crash
            write_sidecar(self.path.with_suffix(".json"), {"key": self.key, "owner": self.owner})
            self._sink = open(self.spool, "wb")  # noqa: SIM115 - closed in close()/abort()
            self._stream = pa.ipc.new_stream(self._sink, batch.schema)
        self._stream.write_batch(batch)
        self._sink.flush()
        os.fsync(self._sink.fileno())
        size: int = self._sink.tell()
        failpoints.hit("spool.flushed")
        return Written(size, dropped)

    def batch_written(self, rows: list[dict[str, Any]], written: Written) -> None:
        """Account for a written batch: its rows are durable, those left out leave the shard's entries."""
        start = self.durable_rows
        for index, reason in sorted(written.dropped, reverse=True):
            del self.entries[start + index]
            self.dropped_rows[reason] = self.dropped_rows.get(reason, 0) + 1
        self.rows -= len(written.dropped)
        self._good_size = written.size
        self.durable_rows += len(rows) - len(written.dropped)

    def take_dropped(self) -> dict[str, int]:
        """The rows left out since the last call, by reason."""
        dropped, self.dropped_rows = self.dropped_rows, {}
        return dropped

    def batch_failed(self, rows: list[dict[str, Any]], exc: BaseException) -> NoReturn:
        """Writing ``rows`` failed: seal the spool (they and every row after them are not in the shard)
        and raise :class:`SpoolWriteError`."""
        self._buffer[:0] = rows
        self._seal(exc)
        raise SpoolWriteError(f"writing spool {self.spool.name} failed: {exc}") from exc

    def _seal(self, exc: BaseException) -> None:
        """Cut the spool back to its last good batch and stop writing to it: the rows of the failed
        batch (and any later ones) are not in the shard, and its entries say so."""
        self.failed = exc
        lost = len(self._buffer)
        self._buffer.clear()
        del self.entries[self.durable_rows :]
        self.rows = self.durable_rows
        sink, self._sink, self._stream = self._sink, None, None
        if sink is not None:
            with contextlib.suppress(OSError):  # its buffer could not be written either: cut below
                sink.close()
        try:
            if self.spool.exists():
                os.truncate(self.spool, self._good_size)
        except OSError as trunc_exc:
            logger.error("Cannot cut spool %s back to its last good batch: %s", self.spool, trunc_exc)
        logger.debug("Spool %s sealed at %d rows (%d lost)", self.spool.name, self.durable_rows, lost)

    def _close_spool(self) -> None:
        try:
            if self._stream is not None:
                self._stream.close()  # writes the end-of-stream marker: optional for a reader
            if self._sink is not None:
                self._sink.close()
        except (OSError, pa.ArrowException) as exc:
            logger.warning("Closing spool %s failed (%s); its complete batches are kept", self.spool, exc)
        finally:
            self._stream = None
            self._sink = None

    def close(self) -> Path:
        """Finish the Parquet file at :attr:`path`; the spool stays until the caller has handed the file on.
        :attr:`entries` become exactly the rows the file holds."""
        if self.failed is None:
            self.flush()
        self._close_spool()
        if not self.spool.exists():  # no batch was ever written (every row left out, or a failed first)
            self.entries, self.rows = [], 0
            return self.path
        self.entries = spool_to_parquet(self.spool, self.path, self.row_group_rows)
        self.rows = len(self.entries)
        return self.path

    def abort(self) -> None:
        self._close_spool()
        self.spool.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".json").unlink(missing_ok=True)
