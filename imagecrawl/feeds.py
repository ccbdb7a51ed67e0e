"""Scrapy feed exports of the records (``scrapy crawl ... -O out.jsonl``, ``.json``, ``.csv``, ``.xml``,
``.parquet``; Scrapyd's ``items_dir``): Scrapy's own exporters, with the image bytes handled first.

``IMAGECRAWL_FEED_IMAGES`` says what the ``image`` field of a feed holds:

* ``omit`` (default): no ``image`` field; the image stays in the store's shards (``image_sha256`` finds it);
* ``base64``: the image file, base64-encoded (standard alphabet, with padding);
* ``path``: the path of a copy written to ``IMAGECRAWL_FEED_IMAGES_DIR`` as ``<image_sha256>.<ext>``.

``.parquet`` has no exporter in Scrapy; :class:`ParquetItemExporter` writes the record's columns with the
store's types (row groups of ``IMAGECRAWL_TUNING['feed_parquet_rows']`` rows).
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from pathlib import Path
from typing import IO, Any, Self

import pyarrow as pa
import pyarrow.parquet as pq
from itemadapter import ItemAdapter
from scrapy import exporters
from scrapy.crawler import Crawler

from imagecrawl.errors import ConfigError
from imagecrawl.schema import SCHEMA
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

MODES = ("omit", "base64", "path")
_EXT = {"jpeg": "jpg", "tiff": "tif"}


class ImageField:
    """Turns a record into the dict a feed writes, per ``IMAGECRAWL_FEED_IMAGES``."""

    def __init__(self, mode: str = "omit", folder: str = "feed-images") -> None:
        if mode not in MODES:
            raise ConfigError(f"IMAGECRAWL_FEED_IMAGES must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.folder = Path(folder)

    @classmethod
    def from_settings(cls, settings: Any) -> ImageField:
        return cls(
            str(settings.get("IMAGECRAWL_FEED_IMAGES")).strip().lower(),
            str(settings.get("IMAGECRAWL_FEED_IMAGES_DIR")),
        )

    def row(self, item: Any) -> dict[str, Any]:
        row = ItemAdapter(item).asdict()
        image = row.pop("image", None)
        if self.mode == "omit":
            return row
        data = image.get("bytes") if isinstance(image, dict) else None
        if not data:
            row["image"] = None
        elif self.mode == "base64":
            row["image"] = base64.b64encode(data).decode("ascii")
        else:
            row["image"] = self._write(row, data)
        return row

    def _write(self, row: dict[str, Any], data: bytes) -> str:
        fmt = str(row.get("image_format") or "bin").lower()
        path = self.folder / f"{row.get('image_sha256') or uuid.uuid4().hex}.{_EXT.get(fmt, fmt)}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return str(path)


class _ImageFieldMixin:
    images: ImageField

    @classmethod
    def from_crawler(cls, crawler: Crawler, file: IO[bytes], *args: Any, **kwargs: Any) -> Self:
        exporter = cls(file, *args, **kwargs)  # type: ignore[call-arg]
        exporter.images = ImageField.from_settings(crawler.settings)
        return exporter

    def export_item(self, item: Any) -> None:
        images = getattr(self, "images", None) or ImageField()
        super().export_item(images.row(item))  # type: ignore[misc]


class JsonLinesItemExporter(_ImageFieldMixin, exporters.JsonLinesItemExporter):
    pass


class JsonItemExporter(_ImageFieldMixin, exporters.JsonItemExporter):
    pass


class CsvItemExporter(_ImageFieldMixin, exporters.CsvItemExporter):
    pass


class XmlItemExporter(_ImageFieldMixin, exporters.XmlItemExporter):
    def _export_xml_field(self, name: str, serialized_value: Any, depth: int) -> None:
        if serialized_value is None:  # an empty column is left out, not written as the text "None"
            return
        super()._export_xml_field(name, serialized_value, depth)


class ParquetItemExporter(exporters.BaseItemExporter):
    """Records as Parquet: the store's column types, ``image`` as the feed setting says."""

    def __init__(self, file: IO[bytes], *, row_group_rows: int = 1000, **kwargs: Any) -> None:
        super().__init__(dont_fail=True, **kwargs)
        self.file = file
        self.images = ImageField()
        self.row_group_rows = row_group_rows
        self.rows: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, file: IO[bytes], *args: Any, **kwargs: Any) -> Self:
        kwargs.setdefault("row_group_rows", tuning(crawler.settings).feed_parquet_rows)
        exporter = cls(file, *args, **kwargs)
        exporter.images = ImageField.from_settings(crawler.settings)
        return exporter

    def schema(self) -> pa.Schema:
        fields = [f for f in SCHEMA if f.name != "image"]
        if self.images.mode != "omit":
            fields.append(pa.field("image", pa.string()))
        if self.fields_to_export:
            wanted = list(self.fields_to_export)
            fields = [f for name in wanted for f in fields if f.name == name]
        return pa.schema(fields)

    def export_item(self, item: Any) -> None:
        self.rows.append(self.images.row(item))
        if len(self.rows) >= self.row_group_rows:
            self._write()

    def _write(self) -> None:
        schema = self.schema()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file, schema, compression="zstd")
        table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in self.rows], schema=schema)
        self.writer.write_table(table)
        self.rows.clear()

    def finish_exporting(self) -> None:
        if self.rows or self.writer is None:
            self._write()
        if self.writer is not None:
            self.writer.close()
