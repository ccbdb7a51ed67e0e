"""Secrets set on the command line (``-s AWS_SECRET_ACCESS_KEY=...``) never reach a log line (Scrapy's
"Overridden settings" included), the log file Scrapyd serves, the stats file or the crawl report; and
Scrapy's RemoteControl (an HTTP server that runs Python code) is not running unless turned on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sandbox.catalog import build_catalog
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

from .conftest import read_store, run_crawl

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


def test_a_password_in_a_spider_argument_url_is_in_no_output(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """``-a api_url=http://bob:ApiPass9999@host`` (no secret setting at all): the password is in no log
    line, report, stats file, state file (watermarks, opt-out log) or file of the store. (Scrapy refuses
    a URL with userinfo as an invalid hostname: robots.txt is unreachable, the site is refused and the
    crawl exits 4, with the URL in log lines, the report and the opt-out log; all masked.)"""
    site = sandbox_factory.start(items=30, name="argsecret", extra_args=["--hostile"])
    password = "ApiPass9999"
    port = site.base_url.rstrip("/").rsplit(":", 1)[1]
    store = tmp_path / "store"
    log_file = tmp_path / "job.log"
    result = run_crawl(
        "civitai",
        store=store,
        args={"api_url": f"http://bob:{password}@127.0.0.1:{port}", "max_items": "12", "nsfw": "all"},
        settings={"LOG_FILE": str(log_file), "LOG_LEVEL": "DEBUG", "IMAGECRAWL_MAX_RATE_PER_SITE": "100"},
        check=False,
    )
    assert result.returncode in (0, 4), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    outputs = {"stderr": result.stderr, "stdout": result.stdout, "stats": json.dumps(result.stats)}
    for path in [log_file, *store.rglob("*")]:
        if path.is_file() and path.suffix != ".parquet":
            outputs[str(path)] = path.read_bytes().decode("utf-8", "replace")
    written = [name for name in outputs if name.endswith(("optout.jsonl", ".html", ".json"))]
    assert len(written) >= 3, sorted(outputs)  # the opt-out log and the report were written, and are checked
    assert "bob:***@" in outputs[str(log_file)]  # the URL is logged, masked
    leaked = [name for name, text in outputs.items() if password in text]
    assert leaked == [], leaked
    if result.returncode == 0:
        rows = read_store(store).to_pylist()
        assert not [r["id"] for r in rows if any(isinstance(v, str) and password in v for v in r.values())]
