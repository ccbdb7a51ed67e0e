"""A really full disk under the outbox (a small tmpfs mounted on ``<state>/outbox``): the spool is sealed
at its last good batch, the crawl stops with a clear reason and exit status 5, the ledger records
exactly the rows of committed shards, and a later run with room salvages the spool and completes the
store, every image exactly once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.catalog import build_catalog, render_image
from tests.sandbox.testing import SandboxProcess

from .conftest import LOOPBACK, REPO, read_store, run_crawl

pytestmark = pytest.mark.e2e

SPOOLED = {
    "IMAGECRAWL_SHARD_MAX_ROWS": "1000",
    "IMAGECRAWL_NEAR_POLICY": "keep",
    "IMAGECRAWL_TUNING": {"spool_batch_rows": "2"},
}


@pytest.fixture
def small_outbox(tmp_path: Path) -> Iterator[Path]:
    outbox = tmp_path / "store" / ".imagecrawl" / "state" / "outbox"
    outbox.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(outbox)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield outbox
    finally:
        subprocess.run(["umount", "-l", str(outbox)], check=False)


def _store_rows(store: Path) -> list[dict[str, str]]:
    if not any(store.glob("*/date=*/*.parquet")):
        return []
    rows: list[dict[str, str]] = read_store(store, columns=["id", "image_sha256"]).to_pylist()
    return rows


def _ledger_ids(store: Path) -> set[str]:
    with sqlite3.connect(store / ".imagecrawl" / "state" / "ledger.sqlite3") as db:
        return {row[0] for row in db.execute("SELECT id FROM seen")}


def test_disk_full_while_spooling(sandbox_site: SandboxProcess, small_outbox: Path, tmp_path: Path) -> None:
    catalog = build_catalog(40, 7)
    entries = catalog.entries("civitai") + catalog.entries("gallery")
    urls = tmp_path / "urls.jsonl"
    urls.write_text("".join(json.dumps({"url": sandbox_site.url(e.image_path)}) + "\n" for e in entries))
    store = tmp_path / "store"
    args = {"input": str(urls)}

    full = run_crawl("urls", store=store, args=args, settings=SPOOLED, check=False)
    assert full.returncode == 5, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    assert full.stats["finish_reason"] == "spool_write_error"
    [line] = [x for x in full.stderr.splitlines() if "the crawl stops" in x]
    assert "No space left" in line or "too large" in line.lower(), line
    stored = [r["id"] for r in _store_rows(store)]
    assert _ledger_ids(store) == set(stored)  # nothing recorded that the store lacks
    expected = {hashlib.sha256(render_image(catalog, e)).hexdigest() for e in entries}
    assert len(stored) < len(expected), "the disk never filled: the test proves nothing"

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_outbox)], check=True)
    again = run_crawl("urls", store=store, args=args, settings=SPOOLED)
    rows = _store_rows(store)
    shas = Counter(r["image_sha256"] for r in rows)
    assert max(shas.values()) == 1 and set(shas) == expected
    assert _ledger_ids(store) == {r["id"] for r in rows}
    assert again.stats.get("imagecrawl/exit_code") is None


def test_a_start_on_a_full_disk_stops_cleanly_and_leaves_the_spool(
    sandbox_site: SandboxProcess, small_outbox: Path, tmp_path: Path
) -> None:
    """The outbox is full when a run starts and holds a spool of a run that ended: the spool cannot be
    taken over (its sidecar not rewritten), so it is kept as it was, the crawl stops with the disk-full
    reason and exit 5 (not a traceback), and a run with room still lands every image once."""
    catalog = build_catalog(40, 7)
    entries = catalog.entries("civitai") + catalog.entries("gallery")
    urls = tmp_path / "urls.jsonl"
    urls.write_text("".join(json.dumps({"url": sandbox_site.url(e.image_path)}) + "\n" for e in entries))
    store = tmp_path / "store"
    args = {"input": str(urls)}
    # a run with room, SIGKILLed once its spool holds rows: it leaves the spool to a later run
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_outbox)], check=True)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={urls}"]
    for key, value in merge_settings(
        LOOPBACK, SPOOLED, {"DOWNLOAD_DELAY": "0.2", "IMAGECRAWL_STORE": str(store)}
    ).items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    killed = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in small_outbox.glob("*.spool")):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    spools = sorted(small_outbox.glob("*.spool"))
    assert spools, "the first run left no spool: the test proves nothing"
    sidecars = {p: p.with_suffix(".json").read_bytes() for p in spools if p.with_suffix(".json").exists()}
    assert sidecars, "no sidecar to rewrite: the test proves nothing"
    filler = small_outbox / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as fh:
        while True:
            fh.write(b"x" * 512)

    full = run_crawl("urls", store=store, args=args, settings=SPOOLED, check=False)
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    assert full.returncode == 5, full.stderr[-3000:]
    assert full.stats["imagecrawl/store/recover_errors"] >= 1
    assert {p: p.with_suffix(".json").read_bytes() for p in sidecars} == sidecars  # untouched
    assert not list(small_outbox.glob("*-new"))

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_outbox)], check=True)
    run_crawl("urls", store=store, args=args, settings=SPOOLED)
    rows = _store_rows(store)
    shas = Counter(r["image_sha256"] for r in rows)
    assert max(shas.values()) == 1
    assert set(shas) == {hashlib.sha256(render_image(catalog, e)).hexdigest() for e in entries}


def test_a_full_disk_under_the_whole_store_is_one_line_per_cause(sandbox_site: SandboxProcess, tmp_path: Path) -> None:
    """The ledger's SQLite files, the outbox and the report share one small disk: SQLite's "database or
    disk is full" is one ERROR line (not a traceback per item), the crawl stops with exit status 5."""
    store = tmp_path / "store"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(store)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        result = run_crawl(
            "civitai",
            store=store,
            args={"api_url": sandbox_site.base_url.rstrip("/"), "nsfw": "all"},
            settings={"IMAGECRAWL_TUNING": {"spool_batch_rows": "2"}},
            check=False,
            timeout=240,
        )
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)
    assert result.returncode == 5, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert 1 <= len(errors) <= 4, errors  # one line per thing that could not be written
    assert any("disk is full" in line or "No space left" in line for line in errors), errors
