"""Schema versions are additive: a store holding v1 shards (before the provenance columns) and
current ones reads as one table, the v1 rows with the new columns null."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imagecrawl.inspect import dataset_for, inspect_store
from imagecrawl.schema import ADDED_IN, SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY, schema_with_metadata


def _row(record_id: str, **extra: object) -> dict[str, object]:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    row: dict[str, object] = {f.name: None for f in SCHEMA}
    row.update(
        id=record_id, source="t", image_url=f"https://s.example/{record_id}", image_sha256=record_id, crawled_at=now
    )
    row.update(extra)
    return row


def test_v1_and_current_shards_read_together(tmp_path: Path) -> None:
    folder = tmp_path / "source=t" / "date=2026-12-01"
    folder.mkdir(parents=True)
    v1 = pa.schema([f for f in SCHEMA if f.name not in ADDED_IN["2"]]).with_metadata({SCHEMA_VERSION_KEY: b"1"})
    old = _row("a")
    pq.write_table(pa.Table.from_pylist([{k: old[k] for k in v1.names}], schema=v1), folder / "part-old-0.parquet")
    new = _row("b", digital_source_type="trainedAlgorithmicMedia", c2pa_validation="valid")
    pq.write_table(pa.Table.from_pylist([new], schema=schema_with_metadata()), folder / "part-new-0.parquet")
    table = dataset_for(str(tmp_path)).to_table(columns=["id", "digital_source_type", "c2pa_validation"])
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows == [
        {"id": "a", "digital_source_type": None, "c2pa_validation": None},
        {"id": "b", "digital_source_type": "trainedAlgorithmicMedia", "c2pa_validation": "valid"},
    ]
    report = inspect_store(str(tmp_path), samples=0)
    assert report["schema_versions"] == {"1": 1, SCHEMA_VERSION: 1} and report["rows"] == 2


def test_item_fields_follow_the_schema() -> None:
    from dataclasses import fields

    from imagecrawl.items import PromptImage

    assert [f.name for f in fields(PromptImage)] == list(SCHEMA.names)
