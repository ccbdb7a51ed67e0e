"""The sandbox server, exercised over real loopback HTTP in a subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import make_mocked_request
from parsel import Selector
from PIL import Image

from imagecrawl.pages import gallery as gallery_pages
from tests import static_site
from tests.sandbox import server
from tests.sandbox.catalog import (
    CATALOG_NOW,
    SOURCES,
    Catalog,
    Entry,
    build_catalog,
    render_image,
)
from tests.sandbox.config import CATALOG_KEY, SandboxConfig
from tests.sandbox.markup import SANDBOX_GALLERY, gallery_detail, gallery_listing
from tests.sandbox.server import main as server_main
from tests.sandbox.sites import aipref
from tests.sandbox.sites.gallery import gallery_item
from tests.sandbox.testing import SandboxProcess, SandboxStartError, sandbox, start_sandbox

from .servers import SandboxFactory

ITEMS = 60
SEED = 7
PAGE_SIZE = 9


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(ITEMS, SEED)


@pytest.fixture(scope="module")
def sb(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=ITEMS, seed=SEED, extra_args=["--page-size", str(PAGE_SIZE)])


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def get_json(url: str) -> Any:
    status, headers, body = fetch(url)
    assert status == 200, (url, body)
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


def walk_civitai(sb: SandboxProcess, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        page = get_json(sb.url("api/v1/images?" + urlencode(q)))
        items.extend(page["items"])
        cursor = page["metadata"].get("nextCursor")
        if cursor is None:
            assert "nextPage" not in page["metadata"]
            return items
        assert page["metadata"]["nextPage"].startswith(sb.base_url + "api/v1/images?")
    raise AssertionError("pagination did not end")


# --- process / CLI ---------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("module", ["tests.sandbox", "tests.sandbox.server"])
def test_port_zero_prints_listening_line_and_stops_cleanly(module: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0", "--items", "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("imagecrawl sandbox listening on http://127.0.0.1:")
            url = line.removeprefix("imagecrawl sandbox listening on ").rstrip("\n")
            assert url.endswith("/") and int(url.rsplit(":", 1)[1].rstrip("/")) > 0
            assert fetch(url + "robots.txt")[0] == 200
            proc.send_signal(sig)
            assert proc.wait(timeout=10) == 0
            assert proc.stdout.read() == ""  # exactly one line
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "example.com"])
def test_non_loopback_host_refused(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["--host", host, "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert "listening" not in captured.out
    assert "refusing" in captured.err or "must be an IP" in captured.err


@pytest.mark.e2e
def test_busy_port_and_bad_log_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert server_main(["--port", str(port), "--items", "1"]) == 1
    assert "cannot listen" in capsys.readouterr().err
    assert server_main(["--port", "0", "--log", str(tmp_path / "missing" / "log.jsonl")]) == 2
    assert "cannot open request log" in capsys.readouterr().err


def test_missing_host_header_uses_socket_address(sb: SandboxProcess) -> None:
    with socket.create_connection(("127.0.0.1", sb.port), timeout=10) as conn:
        conn.sendall(b"GET /api/v1/images?limit=1 HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["items"][0]["url"].startswith(sb.base_url + "images/civitai/")


def test_same_arguments_give_identical_responses(sb: SandboxProcess) -> None:
    with sandbox(items=ITEMS, seed=SEED, extra_args=["--page-size", str(PAGE_SIZE)]) as other:
        for path in (
            "api/v1/images?limit=50&withMeta=true",
            "api/v1/search?q=portrait",
            "gallery/?page=2",
            "robots.txt",
        ):
            a = fetch(sb.url(path))[2].replace(sb.base_url.encode(), b"BASE/")
            b = fetch(other.url(path))[2].replace(other.base_url.encode(), b"BASE/")
            assert a == b, path


# --- civitai ---------------------------------------------------------------------------------------


def test_civitai_pagination_walks_every_entry_once(sb: SandboxProcess, catalog: Catalog) -> None:
    items = walk_civitai(sb, limit="7")
    assert [str(i["id"]) for i in items] == [e.id for e in catalog.entries("civitai")]
    # nextPage works as well
    url: str | None = sb.url("api/v1/images?limit=25&withMeta=true")
    ids = []
    while url:
        page = get_json(url)
        assert len(page["items"]) <= 25
        ids += [i["id"] for i in page["items"]]
        url = page["metadata"].get("nextPage")
        if url:
            assert "withMeta=true" in url and "limit=25" in url
    assert ids == [int(e.id) for e in catalog.entries("civitai")]


def test_civitai_default_limit(sb: SandboxProcess) -> None:
    page = get_json(sb.url("api/v1/images"))
    assert len(page["items"]) == ITEMS  # default 100 > ITEMS
    assert page["metadata"] == {}


@pytest.mark.parametrize(
    "query",
    [
        "limit=201",
        "limit=0",
        "limit=abc",
        "cursor=%%%",
        "cursor=bm9wZQ",
        "nsfw=maybe",
        "period=Decade",
        "sort=Random",
    ],
)
def test_civitai_bad_params_400(sb: SandboxProcess, query: str) -> None:
    status, headers, body = fetch(sb.url("api/v1/images?" + query))
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert "error" in json.loads(body)


def test_civitai_limit_200_ok(sb: SandboxProcess) -> None:
    assert len(get_json(sb.url("api/v1/images?limit=200"))["items"]) == ITEMS


def test_civitai_item_fields_and_meta(sb: SandboxProcess, catalog: Catalog) -> None:
    entries = {e.id: e for e in catalog.entries("civitai")}
    without = get_json(sb.url("api/v1/images?limit=200"))["items"]
    assert all("meta" not in i for i in without)
    assert all("meta" not in i for i in get_json(sb.url("api/v1/images?limit=200&withMeta=false"))["items"])
    items = get_json(sb.url("api/v1/images?limit=200&withMeta=true"))["items"]
    assert len(items) == ITEMS
    assert any(i["meta"] is None for i in items) and any(i["meta"] for i in items)
    for item, plain in zip(items, without, strict=True):
        e = entries[str(item["id"])]
        assert {k: v for k, v in item.items() if k != "meta"} == plain
        assert isinstance(item["id"], int)
        assert item["url"] == sb.base_url.rstrip("/") + e.image_path
        assert (item["width"], item["height"]) == (e.width, e.height)
        assert item["nsfwLevel"] == e.nsfw_level
        assert item["nsfw"] == (e.nsfw_level != "None")
        assert item["browsingLevel"] == {"None": 1, "Soft": 2, "Mature": 4, "X": 8}[e.nsfw_level]
        assert item["createdAt"] == e.created_at
        assert item["username"] == e.username
        assert isinstance(item["postId"], int) and isinstance(item["hash"], str)
        assert isinstance(item["stats"]["likeCount"], int)
        assert item["baseModel"]
        if not e.show_meta:
            assert item["meta"] is None
            continue
        meta = item["meta"]
        assert meta["prompt"] == e.prompt
        assert meta.get("negativePrompt") == e.negative_prompt
        assert ("negativePrompt" in meta) == (e.negative_prompt is not None)
        assert (meta["seed"], meta["steps"], meta["sampler"], meta["cfgScale"]) == (
            e.seed,
            e.steps,
            e.sampler,
            e.cfg_scale,
        )
        assert meta["Size"] == f"{e.width}x{e.height}"
        assert meta["Model"] == e.model
        assert meta["clipSkip"] == 2
        assert meta["resources"] == [{"name": e.model, "type": "model", "hash": e.model_hash}]


@pytest.mark.parametrize(
    ("nsfw", "allowed"),
    [
        (None, {"None", "Soft", "Mature", "X"}),
        ("true", {"None", "Soft", "Mature", "X"}),
        ("false", {"None"}),
        ("None", {"None"}),
        ("Soft", {"None", "Soft"}),
        ("Mature", {"None", "Soft", "Mature"}),
        ("X", {"None", "Soft", "Mature", "X"}),
    ],
)
def test_civitai_nsfw_filter(sb: SandboxProcess, catalog: Catalog, nsfw: str | None, allowed: set[str]) -> None:
    params = {"limit": "200"} if nsfw is None else {"limit": "200", "nsfw": nsfw}
    items = walk_civitai(sb, **params)
    assert [str(i["id"]) for i in items] == [e.id for e in catalog.entries("civitai") if e.nsfw_level in allowed]


def test_civitai_catalog_has_nsfw_variety(catalog: Catalog) -> None:
    levels = {e.nsfw_level for e in catalog.entries("civitai")}
    assert "None" in levels and len(levels) >= 3


def test_civitai_period_username_sort(sb: SandboxProcess, catalog: Catalog) -> None:
    entries = catalog.entries("civitai")
    for period, days in (("Day", 1), ("Week", 7), ("Month", 30), ("Year", 365)):
        since = (CATALOG_NOW - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        got = [str(i["id"]) for i in walk_civitai(sb, limit="10", period=period)]
        assert got == [e.id for e in entries if e.created_at >= since], period
    assert len(walk_civitai(sb, period="AllTime")) == ITEMS
    user = entries[3].username
    got = [str(i["id"]) for i in walk_civitai(sb, username=user)]
    assert got == [e.id for e in entries if e.username == user]
    for sort in ("Newest", "Most Reactions", "Most Comments"):
        a = [i["id"] for i in walk_civitai(sb, limit="11", sort=sort)]
        assert sorted(a) == sorted(int(e.id) for e in entries)
        assert a == [i["id"] for i in walk_civitai(sb, limit="200", sort=sort)]
    comments = [i["stats"]["commentCount"] for i in walk_civitai(sb, sort="Most Comments")]
    assert comments == sorted(comments, reverse=True)


# --- images ----------------------------------------------------------------------------------------


def _exif_infotext(img: Image.Image) -> str | None:
    comment = img.getexif().get_ifd(0x8769).get(0x9286)
    if comment is None:
        return None
    assert comment[:8] == b"UNICODE\0"
    return bytes(comment[8:]).decode("utf-16-be")


@pytest.mark.parametrize("source", SOURCES)
def test_images_served(sb: SandboxProcess, catalog: Catalog, source: str) -> None:
    bodies: dict[str, bytes] = {}
    entries = catalog.entries(source)
    for e in entries:
        status, headers, body = fetch(sb.url(e.image_path))
        assert status == 200, e.image_path
        assert (
            headers["Content-Type"] == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[e.image_format]
        )
        assert int(headers["Content-Length"]) == len(body)
        assert body == render_image(catalog, e)
        img = Image.open(io.BytesIO(body))
        assert img.format == e.image_format
        assert img.size == (e.width, e.height)
        text = img.info.get("parameters") if e.image_format == "PNG" else _exif_infotext(img)
        assert text == (e.infotext() if e.embed_metadata else None), e.id
        bodies[e.id] = body
    assert any(e.same_bytes_as for e in entries) or source != "civitai"
    for e in entries:
        if e.same_bytes_as:
            assert bodies[e.id] == bodies[e.same_bytes_as]
        if e.copy_of:
            assert bodies[e.id] != bodies[e.copy_of]


def test_image_404s(sb: SandboxProcess, catalog: Catalog) -> None:
    e = catalog.entries("civitai")[0]
    wrong_ext = "webp" if e.ext != "webp" else "png"
    for path in (
        f"/images/civitai/{e.id}.{wrong_ext}",
        f"/images/civitai/{e.id}",
        "/images/civitai/999.png",
        f"/images/lexica/{e.id}.{e.ext}",
        f"/images/nope/{e.id}.{e.ext}",
        "/images/civitai/",
        "/nope",
    ):
        assert fetch(sb.url(path))[0] == 404, path


def test_head_image(sb: SandboxProcess, catalog: Catalog) -> None:
    e = catalog.entries("gallery")[0]
    req = urllib.request.Request(sb.url(e.image_path), method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(render_image(catalog, e))
        assert resp.read() == b""


# --- lexica ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["portrait", "landscape", "cat", "CAT oil", "東京", "zzzz", "a"])
def test_lexica_search_matches_catalog(sb: SandboxProcess, catalog: Catalog, q: str) -> None:
    images = get_json(sb.url("api/v1/search?q=" + quote(q)))["images"]
    expected = catalog.lexica_search(q)
    assert [i["id"] for i in images] == [e.id for e in expected]
    base = sb.base_url.rstrip("/")
    for img, e in zip(images, expected, strict=True):
        assert img["src"] == img["srcSmall"] == base + e.image_path
        assert img["gallery"].startswith(sb.base_url)
        assert img["prompt"] == e.prompt
        assert (img["width"], img["height"]) == (e.width, e.height)
        assert img["seed"] == str(e.seed)
        assert img["guidance"] == e.cfg_scale
        assert img["grid"] is False
        assert img["model"] == "lexica-aperture-v3"
        assert img["nsfw"] == (e.nsfw_level != "None")
        assert isinstance(img["promptid"], str)


def test_lexica_common_words_have_hits(sb: SandboxProcess) -> None:
    for q in ("portrait", "landscape", "cat"):
        assert len(get_json(sb.url("api/v1/search?q=" + q))["images"]) >= 5


@pytest.mark.parametrize("query", ["", "q=", "q=%20%20"])
def test_lexica_missing_query_400(sb: SandboxProcess, query: str) -> None:
    status, _, body = fetch(sb.url("api/v1/search?" + query))
    assert status == 400
    assert "error" in json.loads(body)


# --- gallery ---------------------------------------------------------------------------------------


def test_gallery_listing_links_every_entry_once(sb: SandboxProcess, catalog: Catalog) -> None:
    url: str | None = sb.url("gallery/")
    hrefs: list[str] = []
    pages = 0
    while url:
        status, headers, body = fetch(url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        sel = Selector(text=body.decode("utf-8"))
        cards = sel.css("div.grid a.card")
        assert 0 < len(cards) <= PAGE_SIZE
        for card in cards:
            hrefs.append(card.attrib["href"])
            src = card.css("img.thumb::attr(src)").get()
            assert src is not None and src.startswith("/images/gallery/")
        pages += 1
        nxt = sel.css('a.next[rel="next"]::attr(href)').get()
        url = sb.url(nxt) if nxt else None
        if nxt:
            assert nxt == f"/gallery/?page={pages + 1}"
    entries = catalog.entries("gallery")
    assert hrefs == [f"/gallery/item/{e.id}" for e in entries]
    assert pages == -(-ITEMS // PAGE_SIZE)
    assert fetch(sb.url(f"gallery/?page={pages}"))[0] == 200
    for bad in (f"gallery/?page={pages + 1}", "gallery/?page=0", "gallery/?page=-1", "gallery/?page=x"):
        assert fetch(sb.url(bad))[0] == 404, bad


def _text(sel: Selector, css: str) -> str | None:
    nodes = sel.css(css)
    if not nodes:
        return None
    return "".join(nodes[0].css("::text").getall())


def _check_detail(sb: SandboxProcess, e: Entry) -> None:
    status, _, body = fetch(sb.url(f"gallery/item/{quote(e.id)}"))
    assert status == 200
    sel = Selector(text=body.decode("utf-8"))
    img = sel.css("figure.artwork img.main")
    assert img.attrib["src"] == e.image_path
    assert (int(img.attrib["width"]), int(img.attrib["height"])) == (e.width, e.height)
    if not e.show_meta:
        assert not sel.css("p.prompt") and not sel.css("p.negative-prompt") and not sel.css("dl.params")
        return
    assert _text(sel, "p.prompt") == e.prompt
    assert _text(sel, "p.negative-prompt") == e.negative_prompt
    dts = sel.css("dl.params dt::text").getall()
    dds = sel.css("dl.params dd::text").getall()
    assert dict(zip(dts, dds, strict=True)) == {
        "Steps": str(e.steps),
        "Sampler": e.sampler,
        "CFG scale": str(e.cfg_scale),
        "Seed": str(e.seed),
        "Model": e.model,
    }


def test_gallery_detail_pages(sb: SandboxProcess, catalog: Catalog) -> None:
    entries = catalog.entries("gallery")
    assert any(not e.show_meta for e in entries)
    for e in entries:
        _check_detail(sb, e)
    assert fetch(sb.url("gallery/item/no-such-item"))[0] == 404


def test_gallery_detail_escapes_html() -> None:
    """Markup in prompts is escaped and comes back exactly (handler called in-process)."""
    cat = build_catalog(5, seed=0)
    orig = next(e for e in cat.entries("gallery") if e.show_meta)
    e = dataclasses.replace(orig, prompt='<b>"cat" & dog</b>\n<script>x</script>', negative_prompt="a<b")
    cat._by_id[("gallery", e.id)] = e
    app = server.create_app(SandboxConfig(items=0))
    app[CATALOG_KEY] = cat
    req = make_mocked_request("GET", f"/gallery/item/{e.id}", match_info={"id": e.id}, app=app)
    resp = asyncio.run(gallery_item(req))
    assert resp.text is not None
    assert "<script>" not in resp.text
    sel = Selector(text=resp.text)
    assert _text(sel, "p.prompt") == e.prompt
    assert _text(sel, "p.negative-prompt") == "a<b"


def test_benchmark_site_pages_share_the_sandbox_renderer(sb: SandboxProcess, catalog: Catalog) -> None:
    """The static benchmark site and the sandbox render the gallery with one renderer: the same
    entries parse to the same hints with the bundled ``sandbox`` profile; only the links differ."""
    profile = gallery_pages.load_profile("sandbox")
    entries = catalog.entries("gallery")
    shown, hidden = next(e for e in entries if e.show_meta), next(e for e in entries if not e.show_meta)
    for e in (shown, hidden):
        url = sb.url(f"gallery/item/{e.id}")
        served = fetch(url)[2].decode("utf-8")
        assert served == gallery_detail(SANDBOX_GALLERY, e)
        static = static_site.detail_html(e)
        assert static == gallery_detail(static_site.STATIC_GALLERY, e)
        from_sandbox, healthy = gallery_pages.parse_detail(served, url, profile)
        from_static, _ = gallery_pages.parse_detail(static, url, profile)
        assert healthy is not False
        assert from_static == from_sandbox
        assert from_sandbox.hints.source_id == e.id
        assert from_sandbox.hints.prompt == (e.prompt if e.show_meta else None)
    n_pages = -(-ITEMS // PAGE_SIZE)
    chunk = entries[PAGE_SIZE : 2 * PAGE_SIZE]
    served = fetch(sb.url("gallery/?page=2"))[2].decode("utf-8")
    assert served == gallery_listing(SANDBOX_GALLERY, chunk, 2, n_pages)
    static = static_site.listing_html(chunk, 2, n_pages)
    listing = gallery_pages.parse_listing(served, sb.url("gallery/?page=2"), profile)
    static_listing = gallery_pages.parse_listing(static, sb.url("gallery/page/2.html"), profile)
    assert static_listing.detail_urls == listing.detail_urls == [sb.url(f"gallery/item/{e.id}") for e in chunk]
    assert listing.next_url == sb.url("gallery/?page=3")
    assert static_listing.next_url == sb.url("gallery/page/3.html")


# --- robots, private, index, log -------------------------------------------------------------------


def test_robots_and_private(sb: SandboxProcess) -> None:
    status, headers, body = fetch(sb.url("robots.txt"))
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    sitemap = f"\nSitemap: {sb.url('sitemaps/index.xml')}\n"
    assert body.decode() == "User-agent: *\nDisallow: /private/\n" + aipref.robots_lines(None) + sitemap
    assert fetch(sb.url("private/staff.html"))[0] == 200
    first = Selector(text=fetch(sb.url("gallery/"))[2].decode())
    assert first.css('a[href^="/private/"]')
    assert not first.css('a.card[href^="/private/"]')


@pytest.mark.e2e
def test_crawl_delay_flag() -> None:
    with sandbox(items=2, extra_args=["--crawl-delay", "1.5"]) as other:
        body = fetch(other.url("robots.txt"))[2].decode()
    sitemap = f"\nSitemap: {other.url('sitemaps/index.xml')}\n"
    assert body == "User-agent: *\nDisallow: /private/\nCrawl-delay: 1.5\n" + aipref.robots_lines(None) + sitemap


def test_index_links(sb: SandboxProcess) -> None:
    status, _, body = fetch(sb.base_url)
    assert status == 200
    links = Selector(text=body.decode()).css("a::attr(href)").getall()
    assert "/gallery/" in links and "/robots.txt" in links
    assert any(link.startswith("/api/v1/images") for link in links)
    assert any(link.startswith("/api/v1/search") for link in links)


def test_request_log(sb: SandboxProcess, catalog: Catalog) -> None:
    ua = f"sandbox-log-test/{time.time()}"
    e = catalog.entries("civitai")[0]
    t0 = time.time()
    urls = [e.image_path, "/api/v1/images?limit=3&withMeta=true", "/gallery/item/nope", "/robots.txt"]
    bodies = [fetch(sb.url(u), {"User-Agent": ua}) for u in urls]
    records = sb.wait_for_requests(len(urls), predicate=lambda r: r["ua"] == ua)
    assert len(records) == len(urls)
    for rec, url, (status, _, body) in zip(records, urls, bodies, strict=True):
        path, _, query = url.partition("?")
        assert rec["method"] == "GET"
        assert rec["path"] == path
        assert rec["query"] == query
        assert rec["status"] == status
        assert rec["bytes"] == len(body)
        assert rec["remote"] == "127.0.0.1"
        assert t0 - 1 <= rec["t"] <= time.time() + 1
    assert [r["status"] for r in records] == [200, 200, 404, 200]


@pytest.mark.e2e
def test_start_sandbox_reports_failure() -> None:
    with pytest.raises(SandboxStartError):
        start_sandbox(items=1, extra_args=["--page-size", "0"], timeout=10)
