"""imagecrawl as an add-on of someone else's Scrapy project: ``scrapy startproject``, then
``ADDONS = {"imagecrawl.Addon": 100}`` and the store setting, and the project's own spider gets pacing,
bans, opt-outs, the network guard, dedupe and Parquet shards (crawling the sandbox on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.sandbox.testing import SandboxProcess

pytestmark = pytest.mark.e2e

SPIDER = '''
import scrapy

from imagecrawl.records import SourceHints
from imagecrawl.spider import ImageSpider


class PromptsSpider(ImageSpider):
    """The project's own spider: one API page, its images, and one image robots.txt disallows."""

    name = "prompts"

    def __init__(self, api: str = "", **kwargs):
        super().__init__(**kwargs)
        self.api = api

    async def start(self):
        yield scrapy.Request(f"{self.api}/api/v1/images?limit=6&nsfw=X")

    def parse(self, response):
        for item in response.json()["items"]:
            meta = item.get("meta") or {}
            hints = SourceHints(source="mine", source_id=str(item["id"]), prompt=meta.get("prompt"))
            yield self.image_request(item["url"], hints)
        yield self.image_request(f"{self.api}/private/secret.png", SourceHints(source="mine", source_id="private"))
'''


def scrapy_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("scrapy")), *args]


#: what docs/settings.md ("From any Scrapy project") and the README tell a project to add, line for line
DOCUMENTED = """
ADDONS = {"imagecrawl.Addon": 100}
IMAGECRAWL_STORE = "data/"
TWISTED_DNS_RESOLVER = "imagecrawl.guard.resolver.GuardedResolver"  # the network guard at connect time too
from imagecrawl.defaults import FEED_EXPORTERS  # noqa: E402  (-O out.parquet, and feeds without image bytes)
"""
RESOLVER_WARNING = "add TWISTED_DNS_RESOLVER = 'imagecrawl.guard.resolver.GuardedResolver' to the project's settings"


def test_the_documented_lines_are_the_ones_tested() -> None:
    repo = Path(__file__).resolve().parents[1]
    for doc in (repo / "docs" / "settings.md", repo / "README.md"):
        assert DOCUMENTED.strip() in doc.read_text(), doc


def crawl(
    project: Path, api: str, stats_file: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "SCRAPY_SETTINGS_MODULE"}
    proc = subprocess.run(
        scrapy_cmd(
            "crawl",
            "prompts",
            "-a",
            f"api={api}",
            "-s",
            "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8",
            "-s",
            f"IMAGECRAWL_STATS_FILE={stats_file}",
            *extra,
        ),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return proc, stats


def test_a_plain_scrapy_project_with_the_addon(tmp_path: Path, sandbox_site: SandboxProcess) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCRAPY_SETTINGS_MODULE"}
    made = subprocess.run(
        scrapy_cmd("startproject", "theirs"), cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    assert made.returncode == 0, made.stderr
    project = tmp_path / "theirs"
    settings = project / "theirs" / "settings.py"
    store = tmp_path / "store"
    text = settings.read_text()
    assert "ADDONS = {}" in text  # Scrapy's template: nothing of imagecrawl's yet
    # the documented lines, with the test's own store (the rest of Scrapy's template stays)
    lines = DOCUMENTED.replace('"data/"', repr(str(store)))
    settings.write_text(text.replace("ADDONS = {}", "") + lines)
    (project / "theirs" / "spiders" / "prompts.py").write_text(SPIDER)
    api = sandbox_site.base_url.rstrip("/")

    feed = tmp_path / "out.parquet"
    first, stats = crawl(project, api, tmp_path / "first.json", "-O", str(feed))
    assert first.returncode == 0, first.stderr[-4000:]
    assert "Traceback" not in first.stderr, first.stderr[-4000:]
    log = first.stderr
    assert RESOLVER_WARNING not in log  # the project named the guarded resolver
    assert "'TWISTED_DNS_RESOLVER': 'imagecrawl.guard.resolver.GuardedResolver'" in log
    for component in (
        "imagecrawl.pacing.downloadermiddlewares.pacing.PacingMiddleware",
        "imagecrawl.pacing.downloadermiddlewares.bans.BanMiddleware",
        "imagecrawl.guard.downloadermiddlewares.netguard.NetGuardMiddleware",
        "imagecrawl.optout.downloadermiddlewares.robots.RobotsMiddleware",
        "imagecrawl.optout.downloadermiddlewares.optout.OptOutMiddleware",
        "imagecrawl.dedupe.pipelines.DedupePipeline",
        "imagecrawl.storage.pipelines.ParquetPipeline",
    ):
        assert component in log, component
    assert "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware" not in log  # replaced, not doubled
    assert "Network guard allows 127.0.0.0/8" in log
    # every request went through the site-aware frontier and the per-site gate (the frontier grants most)
    assert "'SCHEDULER': 'imagecrawl.pacing.scheduler.FrontierScheduler'" in log
    assert stats["imagecrawl/pacing/requests"] >= 1
    assert stats["imagecrawl/optout/robots_txt"] == 1  # /private/ is disallowed by the sandbox's robots.txt
    assert stats["imagecrawl/dedupe/unique"] == stats["imagecrawl/store/rows_committed"] >= 1
    rows = pq.read_table(sorted(store.rglob("*.parquet"))).to_pylist()
    assert {r["source"] for r in rows} == {"mine"} and len(rows) == stats["imagecrawl/store/rows_committed"]
    assert all(r["image_sha256"] for r in rows) and any(r["prompt"] for r in rows)
    # -O out.parquet: the add-on's Parquet exporter, the image bytes left out (they are in the store)
    exported = pq.read_table(feed).to_pylist()
    assert sorted(r["id"] for r in exported) == sorted(r["id"] for r in rows)
    assert all("image" not in r for r in exported)
    # the project's own settings keep the last word: its DOWNLOAD_DELAY (a floor of pacing)
    assert "'DOWNLOAD_DELAY': 1" in log

    # without the resolver line the crawl runs, with the one WARNING the docs speak of
    settings.write_text(
        settings.read_text().replace('TWISTED_DNS_RESOLVER = "imagecrawl.guard.resolver.GuardedResolver"', "")
    )
    again, stats = crawl(project, api, tmp_path / "again.json")
    assert again.returncode == 0, again.stderr[-4000:]
    assert sum(RESOLVER_WARNING in line for line in again.stderr.splitlines()) == 1, again.stderr[-4000:]
    assert stats["imagecrawl/dedupe/skipped_known/id"] == len(rows)  # the store's images are not fetched again
    assert stats.get("imagecrawl/store/rows_committed", 0) == 0
