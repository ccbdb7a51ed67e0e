"""``imagecrawl export STORE OUT``: a store (or a filtered part of it) in img2dataset's output layout.

``--format webdataset`` (default) writes ``OUT/00000.tar, 00001.tar, ...``, each member set ``<key>.<ext>``
(the image: ``jpg``, ``png`` or ``webp``), ``<key>.txt`` (the prompt, empty when there is none) and
``<key>.json`` (the row's columns without the image bytes, plus img2dataset's ``key``, ``url``,
``caption``, ``status``). ``--format files`` writes the same three files into ``OUT/00000/``, ... Each shard
gets ``OUT/<shard>_stats.json`` (rows, skipped, bytes). ``--resize N`` re-encodes each image with Pillow so
its longest side is N pixels, keeping the aspect ratio. S3 stores are read with the AWS_* variables (as
``imagecrawl inspect``). Exit 2 for a usage mistake, 3 when the store cannot be read, 1 when OUT cannot
be written.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image, UnidentifiedImageError

from imagecrawl import exitcodes
from imagecrawl.inspect import dataset_for

logger = logging.getLogger(__name__)

FORMATS = ("webdataset", "files")
WHERE_KEYS = ("source", "site", "date")
#: image_format -> (extension, Pillow format); anything else is written as PNG
EXTENSIONS = {"jpeg": ("jpg", "JPEG"), "jpg": ("jpg", "JPEG"), "png": ("png", "PNG"), "webp": ("webp", "WEBP")}
BATCH_ROWS = 64
#: a fixed mtime for tar members, so the same store exports to the same bytes
_MTIME = 0


class UsageError(Exception):
    pass


class OutputError(Exception):
    """The output folder refused a write (full disk, permissions)."""


def _writing(action: str, path: Path, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as exc:
        raise OutputError(f"cannot {action} {path}: {exc.strerror or exc}") from None


@dataclass
class Filters:
    sources: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, wheres: Sequence[str]) -> Filters:
        out = cls()
        for where in wheres:
            key, sep, value = where.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in WHERE_KEYS or not value:
                raise UsageError(f"--where {where!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}")
            {"source": out.sources, "site": out.sites, "date": out.dates}[key].add(
                value.lower() if key == "site" else value
            )
        return out

    def expression(self) -> ds.Expression | None:
        """The part pyarrow can apply while reading (source, date); ``site`` is checked per row."""
        expr: ds.Expression | None = None
        for column, values in (("source", self.sources), ("date", self.dates)):
            if values:
                part = pc.field(column).isin(sorted(values))
                expr = part if expr is None else expr & part
        return expr

    def site_ok(self, row: dict[str, Any]) -> bool:
        if not self.sites:
            return True
        hosts = {_host(row.get("page_url")), _host(row.get("image_url"))}
        return any(h and (h in self.sites or any(h.endswith("." + s) for s in self.sites)) for h in hosts)


def _host(url: Any) -> str:
    if not isinstance(url, str):
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


def _image(data: bytes, image_format: str | None, resize: int | None) -> tuple[str, bytes, int, int, int, int]:
    """(extension, bytes, width, height, original width, original height); re-encoded only when resizing
    or when the format is not one of jpg/png/webp."""
    with Image.open(io.BytesIO(data)) as img:
        ow, oh = img.size
        ext, pil_format = EXTENSIONS.get((image_format or (img.format or "")).lower(), ("", "PNG"))
        if resize is None and ext:
            return ext, data, ow, oh, ow, oh
        img.load()
        out: Image.Image = img
        if resize is not None:
            scale = resize / max(ow, oh)
            out = img.resize((max(1, round(ow * scale)), max(1, round(oh * scale))), Image.Resampling.LANCZOS)
        if pil_format == "JPEG" and out.mode not in ("RGB", "L"):
            out = out.convert("RGB")
        elif pil_format == "PNG" and out.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16"):
            out = out.convert("RGBA")
        buf = io.BytesIO()
        out.save(buf, format=pil_format, **({"quality": 95} if pil_format in ("JPEG", "WEBP") else {}))
        return ext or "png", buf.getvalue(), out.size[0], out.size[1], ow, oh


class ShardWriter:
    """One output shard: a tar or a folder, and its ``<shard>_stats.json``."""

    def __init__(self, out: Path, index: int, fmt: str) -> None:
        self.name = f"{index:05d}"
        self.out = out
        self.fmt = fmt
        self.rows = 0
        self.skipped = 0
        self.bytes = 0
        self.started = time.time()
        self._tar: tarfile.TarFile | None = None
        self._tmp = out / f"{self.name}.tar.tmp"
        if fmt == "webdataset":
            self._tar = _writing("create", self._tmp, tarfile.open, self._tmp, "w")
        else:
            _writing("create", out / self.name, (out / self.name).mkdir)

    def add(self, key: str, files: list[tuple[str, bytes]]) -> None:
        _writing("write to", self.out, self._add, key, files)

    def _add(self, key: str, files: list[tuple[str, bytes]]) -> None:
        for ext, data in files:
            if self._tar is not None:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = _MTIME
                info.mode = 0o644
                self._tar.addfile(info, io.BytesIO(data))
            else:
                (self.out / self.name / f"{key}.{ext}").write_bytes(data)
            self.bytes += len(data)
        self.rows += 1

    def close(self) -> dict[str, Any]:
        result: dict[str, Any] = _writing("finish", self.out, self._close)
        return result

    def _close(self) -> dict[str, Any]:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self.out / f"{self.name}.tar")
        stats = {
            "shard": self.name,
            "count": self.rows + self.skipped,
            "successes": self.rows,
            "failed_to_export": self.skipped,
            "bytes": self.bytes,
            "start_time": self.started,
            "end_time": time.time(),
        }
        (self.out / f"{self.name}_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        return stats


@dataclass
class ExportResult:
    rows: int = 0
    skipped: int = 0
    shards: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)


def _rows(dataset: ds.Dataset, filters: Filters) -> Iterator[dict[str, Any]]:
    for batch in dataset.to_batches(filter=filters.expression(), batch_size=BATCH_ROWS):
        for row in batch.to_pylist():
            if filters.site_ok(row):
                yield row


def export(
    store: str,
    out: Path,
    fmt: str = "webdataset",
    wheres: Sequence[str] = (),
    resize: int | None = None,
    shard_size: int = 10_000,
) -> ExportResult:
    """Write the store's rows under ``out`` (which must be absent or empty)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if shard_size < 1:
        raise UsageError("--shard-size must be at least 1")
    if resize is not None and resize < 1:
        raise UsageError("--resize must be at least 1 pixel")
    filters = Filters.parse(wheres)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder: choose a new one")
    dataset = dataset_for(store)
    if not dataset.files:
        raise FileNotFoundError(f"no shards in {store}")
    _writing("create", out, out.mkdir, 0o777, True, True)
    digits = len(str(shard_size - 1))
    result = ExportResult()
    writer: ShardWriter | None = None
    for row in _rows(dataset, filters):
        if writer is None or writer.rows + writer.skipped >= shard_size:
            if writer is not None:
                writer.close()
            writer = ShardWriter(out, result.shards, fmt)
            result.shards += 1
        key = f"{writer.name}{writer.rows + writer.skipped:0{digits}d}"
        image = row.pop("image", None) or {}
        data = image.get("bytes") if isinstance(image, dict) else None
        reason = ""
        if not data:
            reason = "no_image_bytes"
        else:
            try:
                ext, payload, width, height, ow, oh = _image(data, row.get("image_format"), resize)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                reason = "undecodable_image"
                logger.debug("Row %s: %s", row.get("id"), exc)
        if reason:
            writer.skipped += 1
            result.skipped += 1
            result.skip_reasons[reason] = result.skip_reasons.get(reason, 0) + 1
            if result.skip_reasons[reason] <= 5:
                logger.warning("Skipping row %s (%s)", row.get("id"), reason)
            continue
        meta = {k: _jsonable(v) for k, v in row.items()}
        meta.update(
            key=key,
            url=row.get("image_url"),
            caption=row.get("prompt"),
            status="success",
            width=width,
            height=height,
            original_width=ow,
            original_height=oh,
        )
        prompt = row.get("prompt") or ""
        writer.add(
            key,
            [
                (ext, payload),
                ("txt", prompt.encode()),
                ("json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()),
            ],
        )
        result.rows += 1
    if writer is not None:
        writer.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl export", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="a local folder or s3://bucket/prefix (S3 settings from AWS_* variables)")
    parser.add_argument("out", type=Path, help="the output folder (absent or empty)")
    parser.add_argument("--format", default="webdataset", choices=FORMATS, help="default: webdataset")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep rows with source=NAME, site=HOST (page or image host, subdomains too) or "
        "date=YYYY-MM-DD; repeat a key for any of several values, different keys must all match",
    )
    parser.add_argument("--resize", type=int, default=None, metavar="N", help="longest side N pixels (Pillow)")
    parser.add_argument("--shard-size", type=int, default=10_000, metavar="N", help="rows per shard (10000)")
    args = parser.parse_args(argv)
    try:
        result = export(args.store, args.out, args.format, args.where, args.resize, args.shard_size)
    except UsageError as exc:
        print(f"imagecrawl export: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except OutputError as exc:
        print(f"imagecrawl export: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError/ArrowInvalid(ValueError)
        print(f"imagecrawl export: cannot read {args.store}: {exc}", file=sys.stderr)
        return exitcodes.STORE
    skipped = f"; skipped {result.skip_reasons}" if result.skipped else ""
    print(f"Exported {result.rows} rows into {result.shards} {args.format} shards in {args.out}{skipped}")
    return 0
