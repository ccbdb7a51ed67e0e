"""Scrapy's feed exports of a real ``urls`` crawl of the sandbox: ``-o out.jsonl/.json/.csv/.xml/.parquet``
write every stored record without the image bytes (no ERROR line, exit 0); ``IMAGECRAWL_FEED_IMAGES`` keeps
them as base64 or as a path to a copy."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import LOOPBACK, REPO, read_store
from tests.crawlers import merge_settings, setting_text
from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, SEED = 12, 5


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="feeds-sandbox")


@pytest.fixture(scope="module")
def url_list(server: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = build_catalog(ITEMS, SEED)
    path = tmp_path_factory.mktemp("feeds") / "list.parquet"
    urls = [server.url(e.image_path) for e in catalog.entries("civitai")]
    pq.write_table(pa.table({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))]}), path)
    return path


def crawl(tmp: Path, url_list: Path, feeds: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={url_list}"]
    for feed in feeds:
        cmd += ["-o", str(tmp / feed)]
    for key, value in merge_settings(LOOPBACK, {"IMAGECRAWL_STORE": str(tmp / "store")}, settings).items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert " ERROR: " not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


def test_feeds_leave_the_image_bytes_out(tmp_path: Path, url_list: Path) -> None:
    crawl(tmp_path, url_list, ["out.jsonl", "out.json", "out.csv", "out.xml", "out.parquet"])
    stored = read_store(tmp_path / "store", columns=["id", "image_sha256", "prompt", "width"]).to_pylist()
    assert len(stored) > 5
    expected = {r["id"]: r for r in stored}

    jsonl = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    whole = json.loads((tmp_path / "out.json").read_text())
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    xml_items = ET.parse(tmp_path / "out.xml").getroot().findall("item")
    table = pq.read_table(tmp_path / "out.parquet")
    for name, items in (("jsonl", jsonl), ("json", whole), ("csv", rows), ("parquet", table.to_pylist())):
        assert {i["id"] for i in items} == set(expected), name
        for item in items:
            assert "image" not in item, name
            assert item["image_sha256"] == expected[item["id"]]["image_sha256"], name
            assert item["prompt"] == expected[item["id"]]["prompt"], name
    assert {x.findtext("id") for x in xml_items} == set(expected)
    assert all(x.find("image") is None and x.find("source_id") is None for x in xml_items)  # empty fields left out
    # the Parquet feed keeps the store's types
    assert table.schema.field("width").type == pa.int32() and table.schema.field("crawled_at").type.tz == "UTC"
    assert (tmp_path / "out.csv").stat().st_size < 20_000  # no image bytes as text


@pytest.mark.parametrize("mode", ["base64", "path"])
def test_feeds_keep_the_images_when_asked(tmp_path: Path, url_list: Path, mode: str) -> None:
    folder = tmp_path / "images"
    settings = {"IMAGECRAWL_FEED_IMAGES": mode, "IMAGECRAWL_FEED_IMAGES_DIR": str(folder)}
    crawl(tmp_path, url_list, ["out.jsonl", "out.csv"], **settings)
    items = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert items and [r["image"] for r in rows] == [i["image"] for i in items]
    for item in items:
        data = base64.b64decode(item["image"], validate=True) if mode == "base64" else Path(item["image"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == item["image_sha256"]
    if mode == "path":
        assert sorted(p.name.split(".")[0] for p in folder.iterdir()) == sorted(i["image_sha256"] for i in items)


def test_a_feed_setting_with_a_wrong_value_is_one_line(tmp_path: Path, url_list: Any) -> None:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={url_list}", "-O", str(tmp_path / "x.jsonl")]
    cmd += ["-s", f"IMAGECRAWL_STORE={tmp_path / 'store'}", "-s", "IMAGECRAWL_FEED_IMAGES=bytes"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "IMAGECRAWL_FEED_IMAGES must be one of omit, base64, path, got 'bytes'" in proc.stderr
