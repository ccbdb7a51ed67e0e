"""A corrupt ``ledger.sqlite3`` does not stop the crawl: it is set aside with one log line and a new
ledger is rebuilt from the store, so the next run still stores nothing twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess

from .conftest import read_store, run_crawl

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_ledger_is_set_aside_and_rebuilt_from_the_store(
    sandbox_site: SandboxProcess, tmp_path: Path, damage: str
) -> None:
    entries = build_catalog(40, 7).entries("civitai")[:6]
    urls = tmp_path / "urls.jsonl"
    urls.write_text("".join(json.dumps({"url": sandbox_site.url(e.image_path)}) + "\n" for e in entries))
    store = tmp_path / "store"
    args = {"input": str(urls)}
    first = run_crawl("urls", store=store, args=args)
    stored = first.stats["imagecrawl/store/rows_committed"]
    assert stored >= 5

    ledger = store / ".imagecrawl" / "state" / "ledger.sqlite3"
    if damage == "garbage":
        ledger.write_bytes(b"this is not a database " * 200)
    else:
        ledger.write_bytes(ledger.read_bytes()[:100])  # the header torn mid-way
    for extra in ("-wal", "-shm"):
        ledger.with_name(ledger.name + extra).unlink(missing_ok=True)

    second = run_crawl("urls", store=store, args=args)
    [line] = [x for x in second.stderr.splitlines() if "is corrupt" in x]
    assert "set aside as" in line and "rebuilt from the store" in line
    aside = [p for p in ledger.parent.glob("ledger.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1
    assert second.stats.get("imagecrawl/store/rows_committed", 0) == 0  # nothing stored twice
    assert second.stats["imagecrawl/dedupe/reconciled_shards"] >= 1
    ids = Counter(r["id"] for r in read_store(store, columns=["id"]).to_pylist())
    assert sum(ids.values()) == stored and max(ids.values()) == 1
