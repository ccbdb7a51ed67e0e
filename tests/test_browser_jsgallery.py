"""JS-rendered galleries: the sandbox's /jsgallery/ lists nothing until JavaScript runs and the page is
scrolled. With ``render = "browser"`` the gallery spider renders it in Debian's headless Chromium
(scrapy-playwright), scrolls until no new items arrive and gets every item, while the font, the video, the
thumbnails and the tracker the page asks for are never fetched; the same profile with ``render = "http"``
gets nothing."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.catalog import build_catalog
from tests.sandbox.sites.jsgallery import PAGE_SIZE
from tests.sandbox.testing import SandboxProcess

from .conftest import REPO, run_crawl
from .distributed_util import check_gallery_store
from .servers import SandboxFactory

pytestmark = pytest.mark.e2e

ITEMS, SEED = 24, 3
PROFILE = REPO / "imagecrawl" / "profiles" / "sandbox-js.toml"


@pytest.fixture(scope="module")
def js_site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    return sandbox_factory.start(items=ITEMS, seed=SEED, name="jsgallery")


def _paths(site: SandboxProcess) -> list[str]:
    return [r["path"] for r in site.requests()]


def test_browser_renders_and_scrolls_the_js_gallery(tmp_path: Path, js_site: SandboxProcess) -> None:
    catalog = build_catalog(ITEMS, SEED)
    entries = catalog.entries("gallery")
    assert len(entries) > 2 * PAGE_SIZE, "the gallery must need more than two scrolls"
    before = len(js_site.requests())
    store = tmp_path / "store"
    result = run_crawl(
        "gallery", store=store, args={"profile": "sandbox-js", "start_url": js_site.url("jsgallery/")}, timeout=240
    )
    stats = result.stats
    check_gallery_store(store, ITEMS, SEED)  # every item (near copies dropped as in any crawl)
    assert stats["imagecrawl/pages/gallery/details"] == len(entries)

    paths = _paths(js_site)[before:]
    # every page of the infinite scroll was loaded by the page's own script, once
    assert paths.count("/jsgallery/api") == math.ceil(len(entries) / PAGE_SIZE)
    # what the crawler does not need never left the browser
    assert not [p for p in paths if p.startswith(("/jsgallery/assets/", "/analytics/"))]
    assert stats["imagecrawl/browser/aborted/font"] >= 1
    assert stats["imagecrawl/browser/aborted/media"] >= 1
    assert stats["imagecrawl/browser/aborted/tracker"] >= 1
    assert stats["imagecrawl/browser/aborted/image"] >= len(entries)  # thumbnails; the crawl fetches images itself
    # each image once, by the crawl itself (a gated Scrapy request), not by the browser
    images = [p for p in paths if p.startswith("/images/")]
    assert len(images) == len(set(images)) == len(entries)


def test_same_gallery_without_browser_gets_nothing(tmp_path: Path, js_site: SandboxProcess) -> None:
    profile = tmp_path / "sandbox-js-http.toml"
    profile.write_text(PROFILE.read_text().replace('render = "browser"', 'render = "http"'))
    before = len(js_site.requests())
    result = run_crawl(
        "gallery", store=tmp_path / "store", args={"profile": str(profile), "start_url": js_site.url("jsgallery/")}
    )
    stats: dict[str, Any] = result.stats
    assert stats.get("imagecrawl/pages/gallery/details", 0) == 0
    assert stats.get("imagecrawl/parquet/rows", 0) == 0
    assert stats["imagecrawl/pages/errors/missing_element"] == 1  # "no detail links on the listing page"
    assert not any(k.startswith("playwright/") for k in stats)
    paths = _paths(js_site)[before:]
    assert "/jsgallery/" in paths and "/jsgallery/api" not in paths


def _trap_crawl(
    tmp_path: Path, js_site: SandboxProcess, *, redirect_hop: bool, main: bool = False
) -> tuple[list[str], dict[str, Any]]:
    """Crawl a page whose iframes and script navigate to a refused address (the guard allows 127.0.0.1
    only; the target listens on 127.0.0.2); return the target's request paths and the crawl's stats."""
    from urllib.parse import quote

    from tests.sandbox.testing import start_sandbox

    target = start_sandbox(items=4, seed=1, log_path=tmp_path / "target.jsonl", extra_args=["--host", "127.0.0.2"])
    try:
        if main:
            # the page Scrapy asks for redirects to the refused address
            start_url = js_site.url(f"redirect?to={quote(target.url('redirected/'), safe='')}")
        elif redirect_hop:
            # an allowed page that redirects to the refused one: Chromium follows the 302 itself
            hop = js_site.url(f"redirect?to={quote(target.url('redirected/'), safe='')}")
            query = f"iframe={quote(hop, safe='')}"
        else:
            iframe, go = target.url("framed/"), target.url("navigated/")
            query = f"iframe={quote(iframe, safe='')}&go={quote(go, safe='')}"
        if not main:
            start_url = js_site.url(f"browsertrap/?{query}")
        result = run_crawl(
            "gallery",
            store=tmp_path / "store",
            args={"profile": "sandbox-js", "start_url": start_url},
            settings={
                "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.1/32",
                "IMAGECRAWL_TUNING": {"browser_scroll_idle_seconds": "1"},
            },
            timeout=240,
            check=False,
        )
        time.sleep(0.5)  # the target's request log is written after each response
        reached = [r["path"] for r in target.requests()]
    finally:
        target.stop()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return reached, result.stats


def test_the_browsers_own_navigations_pass_the_network_guard(tmp_path: Path, js_site: SandboxProcess) -> None:
    """An iframe to a refused address and a script that sets ``location`` to one: neither navigation
    leaves the browser."""
    reached, stats = _trap_crawl(tmp_path, js_site, redirect_hop=False)
    assert reached == [], reached
    assert stats["imagecrawl/browser/aborted/navigation"] >= 2
    assert stats["imagecrawl/netguard/refused/loopback"] >= 2


def test_a_redirect_the_browser_follows_passes_the_network_guard(tmp_path: Path, js_site: SandboxProcess) -> None:
    """An allowed iframe answering 302 to a refused address: the hop is checked like a request of its own
    (Chromium would follow it without asking the route handler) and never leaves the browser."""
    reached, stats = _trap_crawl(tmp_path, js_site, redirect_hop=True)
    assert reached == [], reached
    assert stats["imagecrawl/browser/navigations"] >= 1  # the allowed first hop
    assert stats["imagecrawl/browser/aborted/redirect"] >= 1
    assert stats["imagecrawl/netguard/refused/loopback"] >= 1


def test_a_redirect_of_the_page_scrapy_asked_for_passes_the_network_guard(
    tmp_path: Path, js_site: SandboxProcess
) -> None:
    reached, stats = _trap_crawl(tmp_path, js_site, redirect_hop=True, main=True)
    assert reached == [], reached
    assert stats["imagecrawl/browser/aborted/redirect"] == 1
    assert stats["imagecrawl/netguard/refused/loopback"] >= 1


def test_a_redirect_to_an_allowed_page_is_followed_hop_by_hop(tmp_path: Path, js_site: SandboxProcess) -> None:
    """The same iframe redirecting to an allowed page: the crawler follows the hop itself and the page
    gets the final response."""
    from urllib.parse import quote

    final = js_site.url("jsgallery/?via=redirect")
    hop = js_site.url(f"redirect?to={quote(final, safe='')}")
    before = len(js_site.requests())
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": "sandbox-js", "start_url": js_site.url(f"browsertrap/?iframe={quote(hop, safe='')}")},
        settings={"IMAGECRAWL_TUNING": {"browser_scroll_idle_seconds": "1"}},
        timeout=240,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    time.sleep(0.5)
    paths = [(r["path"], r.get("query", "")) for r in js_site.requests()[before:]]
    assert any(p == "/redirect" for p, _ in paths), paths
    assert any(p == "/jsgallery/" for p, _ in paths), paths  # the hop, fetched once the guard allowed it
    assert result.stats["imagecrawl/browser/redirects"] >= 1
    assert result.stats.get("imagecrawl/browser/aborted/redirect", 0) == 0


def test_a_listing_reached_by_a_redirect_resolves_its_links_against_the_final_url(
    tmp_path: Path, js_site: SandboxProcess
) -> None:
    """The start URL redirects to the gallery: the crawler follows the hop itself, the page keeps the
    first URL, and the ``<base>`` it gets makes every detail link resolve as on the gallery itself."""
    from urllib.parse import quote

    store = tmp_path / "store"
    start = js_site.url(f"redirect?to={quote(js_site.url('jsgallery/'), safe='')}")
    result = run_crawl("gallery", store=store, args={"profile": "sandbox-js", "start_url": start}, timeout=240)
    check_gallery_store(store, ITEMS, SEED)
    assert result.stats["imagecrawl/browser/redirects"] == 1
    assert result.stats["imagecrawl/pages/gallery/details"] == len(build_catalog(ITEMS, SEED).entries("gallery"))
