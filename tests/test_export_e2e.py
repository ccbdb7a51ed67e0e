"""``imagecrawl export`` on a real crawl's store: the tars read back with the ``webdataset`` package (as
training loaders read img2dataset's output) hold every row with its prompt, image and columns; the files
layout, resizing, filters and the usage/store errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from imagecrawl.export import export
from imagecrawl.schema import SCHEMA

from .conftest import REPO, MotoS3
from .stores_util import local_store, s3_store

pytestmark = pytest.mark.e2e


def _export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagecrawl.cli", "export", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _store_rows(store: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(store).glob("*/date=*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["id"]] = row
    return rows


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    crawl = local_store(tmp_path_factory, sandbox_site)
    rows = _store_rows(crawl.store)
    assert len(rows) >= 5
    return crawl.store, rows


def test_webdataset_reads_every_row_back(crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    store, rows = crawled
    out = tmp_path / "wds"
    shard_size = 4
    done = _export(store, str(out), "--shard-size", str(shard_size))
    assert done.returncode == 0, done.stderr
    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == [f"{i:05d}.tar" for i in range(-(-len(rows) // shard_size))]
    seen: dict[str, dict[str, Any]] = {}
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        exts = [k for k in ("jpg", "png", "webp") if k in sample]
        assert len(exts) == 1, sorted(sample)
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"]
        row = rows[meta["id"]]
        assert sample["txt"].decode() == (row["prompt"] or "")
        assert sample[exts[0]] == row["image"]["bytes"]  # no resize: the stored bytes, unchanged
        assert "image" not in meta
        assert meta["url"] == row["image_url"] and meta["caption"] == row["prompt"]
        assert (meta["width"], meta["height"]) == (row["width"], row["height"])
        assert meta["image_sha256"] == row["image_sha256"] and meta["model"] == row["model"]
        assert meta["crawled_at"] == row["crawled_at"].isoformat()
        seen[meta["id"]] = meta
    assert seen.keys() == rows.keys()
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    assert [s["shard"] for s in stats] == [t.stem for t in tars]
    assert sum(s["successes"] for s in stats) == len(rows)
    assert all(s["successes"] <= shard_size for s in stats)
    assert f"Exported {len(rows)} rows" in done.stdout


def test_files_layout_and_resize(crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    store, rows = crawled
    out = tmp_path / "files"
    side = 37
    done = _export(store, str(out), "--format", "files", "--resize", str(side))
    assert done.returncode == 0, done.stderr
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["00000"]
    metas = sorted(folders[0].glob("*.json"))
    assert len(metas) == len(rows)
    for path in metas:
        meta = json.loads(path.read_text())
        row = rows[meta["id"]]
        images = [p for p in path.parent.glob(path.stem + ".*") if p.suffix in (".jpg", ".png", ".webp")]
        assert len(images) == 1
        with Image.open(images[0]) as img:
            assert max(img.size) == side
            assert (img.width, img.height) == (meta["width"], meta["height"])
            ratio = row["width"] / row["height"]
            assert abs(img.width / img.height - ratio) <= 2 / min(img.size) + 0.02
        assert (meta["original_width"], meta["original_height"]) == (row["width"], row["height"])
        assert (path.parent / (path.stem + ".txt")).read_text() == (row["prompt"] or "")


def test_where_filters(crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    store, rows = crawled
    day = next(iter(Path(store).glob("*/date=*"))).name.removeprefix("date=")
    done = _export(store, str(tmp_path / "a"), "--where", "source=civitai", "--where", f"date={day}")
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "a" / "00000.tar") as tar:
        assert len([n for n in tar.getnames() if n.endswith(".json")]) == len(rows)
    site = "127.0.0.1"
    done = _export(store, str(tmp_path / "b"), "--where", f"site={site}")
    assert done.returncode == 0, done.stderr
    assert f"Exported {len(rows)} rows" in done.stdout
    done = _export(store, str(tmp_path / "c"), "--where", "source=lexica")
    assert done.returncode == 0, done.stderr
    assert "Exported 0 rows" in done.stdout and not list((tmp_path / "c").glob("*.tar"))


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--where", "colour=red"], 2, "--where"),
        (["--shard-size", "0"], 2, "--shard-size"),
        (["--resize", "-3"], 2, "--resize"),
        (["--format", "zip"], 2, "--format"),
    ],
)
def test_usage_errors(
    crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    store, _rows = crawled
    done = _export(store, str(tmp_path / "out"), *args)
    assert done.returncode == code
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_out_not_empty_and_missing_store(crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    store, _rows = crawled
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    done = _export(store, str(tmp_path / "busy"))
    assert done.returncode == 2 and "not an empty folder" in done.stderr
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    done = _export(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_undecodable_image_is_counted(tmp_path: Path) -> None:
    # One store file is rewritten with one image's bytes damaged: that row is skipped and counted, the rest kept.
    store = tmp_path / "store" / "urls" / "date=2026-01-01"
    store.mkdir(parents=True)
    good = io.BytesIO()
    Image.new("RGB", (20, 10), "red").save(good, format="PNG")
    base: dict[str, Any] = {f.name: None for f in SCHEMA}
    rows = [
        {
            **base,
            "id": "a",
            "source": "urls",
            "image_url": "http://127.0.0.1/a.png",
            "image_sha256": "0" * 64,
            "image_format": "png",
            "prompt": "red",
            "crawled_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
            "image": {"bytes": good.getvalue(), "path": None},
        },
        {
            **base,
            "id": "b",
            "source": "urls",
            "image_url": "http://127.0.0.1/b.png",
            "image_sha256": "1" * 64,
            "image_format": "png",
            "prompt": "broken",
            "crawled_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
            "image": {"bytes": b"not an image", "path": None},
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), store / "part-x-00000.parquet")
    result = export(str(tmp_path / "store"), tmp_path / "out")
    assert (result.rows, result.skipped, result.skip_reasons) == (1, 1, {"undecodable_image": 1})
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        assert sorted(tar.getnames()) == ["000000000.json", "000000000.png", "000000000.txt"]
    stats = json.loads((tmp_path / "out" / "00000_stats.json").read_text())
    assert (stats["successes"], stats["failed_to_export"]) == (1, 1)


def test_s3_store_exports_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any, moto_s3: MotoS3, tmp_path: Path
) -> None:
    crawl = s3_store(tmp_path_factory, sandbox_site, moto_s3)
    done = _export(crawl.store, str(tmp_path / "out"), "--shard-size", "7", env=crawl.env)
    assert done.returncode == 0, done.stderr
    samples = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "out").glob("*.tar")), shardshuffle=False))
    assert samples and len(samples) == len({json.loads(s["json"])["id"] for s in samples})
    assert all(json.loads(s["json"])["source"] == "civitai" for s in samples)
    assert f"Exported {len(samples)} rows" in done.stdout
    missing = _export(crawl.store + "-nothing-here", str(tmp_path / "out2"), env=crawl.env)
    assert missing.returncode == 3 and len(missing.stderr.strip().splitlines()) == 1


def test_unwritable_out_is_one_line(crawled: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    store, _rows = crawled
    (tmp_path / "a-file").write_text("not a folder")
    done = _export(store, str(tmp_path / "a-file" / "out"))
    assert done.returncode == 1 and "cannot create" in done.stderr and "Traceback" not in done.stderr
