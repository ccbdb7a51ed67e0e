"""S3 outages: shards wait in the outbox while the endpoint is down and land once it is back; with S3 down
to the end the crawl exits non-zero and the next run uploads the outbox first."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.sandbox.testing import start_sandbox

from .conftest import LOOPBACK, REPO, MotoS3, read_store, run_crawl
from .faultproxy import FaultProxy

FAST_RETRIES = {
    "IMAGECRAWL_SHARD_MAX_ROWS": "5",
    "IMAGECRAWL_COMMIT_RETRY_SECONDS": "0.5",
    "IMAGECRAWL_S3_MAX_ATTEMPTS": "2",
    "IMAGECRAWL_CLOSE_COMMIT_TIMEOUT_SECONDS": "3",
}


@pytest.fixture(scope="module")
def site() -> Any:
    sandbox = start_sandbox(items=50, seed=5)
    yield sandbox
    sandbox.stop()


def _settings(proxy: FaultProxy, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": proxy.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION_NAME": "us-east-1",
        "IMAGECRAWL_STATE_DIR": str(tmp_path / "state"),
        **FAST_RETRIES,
        **extra,
    }


def _expected_ids(site: Any, tmp_path: Path) -> set[str]:
    store = tmp_path / "reference"
    run_crawl("civitai", store=store, args={"api_url": site.base_url.rstrip("/"), "limit": 10})
    return {r["id"] for r in read_store(store, columns=["id"]).to_pylist()}


def test_outage_mid_crawl_then_recovery(site: Any, moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = moto_s3.create_bucket("outage-mid")
    expected = _expected_ids(site, tmp_path)
    with FaultProxy(moto_s3.port) as proxy:
        settings = {
            **LOOPBACK,
            **_settings(proxy, tmp_path, DOWNLOAD_DELAY="0.05"),
            "IMAGECRAWL_STORE": f"s3://{bucket}/d",
        }
        cmd = [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "civitai",
            "-a",
            f"api_url={site.base_url.rstrip('/')}",
            "-a",
            "limit=10",
        ]
        for key, value in settings.items():
            cmd += ["-s", f"{key}={value}"]
        proxy.down = True  # down from the start ...
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # ... until shards have piled up in the outbox, then back
        outbox = tmp_path / "state" / "outbox"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(outbox.glob("*.parquet"))) < 2:
            time.sleep(0.1)
        assert len(list(outbox.glob("*.parquet"))) >= 2, "shards should wait in the outbox while S3 is down"
        assert proxy.refused > 0
        timer = threading.Timer(1.0, lambda: setattr(proxy, "down", False))
        timer.start()
        _, stderr = proc.communicate(timeout=120)
        timer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert "kept in the outbox" in stderr
    rows = read_store(f"s3://{bucket}/d", columns=["id"], env=moto_s3.env).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(expected)
    assert list(outbox.glob("*.parquet")) == []


def test_outage_to_the_end_fails_then_next_run_uploads(site: Any, moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = moto_s3.create_bucket("outage-end")
    store = f"s3://{bucket}/d"
    expected = _expected_ids(site, tmp_path)
    args = {"api_url": site.base_url.rstrip("/"), "limit": 10}
    with FaultProxy(moto_s3.port) as proxy:
        proxy.down = True
        first = run_crawl("civitai", store=store, args=args, settings=_settings(proxy, tmp_path), check=False)
        assert first.returncode == 3, first.stderr[-2000:]
        assert "did not accept" in first.stderr
        waiting = list((tmp_path / "state" / "outbox").glob("*.parquet"))
        assert waiting, "the shards must stay on local disk"
        assert first.stats["imagecrawl/store/outbox_pending"] == len(waiting)
        proxy.down = False
        second = run_crawl("civitai", store=store, args=args, settings=_settings(proxy, tmp_path))
    assert second.stats["imagecrawl/store/recovered"] == len(waiting)
    # the second run found the first run's records waiting: it downloads only images whose bytes duplicate
    # another one (their ids were never stored), and drops them; nothing is lost, nothing written twice
    downloaded = second.stats.get("imagecrawl/media/images", 0)
    assert downloaded == second.stats.get("imagecrawl/dedupe/dropped/sha256", 0)
    assert second.stats["imagecrawl/dedupe/skipped_known/id"] >= len(expected)
    rows = read_store(store, columns=["id"], env=moto_s3.env).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(expected)
