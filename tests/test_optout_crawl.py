"""Every opt-out mechanism, end to end: ``scrapy crawl`` against the sandbox's /optout/ pages, judged
by the server's own request log (what was requested, how many body bytes were really sent) and by the
dataset that was committed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagecrawl import __version__
from tests.conftest import CrawlResult, read_store, run_crawl
from tests.sandbox.payloads import optout_png
from tests.sandbox.sites.optout import IMAGES_PER_PAGE
from tests.sandbox.streaming import CHUNK_BYTES
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e

SITE = {"SPIDER_MODULES": "tests.sitespider"}


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=5, extra_args=["--crawl-delay", "0.01"], name="optout-site")


def crawl(site: SandboxProcess, store: Path, **settings: Any) -> tuple[CrawlResult, list[dict[str, Any]]]:
    before = len(site.requests())
    result = run_crawl("site", store=store, args={"start": site.url("/optout/")}, settings={**SITE, **settings})
    return result, site.requests()[before:]


@pytest.fixture(scope="module")
def default_crawl(
    site: SandboxProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CrawlResult, list[dict[str, Any]], Path]:
    store = tmp_path_factory.mktemp("optout-store")
    result, log = crawl(site, store, IMAGECRAWL_CONTACT="ops@example.org")
    return result, log, store


def by_path(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in log:
        out.setdefault(record["path"], []).append(record)
    return out


def case_paths(case: str, n: int = 2) -> list[str]:
    return [f"/optout/img/{case}/{i}.png" for i in range(n)]


def full(path: str) -> int:
    return len(optout_png(path))


OPTED_OUT_AT_HEADERS = case_paths("xrobots-noai") + case_paths("xrobots-token") + case_paths("tdm-header")
NEVER_REQUESTED = (
    case_paths("tdm-file")
    + [f"/private/optout-{i}.png" for i in range(2)]
    + [p for c in ("meta-noai", "meta-token", "tdm-meta", "xrobots") for p in case_paths(f"on-{c}", IMAGES_PER_PAGE)]
)
ALLOWED = (
    case_paths("allowed")
    + case_paths("xrobots-other")
    + case_paths("xrobots-noindex")
    + case_paths("on-plain", IMAGES_PER_PAGE)
    + case_paths("on-tdm-meta-lifted", IMAGES_PER_PAGE)
)


def test_header_optouts_never_receive_the_body(default_crawl: Any) -> None:
    _, log, _ = default_crawl
    paths = by_path(log)
    for path in OPTED_OUT_AT_HEADERS:
        assert len(paths[path]) == 1, path  # one header exchange, no retry
        sent = paths[path][0]["bytes"]
        assert sent < CHUNK_BYTES < full(path), (path, sent)


def test_file_robots_and_page_optouts_are_never_requested(default_crawl: Any) -> None:
    _, log, _ = default_crawl
    paths = by_path(log)
    assert "/robots.txt" in paths and "/.well-known/tdmrep.json" in paths
    assert len(paths["/.well-known/tdmrep.json"]) == 1  # fetched once per site, then cached
    for path in NEVER_REQUESTED:
        assert path not in paths, path


def test_allowed_images_are_fetched_whole_and_stored(default_crawl: Any) -> None:
    result, log, store = default_crawl
    paths = by_path(log)
    for path in ALLOWED:
        assert [r["bytes"] for r in paths[path]] == [full(path)], path
    urls = {u.split("/", 3)[3] for u in read_store(store, ["image_url"]).column("image_url").to_pylist()}
    assert urls == {p.lstrip("/") for p in ALLOWED}
    assert result.stats["item_scraped_count"] == len(ALLOWED)


def test_every_skip_is_counted_by_reason(default_crawl: Any) -> None:
    result, _, _ = default_crawl
    subtree = {k: v for k, v in result.stats.items() if k.startswith("imagecrawl/optout/")}
    assert subtree == {
        "imagecrawl/optout/robots_txt": 2,
        "imagecrawl/optout/x_robots_tag": 4 + IMAGES_PER_PAGE,  # 2 noai + 2 token + the xrobots page
        "imagecrawl/optout/tdmrep_header": 2,
        "imagecrawl/optout/tdmrep_file": 2,
        "imagecrawl/optout/meta_robots": 2 * IMAGES_PER_PAGE,  # meta-noai + meta-token pages
        "imagecrawl/optout/tdmrep_meta": IMAGES_PER_PAGE,
        "imagecrawl/optout/skipped": 10 + 4 * IMAGES_PER_PAGE,
        "imagecrawl/optout/pages/meta_robots": 2,
        "imagecrawl/optout/pages/x_robots_tag": 1,
        "imagecrawl/optout/pages/tdmrep_meta": 1,
        "imagecrawl/optout/tdmrep/status/200": 1,
    }


def test_skips_can_be_listed_after_the_crawl(default_crawl: Any) -> None:
    _, _, store = default_crawl
    lines = [json.loads(line) for line in (store / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    listed = {(r["reason"], r["url"].split("/", 3)[3]) for r in lines}
    assert ("tdmrep_file", "optout/img/tdm-file/0.png") in listed
    assert ("robots_txt", "private/optout-1.png") in listed
    assert ("x_robots_tag", "optout/img/xrobots-token/0.png") in listed
    assert ("meta_robots", "optout/img/on-meta-token/2.png") in listed
    assert {p.lstrip("/") for _, p in listed} == {p.lstrip("/") for p in OPTED_OUT_AT_HEADERS + NEVER_REQUESTED}
    page_skips = [r for r in lines if r["reason"] == "tdmrep_meta"]
    assert all(r["page"].endswith("/optout/page/tdm-meta") for r in page_skips)


def test_identity_and_crawl_delay_handed_to_pacing(default_crawl: Any, site: SandboxProcess) -> None:
    result, log, _ = default_crawl
    assert {r["ua"] for r in log} == {f"imagecrawl/{__version__} (+ops@example.org)"}
    netloc = site.base_url.split("/")[2]
    assert result.stats["test/crawl_delays"] == {netloc: 0.01}


def test_switching_a_rule_off_is_logged_and_directives_extend(site: SandboxProcess, tmp_path: Path) -> None:
    """One crawl, two settings: TDMRep off (for a site you own) and noindex added to the directives."""
    result, log = crawl(
        site,
        tmp_path,
        IMAGECRAWL_TUNING={"optout_tdmrep": "False"},
        IMAGECRAWL_OPTOUT_DIRECTIVES="noai,noimageai,noindex",
    )
    warning = [line for line in result.stderr.splitlines() if "IMAGECRAWL_TUNING['optout_tdmrep'] is off" in line]
    assert len(warning) == 1 and " WARNING: " in warning[0]
    paths = by_path(log)
    assert "/.well-known/tdmrep.json" not in paths
    for path in case_paths("tdm-header") + case_paths("tdm-file") + case_paths("on-tdm-meta", IMAGES_PER_PAGE):
        assert [r["bytes"] for r in paths[path]] == [full(path)], path
    assert not any(k.startswith("imagecrawl/optout/tdmrep") for k in result.stats)
    for path in case_paths("xrobots-noindex"):
        assert paths[path][0]["bytes"] < CHUNK_BYTES
    assert result.stats["imagecrawl/optout/x_robots_tag"] == 6 + IMAGES_PER_PAGE
    assert result.stats["imagecrawl/optout/robots_txt"] == 2  # the other rules still hold


@pytest.mark.e2e
def test_an_unreachable_robots_txt_disallows_the_site_in_a_real_crawl(tmp_path: Path) -> None:
    """Nothing listens on the port: robots.txt cannot be fetched, so the image is not requested at all
    (Scrapy's own middleware would allow everything and go on to fetch it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: connections are refused
    urls = tmp_path / "urls.jsonl"
    urls.write_text(json.dumps({"url": f"http://127.0.0.1:{port}/a.png"}) + "\n")
    result = run_crawl(
        "urls", store=tmp_path / "store", args={"input": str(urls)}, settings={"RETRY_TIMES": "0"}, check=False
    )
    stats = result.stats
    # nothing was fetched: the crawl says so (exit 4) instead of finishing as if all went well
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert stats.get("imagecrawl/optout/robots_txt_unreachable") == 1
    assert stats.get("imagecrawl/optout/robots_txt") == 1
    assert stats.get("downloader/request_count") == 1  # robots.txt only, never the image
    assert f"robots.txt of 127.0.0.1:{port} is unreachable" in result.stderr
