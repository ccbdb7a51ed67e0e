"""Kill -9 a crawl at several points (while downloading, mid-shard, mid-commit, mid-upload), start the
same command again, and check the store equals an uninterrupted crawl's: same ids, each exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.testing import SandboxProcess

from .conftest import LOOPBACK, REPO, MotoS3, read_store, run_crawl
from .servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS = 60
# Small shards and row groups: many commits, so every crash point is passed several times.
SMALL = {
    "IMAGECRAWL_SHARD_MAX_ROWS": "4",
    "CONCURRENT_REQUESTS": "4",
    "IMAGECRAWL_TUNING": {"row_group_rows": "2", "spool_batch_rows": "1"},
}


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=11, log=False)


@pytest.fixture(scope="module")
def baseline(site: Any, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    store = tmp_path_factory.mktemp("baseline") / "store"
    run_crawl("civitai", store=store, args=_args(site), settings=SMALL)
    ids = [r["id"] for r in read_store(store, columns=["id"]).to_pylist()]
    assert len(ids) == len(set(ids)) > 20
    return set(ids)


def _args(site: Any) -> dict[str, Any]:
    return {"api_url": site.base_url.rstrip("/"), "limit": 5}


def _assert_exactly_once(store: str | Path, baseline: set[str], env: dict[str, str] | None = None) -> None:
    rows = read_store(store, columns=["id", "image_sha256"], env=env).to_pylist()
    ids = Counter(r["id"] for r in rows)
    assert [i for i, n in ids.items() if n > 1] == []
    assert len({r["image_sha256"] for r in rows}) == len(rows)
    assert set(ids) == baseline, (sorted(baseline - set(ids)), sorted(set(ids) - baseline))


def _killed_run(
    site: Any,
    store: Path | str,
    jobdir: Path,
    failpoint: str,
    extra: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    result = run_crawl(
        "civitai",
        store=store,
        args=_args(site),
        settings=merge_settings(SMALL, {"JOBDIR": str(jobdir)}, extra or {}),
        env={"IMAGECRAWL_FAILPOINTS": failpoint, **(env or {})},
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])
    assert f"failpoint {failpoint.split(':')[0]} reached" in result.stderr


@pytest.mark.parametrize(
    "failpoint",
    [
        "spool.flushed:6",  # rows spooled, shard not finished
        "shard.row_group.written:3",  # a half-converted shard in the outbox
        "outbox.submit.before_ready:2",  # a finished shard not yet marked ready
        "shard.commit.before:3",  # ready shards waiting in the outbox
        "local.commit.staged:2",  # a staged copy in the store, not yet renamed
        "shard.commit.after:2",  # in the store, not yet in the dedupe ledger
    ],
)
def test_kill_at_commit_points_then_resume(failpoint: str, site: Any, baseline: set[str], tmp_path: Path) -> None:
    store, jobdir = tmp_path / "store", tmp_path / "job"
    _killed_run(site, store, jobdir, failpoint)
    assert not [p for p in store.rglob("*") if p.is_file() and p.suffix == ".parquet" and p.parts[-2][:1] == "_"]
    second = run_crawl(
        "civitai", store=store, args=_args(site), settings=merge_settings(SMALL, {"JOBDIR": str(jobdir)})
    )
    assert second.stats.get("imagecrawl/resume/unclean_restart") == 1
    if failpoint.startswith(("spool.", "shard.row_group")):
        # spooled rows are not downloaded again
        assert second.stats.get("imagecrawl/store/spooled_rows_recovered", 0) >= 1
    _assert_exactly_once(store, baseline)


def test_kill_while_downloading_then_resume(site: Any, baseline: set[str], tmp_path: Path) -> None:
    store, jobdir = tmp_path / "store", tmp_path / "job"
    settings = merge_settings(
        LOOPBACK, SMALL, {"IMAGECRAWL_STORE": str(store), "JOBDIR": str(jobdir), "DOWNLOAD_DELAY": "0.05"}
    )
    cmd = [sys.executable, "-m", "scrapy", "crawl", "civitai"]
    for key, value in _args(site).items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    for key, value in settings.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    for _round in range(2):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        committed = 0
        deadline = time.monotonic() + 60
        # wait until some shards are committed and downloads are under way, then kill -9
        while time.monotonic() < deadline and committed < 2 + _round * 2:
            time.sleep(0.1)
            committed = len(list(store.rglob("part-*.parquet"))) if store.exists() else 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    final = run_crawl("civitai", store=store, args=_args(site), settings=merge_settings(SMALL, {"JOBDIR": str(jobdir)}))
    assert final.stats.get("imagecrawl/resume/unclean_restart") == 1
    _assert_exactly_once(store, baseline)


def test_kill_during_s3_upload_then_resume(site: Any, baseline: set[str], tmp_path: Path, moto_s3: MotoS3) -> None:
    bucket = moto_s3.create_bucket("kill-upload")
    store = f"s3://{bucket}/ds"
    extra = {**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(tmp_path / "state")}
    _killed_run(site, store, tmp_path / "job", "s3.upload.progress:3", extra=extra)
    run_crawl(
        "civitai",
        store=store,
        args=_args(site),
        settings=merge_settings(SMALL, extra, {"JOBDIR": str(tmp_path / "job")}),
    )
    _assert_exactly_once(store, baseline, env=moto_s3.env)
