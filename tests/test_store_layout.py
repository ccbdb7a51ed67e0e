"""The store layout (imagecrawl/storage/layout.py): keys, and stores of the first layout
(``source=<source>/date=...``, ``_state/``, ``_reports/``) moved into the current one on open."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagecrawl.dedupe.sqlite import Ledger, reconcile
from imagecrawl.schema import SCHEMA
from imagecrawl.state import state_dir_for
from imagecrawl.storage import layout
from imagecrawl.storage.stores import LocalStore, S3Config, S3Store

from .conftest import MotoS3


def _shard(path: Path, source: str, n: int) -> list[tuple[str, str, int | None, str | None]]:
    rows = []
    for i in range(n):
        row = {name: None for name in SCHEMA.names}
        row.update(
            id=f"{source}:{i}",
            source=source,
            image_url=f"http://h/{source}/{i}.png",
            image_sha256=f"{source}{i}".ljust(64, "0"),
            crawled_at=datetime(2026, 1, 1, tzinfo=UTC),
            image={"bytes": b"x", "path": f"{i}.png"},
        )
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return [(r["image_sha256"], r["id"], None, r["image_url"]) for r in rows]


def test_keys() -> None:
    assert layout.shard_key("civitai", "2026-01-02", "RUN", 3) == "civitai/date=2026-01-02/part-RUN-00003.parquet"
    # a source name never makes a folder that readers skip, nor a Hive key
    assert layout.source_folder("._x=y") == "x_y" and layout.source_folder("__") == "unknown"
    assert layout.is_shard_key("a/date=2026-01-02/part-r-1.parquet")
    assert not layout.is_shard_key(".imagecrawl/state/x.parquet")
    assert not layout.is_shard_key("a/date=2026-01-02/.part-r-1.parquet.tmp")
    assert layout.current_key("source=a/date=d/p.parquet") == "a/date=d/p.parquet"
    assert layout.current_key("_reports/r.json") == ".imagecrawl/reports/r.json"
    assert layout.key_source_date("source=a/date=d/p.parquet") == ("a", "d")
    assert layout.key_source_date("a/date=d/p.parquet") == ("a", "d")


def _legacy_store(root: Path) -> dict[str, int]:
    """A store as the first layout left it: shards, a ledger naming them, a report, a staged copy."""
    ledger = Ledger(root / "_state" / "ledger.sqlite3")
    sizes = {}
    for source, n in (("civitai", 3), ("lexica", 2)):
        key = f"source={source}/date=2026-01-01/part-r-00001.parquet"
        ledger.commit_shard(key, _shard(root / key, source, n))
        sizes[source] = n
    ledger.close()
    (root / "_reports").mkdir()
    (root / "_reports" / "r.json").write_text(json.dumps({"run_id": "r"}))
    (root / "_staging").mkdir()
    (root / "_staging" / "dead.tmp").write_bytes(b"half a copy")
    return sizes


def test_a_local_store_of_the_first_layout_is_moved_on_open_and_reads(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sizes = _legacy_store(root)
    # the first layout does not read as a folder: `source` is a column and a Hive key
    with pytest.raises(Exception, match="source"):
        pd.read_parquet(root)

    state = state_dir_for(str(root))
    assert state == root / ".imagecrawl" / "state" and (state / "ledger.sqlite3").exists()
    store = LocalStore(root)
    assert store.migrate() == 3  # two shards and a report
    assert sorted(p.name for p in root.iterdir()) == [".imagecrawl", "civitai", "lexica"]
    assert (root / ".imagecrawl" / "reports" / "r.json").exists()
    frame = pd.read_parquet(root)
    assert frame.groupby("source").size().to_dict() == sizes
    assert set(frame["date"].astype(str)) == {"2026-01-01"}

    ledger = Ledger(state / "ledger.sqlite3")
    assert ledger.known_shards() == {s.key for s in store.list_shards()}
    assert reconcile(ledger, store) == 0  # nothing read again
    assert ledger.duplicate_reason("civitai0".ljust(64, "0"), "x") == "sha256"
    ledger.close()
    # a second open finds nothing to do
    assert state_dir_for(str(root)) == state and store.migrate() == 0


def test_a_migration_cut_short_is_finished_by_the_next_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _legacy_store(root)
    store = LocalStore(root)
    # as if the process died after moving one shard
    store.move("source=civitai/date=2026-01-01/part-r-00001.parquet", "civitai/date=2026-01-01/part-r-00001.parquet")
    assert store.migrate() == 2
    assert [s.key for s in store.list_shards()] == [
        "civitai/date=2026-01-01/part-r-00001.parquet",
        "lexica/date=2026-01-01/part-r-00001.parquet",
    ]
    assert len(pd.read_parquet(root)) == 5


def test_an_s3_store_of_the_first_layout_is_moved(tmp_path: Path, moto_s3: MotoS3) -> None:
    bucket = moto_s3.create_bucket("layout-legacy")
    cfg = S3Config(
        endpoint_url=moto_s3.endpoint, access_key_id="testing", secret_access_key="testing", region_name="us-east-1"
    )
    store = S3Store(f"s3://{bucket}/p", cfg)
    local = tmp_path / "one.parquet"
    _shard(local, "civitai", 2)
    store.commit(local, "source=civitai/date=2026-01-01/part-r-00001.parquet")
    store.put_bytes("_reports/r.json", b"{}")
    store.put_bytes("_state/watermarks.json", b"{}")
    assert [s.key for s in store.list_shards()] == ["source=civitai/date=2026-01-01/part-r-00001.parquet"]
    assert store.migrate() == 3
    assert sorted(store.list_keys()) == [
        ".imagecrawl/reports/r.json",
        ".imagecrawl/state/watermarks.json",
        "civitai/date=2026-01-01/part-r-00001.parquet",
    ]
    assert store.migrate() == 0
