"""img2dataset-style URL lists (Parquet, CSV/TSV, JSONL, plain text), streamed and sharded. Pure.

``UrlList(path, ...)`` iterates ``UrlRow(row_index, url, caption)``. Nothing is loaded whole: Parquet is
read batch by batch (``ParquetFile.iter_batches``, only the two needed columns), CSV through the csv
module, JSONL/text line by line. ``row_index`` is the 0-based data row number in the file (header not
counted), so it is stable across runs and shards.

Sharding ``shard="I/N"`` yields the rows whose ``row_index % N == I``: N processes given ``0/N`` …
``N-1/N`` together cover every row exactly once. Rows with a missing/blank URL (``missing_url``), a URL
that does not parse or has no host (``invalid_url``), a non-http(s) scheme (``bad_scheme``), or a
JSONL line that is not a JSON object (``bad_row``) are skipped and reported to ``on_skip(kind)``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from imagecrawl.errors import ConfigError
from imagecrawl.values import to_text

FORMATS: Final = ("parquet", "csv", "tsv", "jsonl", "txt")
_EXTENSIONS: Final = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
}
BATCH_ROWS: Final = 4096


class UrlRow(NamedTuple):
    row_index: int
    url: str
    caption: str | None
    #: the ``extra_cols`` of the row (JSON values; a column a row lacks is None), or None when none asked
    extra: dict[str, Any] | None = None


def _json_value(value: Any) -> Any:
    """An input cell as a JSON value: strings, numbers, booleans, None, lists and dicts of them kept; dates
    as ISO 8601; bytes and anything else as their text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``; None/empty → ``(0, 1)``. ``ValueError`` otherwise."""
    if shard is None or not str(shard).strip():
        return 0, 1
    text = str(shard).strip()
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"-a shard= must look like I/N (e.g. 0/4), got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"-a shard= must be I/N with 0 <= I < N, got {text!r}")
    return i, n


def detect_format(path: str | Path, input_format: str | None = None) -> str:
    if input_format:
        fmt = input_format.strip().lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet", "text": "txt"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ConfigError(f"-a input_format= must be one of {', '.join(FORMATS)}, got {input_format!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ConfigError(
            f"{path}: cannot tell the format from the extension {suffix!r}; pass input_format= ({', '.join(FORMATS)})"
        )
    return _EXTENSIONS[suffix]


def check_url(value: Any) -> tuple[str | None, str | None]:
    """``(url, None)`` for a usable http(s) URL, else ``(None, kind)``."""
    if value is None:
        return None, "missing_url"
    text = str(value).strip()
    if not text:
        return None, "missing_url"
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None, "invalid_url"
    if parts.scheme.lower() not in ("http", "https"):
        return None, "bad_scheme" if parts.scheme else "invalid_url"
    if not parts.hostname or len(text.split()) > 1:  # whitespace inside (``text`` is stripped)
        return None, "invalid_url"
    return text, None


@dataclass
class UrlList:
    path: str | Path
    url_col: str = "url"
    caption_col: str | None = "caption"
    shard: str | None = None
    input_format: str | None = None
    on_skip: Callable[[str], None] | None = None
    #: input columns kept with each row (``UrlRow.extra``): img2dataset's ``save_additional_columns``
    extra_cols: tuple[str, ...] = ()
    #: called with (kind, row index, the raw URL value) for each skipped row
    on_skip_row: Callable[[str, int, Any], None] | None = None

    def __post_init__(self) -> None:
        self.format = detect_format(self.path, self.input_format)
        self.shard_index, self.shard_count = parse_shard(self.shard)
        self.skipped: Counter[str] = Counter()
        if not Path(self.path).is_file():
            raise ConfigError(f"{self.path}: input file not found")

    def check(self) -> None:
        """Validate the columns now (Parquet schema, CSV header) instead of at the first row:
        ``ValueError`` naming the file and the missing column. JSONL/text have nothing to check."""
        if self.format == "parquet":
            next(self._parquet(), None)
        elif self.format in ("csv", "tsv"):
            next(self._csv(), None)
        elif self.format == "txt":
            next(self._txt(), None)

    def _skip(self, kind: str, index: int = -1, raw_url: Any = None) -> None:
        self.skipped[kind] += 1
        if self.on_skip is not None:
            self.on_skip(kind)
        if self.on_skip_row is not None:
            self.on_skip_row(kind, index, None if raw_url is _BAD_ROW else raw_url)

    def __iter__(self) -> Iterator[UrlRow]:
        reader = {
            "parquet": self._parquet,
            "csv": self._csv,
            "tsv": self._csv,
            "jsonl": self._jsonl,
            "txt": self._txt,
        }[self.format]
        i, n = self.shard_index, self.shard_count
        for index, raw_url, raw_caption, raw_extra in reader():
            if index % n != i:
                continue
            if raw_url is _BAD_ROW:
                self._skip("bad_row", index, raw_url)
                continue
            url, kind = check_url(raw_url)
            if url is None:
                assert kind is not None
                self._skip(kind, index, raw_url)
                continue
            extra = {c: _json_value(v) for c, v in zip(self.extra_cols, raw_extra, strict=True)} or None
            # a caption keeps NUL characters (the record drops them) and a boolean cell reads "True"/"False"
            yield UrlRow(index, url, to_text(raw_caption, refuse=(dict, list), keep_nul=True), extra)

    # Each reader yields (row_index, url value, caption value, extra values) for EVERY row, unfiltered.

    def _extra_columns(self, columns: list[str]) -> None:
        missing = [c for c in self.extra_cols if c not in columns]
        if missing:
            names = ", ".join(map(str, columns))
            raise ConfigError(
                f"{self.path}: no column {missing[0]!r} (columns: {names}); check -a save_additional_columns="
            )

    def _missing_column(self, columns: list[str], column: str) -> ConfigError:
        names = ", ".join(map(str, columns))
        return ConfigError(f"{self.path}: no column {column!r} (columns: {names}); set -a url_col= / caption_col=")

    def _caption_column(self, columns: list[str]) -> str | None:
        if self.caption_col and self.caption_col in columns:
            return self.caption_col
        if self.caption_col and self.caption_col != "caption":
            raise self._missing_column(columns, self.caption_col)
        return None  # the default caption column is optional

    def _parquet(self) -> Iterator[tuple[int, Any, Any, list[Any]]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:
            raise ConfigError(f"{self.path}: not a readable Parquet file: {exc}") from None
        columns = list(pf.schema_arrow.names)
        if self.url_col not in columns:
            raise self._missing_column(columns, self.url_col)
        caption_col = self._caption_column(columns)
        self._extra_columns(columns)
        wanted = list(dict.fromkeys([self.url_col, *([caption_col] if caption_col else []), *self.extra_cols]))
        index = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
            urls = batch.column(self.url_col).to_pylist()
            captions = batch.column(caption_col).to_pylist() if caption_col else [None] * len(urls)
            extras = [batch.column(c).to_pylist() for c in self.extra_cols]
            for at, (url, caption) in enumerate(zip(urls, captions, strict=True)):
                yield index, url, caption, [values[at] for values in extras]
                index += 1

    def _csv(self) -> Iterator[tuple[int, Any, Any, list[Any]]]:
        delimiter = "\t" if self.format == "tsv" else ","
        with open(self.path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            if self.url_col not in header:
                raise self._missing_column(header, self.url_col)
            url_at = header.index(self.url_col)
            caption_col = self._caption_column(header)
            caption_at = header.index(caption_col) if caption_col else None
            self._extra_columns(header)
            extra_at = [header.index(c) for c in self.extra_cols]
            for index, row in enumerate(reader):
                url = row[url_at] if url_at < len(row) else None
                caption = row[caption_at] if caption_at is not None and caption_at < len(row) else None
                yield index, url, caption, [row[at] if at < len(row) else None for at in extra_at]

    def _jsonl(self) -> Iterator[tuple[int, Any, Any, list[Any]]]:
        with open(self.path, "rb") as fh:
            index = 0
            for line in fh:
                if not line.strip():
                    continue  # blank lines are not rows
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    caption = row.get(self.caption_col) if self.caption_col else None
                    yield index, row.get(self.url_col), caption, [row.get(c) for c in self.extra_cols]
                else:
                    yield index, _BAD_ROW, None, [None] * len(self.extra_cols)
                index += 1

    def _txt(self) -> Iterator[tuple[int, Any, Any, list[Any]]]:
        if self.extra_cols:
            raise ConfigError(f"{self.path}: a text list has no columns to keep (-a save_additional_columns=)")
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            index = 0
            for line in fh:
                if not line.strip():
                    continue
                yield index, line.strip(), None, []
                index += 1


_BAD_ROW: Final = object()
