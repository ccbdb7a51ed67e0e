"""Secrets set on the command line (``-s AWS_SECRET_ACCESS_KEY=...``) never reach a log line (Scrapy's
"Overridden settings" included), the log file Scrapyd serves, the stats file or the crawl report; and
Scrapy's RemoteControl (an HTTP server that runs Python code) is not running unless turned on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess

from .conftest import run_crawl

pytestmark = pytest.mark.e2e

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE-session-token",
    "IMAGECRAWL_AUTHOR_SALT": "pepper-of-the-salt-9f2c",
}
URL_PASSWORD = "hunter2-url-password"


def test_no_secret_in_logs_stats_file_or_report(sandbox_site: SandboxProcess, tmp_path: Path) -> None:
    entry = build_catalog(40, 7).entries("civitai")[0]
    urls = tmp_path / "urls.jsonl"
    urls.write_text(json.dumps({"url": sandbox_site.url(entry.image_path)}) + "\n")
    store = tmp_path / "store"
    log_file = tmp_path / "job.log"  # what Scrapyd writes and serves over HTTP
    result = run_crawl(
        "urls",
        store=store,
        args={"input": str(urls)},
        settings={
            **SECRETS,
            # a credential inside a URL-valued setting (unused by a local store, logged by Scrapy)
            "AWS_ENDPOINT_URL": f"http://robot:{URL_PASSWORD}@127.0.0.1:9",
            "LOG_FILE": str(log_file),
            "LOG_LEVEL": "DEBUG",
        },
    )
    texts = {
        "log file": log_file.read_text(),
        "stderr": result.stderr,
        "stats file": json.dumps(result.stats),
        **{f"report {p.name}": p.read_text() for p in (store / ".imagecrawl" / "reports").iterdir()},
    }
    assert "Overridden settings" in texts["log file"]
    assert "AWS_SECRET_ACCESS_KEY" in texts["log file"]  # the name is logged, masked
    assert len([n for n in texts if n.startswith("report")]) >= 2
    for where, text in texts.items():
        for secret in [*SECRETS.values(), URL_PASSWORD]:
            assert secret not in text, f"{secret!r} in the {where}"
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in texts["log file"]
    assert "'AWS_ENDPOINT_URL': 'http://robot:***@127.0.0.1:9'" in texts["log file"]
    assert result.stats["item_scraped_count"] == 1
    assert "Enabled extensions" in texts["log file"]
    assert "RemoteControl" not in texts["log file"]
