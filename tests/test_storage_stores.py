from __future__ import annotations

from pathlib import Path

import pytest

from imagecrawl.storage.stores import LocalStore, S3Config, S3Store, open_store

from .conftest import MotoS3


def _file(tmp_path: Path, data: bytes = b"PAR1 fake shard PAR1") -> Path:
    path = tmp_path / "local.parquet"
    path.write_bytes(data)
    return path


def test_local_commit_is_atomic_and_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = "a/date=2026-01-02/part-r-00001.parquet"
    store.commit(_file(tmp_path), key)
    assert (tmp_path / "store" / key).read_bytes() == b"PAR1 fake shard PAR1"
    # the staging area is empty afterwards and hidden from readers
    assert list(store.staging.iterdir()) == []
    (tmp_path / "store" / ".imagecrawl" / "state").mkdir()
    (tmp_path / "store" / ".imagecrawl" / "state" / "x.parquet").write_bytes(b"not a shard")
    assert [s.key for s in store.list_shards()] == [key]
    with store.open(key) as fh:
        assert fh.read() == b"PAR1 fake shard PAR1"


def test_open_store_rejects_unknown_schemes(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    with pytest.raises(ValueError, match="local path or s3://"):
        open_store("http://example.invalid/x")
    with pytest.raises(ValueError, match="no bucket"):
        S3Store("s3://", S3Config())


def test_s3_commit_list_open_with_prefix(tmp_path: Path, moto_s3: MotoS3) -> None:
    bucket = moto_s3.create_bucket("store-unit")
    store = open_store(f"s3://{bucket}/crawls/one", S3Config(**_cfg(moto_s3)))
    assert isinstance(store, S3Store)
    key = "b/date=2026-01-02/part-r-00001.parquet"
    store.commit(_file(tmp_path, b"shard bytes"), key)
    store.put_bytes(".imagecrawl/reports/run.json", b"{}")
    assert [s.key for s in store.list_shards()] == [key]
    with store.open(key) as fh:
        assert fh.read() == b"shard bytes"
    keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"crawls/one/{key}", "crawls/one/.imagecrawl/reports/run.json"}


def _cfg(moto: MotoS3) -> dict[str, object]:
    return {
        "endpoint_url": moto.endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "region_name": "us-east-1",
    }
