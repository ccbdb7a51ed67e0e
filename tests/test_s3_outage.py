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

from tests.crawlers import merge_settings, setting_text
from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess

from .conftest import LOOPBACK, REPO, MotoS3, read_store, run_crawl
from .expect import Expected, expected_rows
from .faultproxy import FaultProxy
from .servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, SEED = 50, 5

FAST_RETRIES = {
    "IMAGECRAWL_SHARD_MAX_ROWS": "5",
    "IMAGECRAWL_TUNING": {"commit_retry_seconds": "0.5", "s3_max_attempts": "2", "close_commit_timeout_seconds": "3"},
}


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, log=False)


def _settings(proxy: FaultProxy, tmp_path: Path, **extra: str) -> dict[str, str]:
    return merge_settings(
        {
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION_NAME": "us-east-1",
            "IMAGECRAWL_STATE_DIR": str(tmp_path / "state"),
            "IMAGECRAWL_STORE_PROBE": "False",
        },
        FAST_RETRIES,
        extra,
    )


def _expected_ids(site: Any, tmp_path: Path) -> Expected:
    """Groups of duplicates among the safe civitai entries: exactly one row per group must land."""
    catalog = build_catalog(ITEMS, SEED)
    safe = [e for e in catalog.entries("civitai") if e.nsfw_level == "None"]
    return expected_rows(catalog, safe, lambda e: f"civitai:{e.id}")


def _assert_landed(expected: Expected, store: str, env: dict[str, str]) -> None:
    rows = read_store(store, columns=["id", "image_sha256"], env=env).to_pylist()
    groups = [expected.sha_to_group[r["image_sha256"]] for r in rows]
    assert sorted(groups) == sorted(expected.groups), "every group exactly once"
    assert all(r["id"] in expected.by_id for r in rows)


def test_outage_mid_crawl_then_recovery(site: Any, moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = moto_s3.create_bucket("outage-mid")
    expected = _expected_ids(site, tmp_path)
    with FaultProxy(moto_s3.port) as proxy:
        settings = merge_settings(
            LOOPBACK, _settings(proxy, tmp_path, DOWNLOAD_DELAY="0.05"), {"IMAGECRAWL_STORE": f"s3://{bucket}/d"}
        )
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
            cmd += ["-s", f"{key}={setting_text(value)}"]
        proxy.down = True  # down from the start ...
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # ... until shards have piled up in the outbox, then back
        outbox = tmp_path / "state" / "outbox"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(outbox.glob("*.ready"))) < 2:
            time.sleep(0.1)
        assert len(list(outbox.glob("*.ready"))) >= 2, "shards should wait in the outbox while S3 is down"
        assert proxy.refused > 0
        timer = threading.Timer(1.0, lambda: setattr(proxy, "down", False))
        timer.start()
        _, stderr = proc.communicate(timeout=120)
        timer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert "kept in the outbox" in stderr
    _assert_landed(expected, f"s3://{bucket}/d", moto_s3.env)
    assert list(outbox.glob("*.ready")) == []


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
        waiting = list((tmp_path / "state" / "outbox").glob("*.ready"))
        assert waiting, "the shards must stay on local disk"
        assert first.stats["imagecrawl/store/outbox_pending"] == len(waiting)
        proxy.down = False
        second = run_crawl("civitai", store=store, args=args, settings=_settings(proxy, tmp_path))
    assert second.stats["imagecrawl/store/recovered"] == len(waiting)
    # the second run found the first run's records waiting: it downloads only images whose bytes duplicate
    # another one (their ids were never stored), and drops them; nothing is lost, nothing written twice
    downloaded = second.stats.get("imagecrawl/media/images", 0)
    dropped = sum(second.stats.get(f"imagecrawl/dedupe/dropped/{why}", 0) for why in ("sha256", "near"))
    assert downloaded == dropped
    assert second.stats["imagecrawl/dedupe/skipped_known/id"] >= expected.rows
    _assert_landed(expected, store, moto_s3.env)
