"""Several ``scrapy crawl urls`` processes writing into one store at once: staggered starts and a third
process joining midway. Each start recovers only what dead runs left in the shared outbox, so every
row of every process reaches the store, exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.catalog import build_catalog, render_image
from tests.sandbox.testing import SandboxProcess

from .conftest import LOOPBACK, REPO, read_store
from .servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, SEED = 30, 23
# Slow enough that the processes overlap for seconds; one big shard each, spooled row by row, so
# every process holds an open spool (and later a half-converted shard) while the others start.
SLOW = merge_settings(
    LOOPBACK,
    {
        "IMAGECRAWL_MAX_RATE_PER_SITE": "1.2",
        "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "1.2",
        "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "2",
        "IMAGECRAWL_SHARD_MAX_ROWS": "1000",
        "IMAGECRAWL_NEAR_POLICY": "keep",
        "IMAGECRAWL_TUNING": {"pacing_min_rate_per_second": "1", "spool_batch_rows": "1"},
    },
)


@pytest.fixture(scope="module")
def server(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="shared-store")


def _start(spider_args: dict[str, str], store: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "urls"]
    for key, value in spider_args.items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    for key, value in merge_settings(SLOW, {"IMAGECRAWL_STORE": str(store)}).items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    fh = open(log, "wb")  # noqa: SIM115 - closed by the child's exit; the test reads the file
    return subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ))


def test_staggered_processes_and_one_joining_midway_keep_every_row(server: SandboxProcess, tmp_path: Path) -> None:
    catalog = build_catalog(ITEMS, SEED)
    entries = catalog.entries("civitai") + catalog.entries("gallery")
    first = [server.url(e.image_path) for e in catalog.entries("civitai")]
    other = [server.url(e.image_path) for e in catalog.entries("gallery")]
    assert len(first) >= 20 and len(other) >= 10
    shared = tmp_path / "shared.jsonl"
    shared.write_text("".join(json.dumps({"url": u}) + "\n" for u in first))
    joiner = tmp_path / "joiner.jsonl"
    joiner.write_text("".join(json.dumps({"url": u}) + "\n" for u in other))
    store = tmp_path / "store"
    outbox = store / ".imagecrawl" / "state" / "outbox"

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    procs.append(("p0", _start({"input": str(shared), "shard": "0/2"}, store, tmp_path / "p0.log")))
    # the second starts while the first holds an open spool
    _wait_for(lambda: any(outbox.glob("*.spool")), 30)
    procs.append(("p1", _start({"input": str(shared), "shard": "1/2"}, store, tmp_path / "p1.log")))
    _wait_for(lambda: len(list(outbox.glob("*.spool"))) >= 2, 15)
    # the third joins while both are mid-shard
    procs.append(("p2", _start({"input": str(joiner)}, store, tmp_path / "p2.log")))
    codes = {name: proc.wait(timeout=240) for name, proc in procs}
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name, _ in procs}
    for name, text in logs.items():
        assert "Traceback" not in text and "close failure" not in text, f"{name}:\n{text[-4000:]}"
    assert codes == {"p0": 0, "p1": 0, "p2": 0}, {n: t[-3000:] for n, t in logs.items()}
    assert all("still going" in logs[name] or "recover_skipped_live" in logs[name] for name in ("p1", "p2")), (
        "the later processes saw the earlier ones' files"
    )

    # the catalog repeats a few images under other URLs: one row per distinct image
    expected = {hashlib.sha256(render_image(catalog, e)).hexdigest() for e in entries}
    rows = read_store(store, columns=["id", "image_sha256"]).to_pylist()
    shas = Counter(r["image_sha256"] for r in rows)
    assert [s for s, n in shas.items() if n > 1] == []
    assert len({r["id"] for r in rows}) == len(rows)
    assert set(shas) == expected, (len(expected - set(shas)), "rows lost", len(rows))
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == []


def _wait_for(condition: Any, timeout: float) -> None:
    """Stagger the starts: until ``condition`` holds, or ``timeout`` seconds at most."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
