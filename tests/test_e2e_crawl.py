"""End to end: each spider crawls the sandbox (a real server) with ``scrapy crawl`` into a local store
and into moto's S3 server; the shards are read back with pyarrow and DuckDB and compared with what the
sandbox served; a second identical run adds no rows."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.sandbox.catalog import Catalog, Entry, build_catalog

from .conftest import MotoS3, read_store, run_crawl
from .expect import NSFW_ORDER, check_rows, expected_rows

pytestmark = pytest.mark.e2e

ITEMS, SEED = 40, 7


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


def _civitai_id(entry: Entry) -> str:
    return f"civitai:{entry.id}"


def _rows(store: str | Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return read_store(store, env=env).to_pylist()


def test_civitai_local_store_and_second_run(tmp_path: Path, sandbox_site: Any, catalog: Catalog) -> None:
    store = tmp_path / "store"
    api = sandbox_site.base_url.rstrip("/")
    first = run_crawl("civitai", store=store, args={"api_url": api, "limit": 7})
    safe = [e for e in catalog.entries("civitai") if e.nsfw_level == "None"]
    assert len(safe) < len(catalog.entries("civitai")), "the sandbox should serve some flagged images"
    expected = expected_rows(catalog, safe, _civitai_id)
    rows = _rows(store)
    check_rows(catalog, expected, rows, _civitai_id, origin="api")
    assert first.stats["imagecrawl/store/rows_committed"] == expected.rows

    # DuckDB reads the same rows through hive partitioning
    con = duckdb.connect()
    glob = f"{store}/*/date=*/*.parquet"
    got = con.sql(
        f"SELECT source, count(*) AS n, count(DISTINCT id) AS ids, min(date) AS d "
        f"FROM read_parquet('{glob}', hive_partitioning=true) GROUP BY source"
    ).fetchall()
    assert [(g[0], g[1], g[2]) for g in got] == [("civitai", expected.rows, expected.rows)]
    prompts = dict(con.sql(f"SELECT id, prompt FROM read_parquet('{glob}', hive_partitioning=true)").fetchall())
    assert prompts == {r["id"]: r["prompt"] for r in rows}

    # a second identical run adds nothing and downloads no image again
    second = run_crawl("civitai", store=store, args={"api_url": api, "limit": 7})
    assert len(_rows(store)) == expected.rows
    assert second.stats.get("imagecrawl/store/rows_committed", 0) == 0
    assert second.stats.get("imagecrawl/media/images", 0) <= len(safe) - expected.rows


def test_civitai_nsfw_and_max_items(tmp_path: Path, sandbox_site: Any, catalog: Catalog) -> None:
    store = tmp_path / "store"
    api = sandbox_site.base_url.rstrip("/")
    run_crawl("civitai", store=store, args={"api_url": api, "nsfw": "X", "max_items": 15, "limit": 10})
    rows = _rows(store)
    assert 1 <= len(rows) <= 15
    levels = {catalog.get("civitai", r["source_id"]).nsfw_level for r in rows}
    assert levels <= set(NSFW_ORDER)
    assert {r["nsfw"] for r in rows} == levels


def test_lexica(tmp_path: Path, sandbox_site: Any, catalog: Catalog) -> None:
    word = catalog.entries("lexica")[0].prompt.split()[0]
    hits = catalog.lexica_search(word)
    assert hits
    store = tmp_path / "store"
    run_crawl("lexica", store=store, args={"api_url": sandbox_site.base_url.rstrip("/"), "q": word})
    expected = expected_rows(catalog, hits, lambda e: f"lexica:{e.id}")
    check_rows(
        catalog,
        expected,
        _rows(store),
        lambda e: f"lexica:{e.id}",
        origin="api",
        shown=("prompt", "seed", "cfg_scale", "model"),
        fixed={"model": "lexica-aperture-v3"},
    )


def test_gallery_and_robots(tmp_path: Path, catalog: Catalog) -> None:
    from tests.sandbox.testing import start_sandbox

    site = start_sandbox(items=ITEMS, seed=SEED, log_path=tmp_path / "requests.jsonl")
    try:
        store = tmp_path / "store"
        run_crawl("gallery", store=store, args={"profile": "sandbox", "start_url": site.url("/gallery/")})
        rows = _rows(store)
        by_source_id = {r["source_id"]: r for r in rows}
        entries = catalog.entries("gallery")
        record_ids = {e.id: r["id"] for e in entries if (r := by_source_id.get(e.id)) is not None}
        expected = expected_rows(catalog, entries, lambda e: record_ids.get(e.id, f"gallery:{e.id}"))
        check_rows(catalog, expected, rows, lambda e: record_ids.get(e.id, f"gallery:{e.id}"), origin="html")
        paths = [r["path"] for r in site.requests()]
        assert "/robots.txt" in paths
        assert not [p for p in paths if p.startswith("/private/")]
    finally:
        site.stop()


def test_urls_csv_two_shards(tmp_path: Path, sandbox_site: Any, catalog: Catalog) -> None:
    entries = catalog.entries("civitai")
    table = tmp_path / "urls.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "text"])
        for entry in entries:
            writer.writerow([sandbox_site.url(entry.image_path), f"caption {entry.id}"])
    store = tmp_path / "store"
    for shard in ("0/2", "1/2"):
        run_crawl("urls", store=store, args={"input": table, "url_col": "image", "caption_col": "text", "shard": shard})
    rows = _rows(store)
    expected = expected_rows(catalog, entries, lambda e: "unused")
    assert len(rows) == expected.rows
    assert len({expected.sha_to_group[r["image_sha256"]] for r in rows}) == expected.rows
    for row in rows:
        group = expected.groups[expected.sha_to_group[row["image_sha256"]]]
        assert row["prompt"] in {f"caption {e.id}" for e in group}
        assert row["metadata_source"] == "input"
        assert row["id"] == f"sha256:{row['image_sha256']}"


def test_civitai_into_moto_s3(tmp_path: Path, sandbox_site: Any, moto_s3: MotoS3, catalog: Catalog) -> None:
    bucket = moto_s3.create_bucket("e2e-civitai")
    store = f"s3://{bucket}/datasets/run1"
    api = sandbox_site.base_url.rstrip("/")
    args = {"api_url": api, "limit": 50}
    settings = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(tmp_path / "state")}
    run_crawl("civitai", store=store, args=args, settings=settings)
    safe = [e for e in catalog.entries("civitai") if e.nsfw_level == "None"]
    expected = expected_rows(catalog, safe, _civitai_id)
    rows = _rows(store, env=moto_s3.env)
    check_rows(catalog, expected, rows, _civitai_id, origin="api")
    keys = [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("datasets/run1/civitai/date=") for k in keys if k.endswith(".parquet"))

    # DuckDB through its httpfs extension (packaged on PyPI), against the same S3 server
    import duckdb_ext  # type: ignore[import-not-found]

    ext = next(Path(next(iter(duckdb_ext.__path__))).glob("extensions/*/*/httpfs.duckdb_extension"))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext}'")
    con.execute(
        "CREATE SECRET s3 (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
        f"ENDPOINT '127.0.0.1:{moto_s3.port}', URL_STYLE 'path', USE_SSL false)"
    )
    shards = f"s3://{bucket}/datasets/run1/*/date=*/*.parquet"
    count = con.sql(f"SELECT count(*) FROM read_parquet('{shards}', hive_partitioning=true)").fetchone()
    assert count == (expected.rows,)

    # a second run into the same bucket, with a fresh local state dir, adds nothing (ledger rebuilt from S3)
    settings["IMAGECRAWL_STATE_DIR"] = str(tmp_path / "state2")
    second = run_crawl("civitai", store=store, args=args, settings=settings)
    assert second.stats.get("imagecrawl/store/rows_committed", 0) == 0
    assert len(_rows(store, env=moto_s3.env)) == expected.rows


def test_near_duplicates_kept_with_duplicate_of(tmp_path: Path, sandbox_site: Any, catalog: Catalog) -> None:
    store = tmp_path / "store"
    api = sandbox_site.base_url.rstrip("/")
    result = run_crawl(
        "civitai", store=store, args={"api_url": api, "nsfw": "all"}, settings={"IMAGECRAWL_NEAR_POLICY": "keep"}
    )
    entries = catalog.entries("civitai")
    exact = expected_rows(catalog, entries, _civitai_id, near=False)
    near = expected_rows(catalog, entries, _civitai_id, near=True)
    assert exact.rows > near.rows, "the sandbox should serve re-encoded copies"
    rows = _rows(store)
    check_rows(catalog, exact, rows, _civitai_id, origin="api")
    by_id = {r["id"]: r for r in rows}
    marked = [r for r in rows if r["duplicate_of"] is not None]
    assert len(marked) == exact.rows - near.rows == result.stats["imagecrawl/dedupe/kept_near"]
    for row in marked:
        other = by_id[row["duplicate_of"]]
        assert near.sha_to_group[other["image_sha256"]] == near.sha_to_group[row["image_sha256"]]
