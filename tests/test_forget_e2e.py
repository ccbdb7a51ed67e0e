"""``imagecrawl forget`` as a user runs it, in a subprocess: killed with SIGKILL at each of its named
crash points (``imagecrawl/failpoints.py``), then run again with the same command, on a local folder and
on moto's S3 server. After the kill the store is consistent (every shard old or new: no row selected
twice, no other row missing); after the rerun it holds exactly the rows that were not selected, with one
audit record and one tombstone per removed row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.forget.tombstones import TombstoneTable
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore, S3Config, S3Store
from tests.conftest import REPO
from tests.crawlers import setting_text
from tests.forget_util import SALT, build_store, sha_of, store_rows

from .servers import MotoS3

pytestmark = pytest.mark.e2e

SHARDS, ROWS = 4, 20
#: other.test is row n % 4 == 3 (5 rows a shard); the whole last shard goes by a --from file (deleted)
LAST = range((SHARDS - 1) * ROWS, SHARDS * ROWS)
SELECTED = {n for n in range(SHARDS * ROWS) if n % 4 == 3} | set(LAST)


def forget_cmd(store: str, selectors_file: Path, settings: dict[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "imagecrawl.cli", "forget", store, "--site", "other.test"]
    cmd += ["--from", str(selectors_file), "--reason", "takedown #12"]
    for key, value in settings.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    return cmd


def run(cmd: list[str], failpoint: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("IMAGECRAWL_FAILPOINTS", None)
    if failpoint:
        full_env["IMAGECRAWL_FAILPOINTS"] = failpoint
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=full_env)


def selectors_file(tmp_path: Path) -> Path:
    path = tmp_path / "takedown.txt"
    path.write_text("".join(f"sha256 {sha_of(n)}\n" for n in LAST))
    return path


def check_consistent(store: Any) -> None:
    """Between a kill and the rerun: no duplicate, no unselected row missing, each shard all-or-nothing."""
    rows = store_rows(store)
    counts = Counter(rows.column("id").to_pylist())
    assert max(counts.values()) == 1
    present = {int(i.split(":")[1]) for i in counts}
    assert set(range(SHARDS * ROWS)) - SELECTED <= present
    for shard in range(SHARDS):
        chosen = {n for n in SELECTED if n // ROWS == shard}
        assert chosen <= present or not (chosen & present), f"shard {shard} half rewritten"


def check_done(store: Any, state: Path) -> None:
    rows = store_rows(store)
    got = rows.column("id").to_pylist()
    assert len(got) == len(set(got))
    assert {int(i.split(":")[1]) for i in got} == set(range(SHARDS * ROWS)) - SELECTED
    records = [json.loads(store.open(k).read()) for k in store.list_keys(".imagecrawl/audit/forget/")]
    assert len(records) == 1
    (record,) = records
    assert record["rows_removed"] == len(SELECTED) and record["reason"] == "takedown #12"
    assert len(record["shards_rewritten"]) == SHARDS - 1 and len(record["shards_deleted"]) == 1
    assert list((state / "forget").glob("*.json")) == []
    table = TombstoneTable.at(state / "ledger.sqlite3")
    try:
        assert {t.sha256 for t in table} == {sha_of(n) for n in SELECTED}
    finally:
        table.close()


POINTS = [
    "forget.planned",
    "forget.tombstoned",
    "forget.shard.written:1",
    "forget.shard.written:2",
    "forget.shard.committed:1",
    "forget.shard.committed:3",
    "forget.shard.before_delete",
    "local.commit.staged:2",
    "forget.ledger.done",
    "forget.audited",
]


@pytest.mark.parametrize("failpoint", POINTS)
def test_kill_9_then_the_same_command_local(tmp_path: Path, failpoint: str) -> None:
    store = LocalStore(tmp_path / "store")
    build_store(store, shards=SHARDS, rows_per_shard=ROWS)
    state = state_dir_for(str(tmp_path / "store"))
    state.mkdir(parents=True)
    (state / "author_salt").write_text(SALT.hex())
    cmd = forget_cmd(str(store.root), selectors_file(tmp_path), {})
    killed = run(cmd, failpoint)
    assert killed.returncode == -9, killed.stderr
    check_consistent(store)
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    check_done(store, state)
    assert f"removed {len(SELECTED)} of" in again.stdout


@pytest.mark.parametrize("failpoint", ["forget.shard.committed:2", "s3.upload.progress:2", "forget.audited"])
def test_kill_9_then_the_same_command_s3(tmp_path: Path, moto_s3: MotoS3, failpoint: str) -> None:
    bucket = moto_s3.create_bucket(f"forget-{failpoint.replace('.', '-').replace(':', '-')}")
    url = f"s3://{bucket}/datasets/v1"
    env = moto_s3.env
    store = S3Store(
        url,
        S3Config(
            endpoint_url=env["AWS_ENDPOINT_URL"],
            access_key_id="testing",
            secret_access_key="testing",
            region_name="us-east-1",
        ),
    )
    build_store(store, shards=SHARDS, rows_per_shard=ROWS)
    state = tmp_path / "state"
    settings = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(state), "IMAGECRAWL_AUTHOR_SALT": SALT.decode()}
    cmd = forget_cmd(url, selectors_file(tmp_path), settings)
    dry = run([*cmd, "--dry-run", "--json"])
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["rows"] == len(SELECTED) and len(plan["shards"]) == SHARDS
    killed = run(cmd, failpoint)
    assert killed.returncode == -9, killed.stderr
    check_consistent(store)
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    check_done(store, state)


def test_store_trouble_is_one_line_exit_3(tmp_path: Path, moto_s3: MotoS3) -> None:
    settings = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(tmp_path / "state")}
    cmd = forget_cmd("s3://no-such-bucket/x", selectors_file(tmp_path), settings)
    done = run(cmd)
    assert done.returncode == 3
    assert done.stderr.strip().count("\n") == 0 and "no-such-bucket" in done.stderr, done.stderr
    # a Redis server that does not answer (a distributed crawl's URL): store trouble too, in the crawl's words
    store = tmp_path / "local"
    store.mkdir()
    redis_down = ["-s", "IMAGECRAWL_REDIS_URL=redis://127.0.0.1:9/0"]
    down = run(
        [
            sys.executable,
            "-m",
            "imagecrawl.cli",
            "forget",
            str(store),
            "--site",
            "a.example",
            "--reason",
            "r",
            *redis_down,
        ]
    )
    assert down.returncode == 3, down.stderr
    assert down.stderr.strip().count("\n") == 0, down.stderr
    assert "imagecrawl forget: error: the Redis server of IMAGECRAWL_REDIS_URL" in down.stderr
