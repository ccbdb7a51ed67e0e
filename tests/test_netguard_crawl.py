"""The network guard in a real crawl: a redirect to the cloud metadata address is refused before any
connection (every request the downloader sent is in the sandbox's own log), and a host *name* that
resolves to loopback is refused unless IMAGECRAWL_ALLOWED_NETWORKS allows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_crawl
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

SITE = {"SPIDER_MODULES": "tests.sitespider"}


@pytest.fixture(scope="module")
def hostile_site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=5, extra_args=["--hostile"], name="netguard")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/hostile/img/redirect-metadata.png", "metadata"),
        # fd00:ec2::254 and 10.0.0.1 redirects: covered by the hostile crawl and the unit tests.
    ],
)
def test_redirect_to_a_private_address_is_refused(
    hostile_site: SandboxProcess, tmp_path: Path, path: str, reason: str
) -> None:
    before = len(hostile_site.requests())
    result = run_crawl("site", store=tmp_path, args={"start": hostile_site.url(path)}, settings=SITE)
    log = hostile_site.requests()[before:]
    assert result.stats[f"imagecrawl/netguard/refused/{reason}"] == 1
    assert [r["status"] for r in log if r["path"] == path] == [302]
    # Every request that left the downloader reached the sandbox: nothing went to the redirect target.
    assert result.stats["downloader/request_count"] == len(log)
    assert "imagecrawl/identity/refused" not in result.stats  # refused by the guard, crawl went on
    assert result.stats["finish_reason"] == "finished"


def test_name_resolving_to_loopback_is_refused_unless_allowed(hostile_site: SandboxProcess, tmp_path: Path) -> None:
    start = f"http://localhost:{hostile_site.port}/hostile/img/ok-0.png"
    before = len(hostile_site.requests())
    refused = run_crawl(
        "site",
        store=tmp_path / "a",
        args={"start": start},
        settings={**SITE, "IMAGECRAWL_ALLOWED_NETWORKS": ""},
        check=False,
    )
    assert hostile_site.requests()[before:] == []
    assert refused.stats["imagecrawl/netguard/refused/loopback"] >= 1
    # nothing else to do: the crawl says it got nothing, and why (crawl outcome, exit 4)
    assert refused.returncode == 4 and refused.stats["finish_reason"] == "imagecrawl_all_refused"
    assert "Traceback" not in refused.stderr
    assert "downloader/request_count" not in refused.stats

    allowed = run_crawl(
        "site",
        store=tmp_path / "b",
        args={"start": start},
        settings={**SITE, "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8,::1"},
    )
    assert "imagecrawl/netguard/refused" not in allowed.stats
    assert any(r["path"] == "/hostile/img/ok-0.png" for r in hostile_site.requests()[before:])


@pytest.mark.e2e
def test_the_connected_address_is_checked_even_when_the_middleware_check_is_skipped(
    sandbox_site: SandboxProcess, tmp_path: Path
) -> None:
    """The guard's middleware is taken out of this crawl, so only the resolver stands between the
    request and ``localhost``: the address the downloader connects to is refused all the same."""
    from imagecrawl import defaults as project
    from tests.sandbox.catalog import build_catalog

    entry = build_catalog(40, 7).entries("civitai")[0]
    url = sandbox_site.url(entry.image_path).replace("127.0.0.1", "localhost")
    urls = tmp_path / "urls.jsonl"
    urls.write_text(json.dumps({"url": url}) + "\n")
    result = run_crawl(
        "urls",
        store=tmp_path / "store",
        args={"input": str(urls)},
        settings={
            "IMAGECRAWL_ALLOWED_NETWORKS": "",
            "ROBOTSTXT_OBEY": "False",
            "RETRY_TIMES": "0",
            "DOWNLOADER_MIDDLEWARES": json.dumps(
                {
                    **project.DOWNLOADER_MIDDLEWARES,
                    "imagecrawl.guard.downloadermiddlewares.netguard.NetGuardMiddleware": None,
                }
            ),
        },
        check=False,
    )
    # the only request failed: a crawl that got nothing says so (exit 4)
    assert result.returncode == 4, result.stderr[-3000:]
    assert result.stats.get("finish_reason") == "imagecrawl_all_failed"
    assert "Traceback" not in result.stderr
    assert "resolves to 127.0.0.1 (loopback) at connect time" in result.stderr
    assert result.stats.get("downloader/response_count") is None
    assert result.stats.get("item_scraped_count") is None
