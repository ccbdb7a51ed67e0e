"""JOBDIR against the sandbox: every spider's requests go into the disk queue, and a crawl stopped with
Ctrl-C (once: a clean stop; twice: an unclean one) and run again with the same command stores every image
exactly once, as the README's resume recipe promises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.crawlers import merge_settings, setting_text

from .conftest import LOOPBACK, REPO, read_store, run_crawl
from .sandbox.catalog import build_catalog
from .sandbox.testing import SandboxProcess
from .servers import SandboxFactory
from .spiders_util import Crawl, run_crawls

pytestmark = pytest.mark.e2e

ITEMS, SEED = 24, 5
#: slow enough that a stop lands mid-crawl: a few images a second, small shards committed often
SLOW = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": "3",
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "3",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "2",
    "CONCURRENT_REQUESTS": "4",
    "IMAGECRAWL_SHARD_MAX_ROWS": "2",
    "IMAGECRAWL_AUTHOR_SALT": "jobdir-test",
    "IMAGECRAWL_NEAR_POLICY": "keep",
    "IMAGECRAWL_TUNING": {"pacing_min_rate_per_second": "1", "spool_batch_rows": "1"},
}


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="jobdir-sandbox", log=False)


@pytest.fixture(scope="module")
def url_list(site: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = build_catalog(ITEMS, SEED)
    entries = catalog.entries("civitai") + catalog.entries("gallery")
    path = tmp_path_factory.mktemp("jobdir-list") / "list.parquet"
    urls = [site.url(e.image_path) for e in entries]
    pq.write_table(pa.table({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))]}), path)
    return path


def spider_args(spider: str, site: SandboxProcess, url_list: Path) -> dict[str, str]:
    return {
        "urls": {"input": str(url_list)},
        "civitai": {"api_url": site.base_url.rstrip("/"), "limit": "5", "nsfw": "all"},
        "gallery": {"profile": "sandbox", "start_url": site.url("gallery/")},
        "sitemap": {"start_url": site.base_url},
    }[spider]


# --- every spider's requests go into the disk queue -------------------------------------------------


def test_every_spiders_requests_are_saved_in_jobdir(site: SandboxProcess, url_list: Path, tmp_path: Path) -> None:
    """The JOBDIR guard takes every scheduled request through ``Request.to_dict``, pickle and back; none
    may fail, and the scheduler keeps every one on disk."""
    api = site.base_url.rstrip("/")
    crawls = [
        Crawl("civitai", "civitai", {"api_url": api, "limit": "10"}),
        Crawl("models", "civitai", {"api_url": api, "endpoint": "models", "limit": "5"}),
        Crawl("lexica", "lexica", {"api_url": api, "q": "portrait"}),
        Crawl("gallery", "gallery", {"profile": "sandbox", "start_url": site.url("gallery/")}),
        Crawl("sitemap", "sitemap", {"start_url": site.base_url}),
        Crawl("sitemap_profile", "sitemap", {"start_url": site.url("sitemaps/pages.xml.gz"), "profile": "sandbox"}),
        Crawl("urls", "urls", {"input": str(url_list)}),
    ]
    for crawl in crawls:
        crawl.settings = {"JOBDIR": str(tmp_path / "jobs" / crawl.name)}
    results = run_crawls(crawls, tmp_path, timeout=240)
    memory_only = ("scheduler/unserializable", "imagecrawl/frontier/unspillable", "imagecrawl/frontier/unserializable")
    for name, result in results.items():
        stats = result.stats
        assert result.error is None, (name, result.error)
        assert result.items, (name, "no item")
        assert stats.get("imagecrawl/jobdir/unserializable", 0) == 0, name
        # whichever scheduler keeps them (the frontier's file, or Scrapy's disk queues): none stays in memory
        for lost in memory_only:
            assert stats.get(lost, 0) == 0, (name, lost)
        assert stats["scheduler/enqueued"] > len(result.items) // 2, name
        if "scheduler/enqueued/disk" in stats:
            assert stats["scheduler/enqueued/disk"] == stats["scheduler/enqueued"], name
    assert "cannot be saved in JOBDIR" not in results["civitai"].log


# --- Ctrl-C, then the same command again ------------------------------------------------------------


def command(spider: str, args: dict[str, str], store: Path, jobdir: Path, stats_file: Path) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in args.items():
        cmd += ["-a", f"{key}={setting_text(value)}"]
    settings = merge_settings(
        LOOPBACK,
        SLOW,
        {"IMAGECRAWL_STORE": str(store), "JOBDIR": str(jobdir), "IMAGECRAWL_STATS_FILE": str(stats_file)},
    )
    for key, value in settings.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    return cmd


def committed_rows(store: Path) -> int:
    if not store.exists():
        return 0
    return sum(pq.read_metadata(p).num_rows for p in store.glob("*/date=*/part-*.parquet"))


def interrupted(cmd: list[str], store: Path, sigints: int, at_rows: int) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, send SIGINT ``sigints`` times once ``at_rows`` rows are committed, wait for the end."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and committed_rows(store) < at_rows:
        time.sleep(0.05)
    assert proc.poll() is None, "the crawl ended before it could be stopped"
    for i in range(sigints):
        if i:
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)


@pytest.fixture(scope="module")
def baselines(site: SandboxProcess, url_list: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """What an uninterrupted crawl of each spider stores: the sha256 of its images (of two records with
    the same image, the one that arrives first is stored, so ids are no fixed answer)."""
    out: dict[str, set[str]] = {}
    tmp = tmp_path_factory.mktemp("jobdir-baselines")
    for spider in ("urls", "civitai", "gallery", "sitemap"):
        store = tmp / spider
        run_crawl(spider, store=store, args=spider_args(spider, site, url_list), settings=SLOW)
        images = [r["image_sha256"] for r in read_store(store, columns=["image_sha256"]).to_pylist()]
        assert len(images) == len(set(images)) >= 12, (spider, len(images))
        out[spider] = set(images)
    return out


@pytest.mark.parametrize("sigints", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("spider", ["urls", "civitai", "gallery", "sitemap"])
def test_ctrl_c_then_the_same_command_stores_every_image_once(
    spider: str, sigints: int, site: SandboxProcess, url_list: Path, baselines: dict[str, set[str]], tmp_path: Path
) -> None:
    store, jobdir, stats_file = tmp_path / "store", tmp_path / "job", tmp_path / "stats.json"
    cmd = command(spider, spider_args(spider, site, url_list), store, jobdir, stats_file)
    first = interrupted(cmd, store, sigints, at_rows=2)
    assert "Traceback" not in first.stderr, first.stderr[-4000:]
    stored_first = committed_rows(store)
    assert stored_first < len(baselines[spider]), "the stop came too late to test anything"
    if sigints == 1:
        assert first.returncode == 0, first.stderr[-3000:]
        stats = json.loads(stats_file.read_text())
        assert stats["finish_reason"] == "shutdown"
        assert stats.get("imagecrawl/jobdir/unserializable", 0) == 0
        assert stats.get("scheduler/unserializable", 0) == 0
        stats_file.unlink()
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Traceback" not in second.stderr, second.stderr[-4000:]
    stats = json.loads(stats_file.read_text())
    assert stats["finish_reason"] == "finished"
    if sigints == 1:
        assert stats.get("imagecrawl/resume/unclean_restart", 0) == 0
        if spider != "urls":  # the saved queue is read back (the urls spider reads its list again)
            resumed = "Resuming the frontier from" in second.stderr or stats.get("scheduler/dequeued/disk", 0) > 0
            assert resumed, second.stderr[-3000:]
    rows = read_store(store, columns=["id", "image_sha256"]).to_pylist()
    ids = Counter(r["id"] for r in rows)
    assert [i for i, n in ids.items() if n > 1] == []
    images = Counter(r["image_sha256"] for r in rows)
    assert [i for i, n in images.items() if n > 1] == []
    assert set(images) == baselines[spider], (
        len(baselines[spider] - set(images)),
        len(set(images) - baselines[spider]),
    )
