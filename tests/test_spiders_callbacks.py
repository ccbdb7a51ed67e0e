"""Spider callbacks driven offline with saved responses (no network, no reactor): argument handling,
the Civitai models endpoint (real saved responses), cursor loops and malformed pages as counted skips."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
import scrapy
from scrapy.http import HtmlResponse, Request, TextResponse

from spiders.civitai import CivitaiSpider
from spiders.gallery import GallerySpider
from spiders.lexica import LexicaSpider
from spiders.urls import UrlsSpider
from tests.crawlers import make_crawler
from tests.pages_util import FIXTURES

API = "http://127.0.0.1:9"
S = TypeVar("S", bound=scrapy.Spider)


def out_of(callback_output: Any) -> list[Any]:
    """What a callback yields: a sync generator (lexica, urls) or an async one (civitai and gallery ask the
    ledger, on its thread, whether a page's items are known)."""
    if hasattr(callback_output, "__aiter__"):

        async def collect() -> list[Any]:
            return [x async for x in callback_output]

        return asyncio.run(collect())
    return list(callback_output)


def make(cls: type[S], tmp_path: Path, **kwargs: Any) -> S:
    crawler = make_crawler(cls, IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_AUTHOR_SALT="s")
    crawler._apply_settings()
    return cls.from_crawler(crawler, **kwargs)


def stats(spider: scrapy.Spider) -> dict[str, Any]:
    assert spider.crawler.stats is not None
    return {k: v for k, v in spider.crawler.stats.get_stats().items() if k.startswith("imagecrawl/")}


def json_response(url: str, body: bytes | dict[str, Any]) -> TextResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return TextResponse(url, body=raw, headers={"Content-Type": "application/json"}, request=Request(url))


def start_requests(spider: scrapy.Spider) -> list[Request]:
    """Everything ``spider.start()`` yields (no reactor needed: it is a plain async generator)."""

    async def collect() -> list[Request]:
        return [r async for r in spider.start()]

    return asyncio.run(collect())


def start_request(spider: scrapy.Spider) -> Request:
    requests = start_requests(spider)
    assert requests, "no start request"
    return requests[0]


# ---------------------------------------------------------------- civitai


def test_civitai_first_url_and_arguments(tmp_path: Path) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API + "/", limit="50", username="bob", model_id="12")
    request = start_request(spider)
    assert request.url == (
        f"{API}/api/v1/images?limit=50&withMeta=true&nsfw=None&sort=Newest&period=AllTime&username=bob&modelId=12"
    )
    assert request.meta["imagecrawl_kind"] == "page"
    assert "nsfw" not in (start_request(make(CivitaiSpider, tmp_path, api_url=API, nsfw="all"))).url
    assert "nsfw=X" in (start_request(make(CivitaiSpider, tmp_path, api_url=API, nsfw="x"))).url
    for bad, message in [
        ({"limit": "201"}, "at most 200"),
        ({"limit": "0"}, ">= 1"),
        ({"nsfw": "maybe"}, "nsfw"),
        ({"nsfw": ""}, "nsfw"),  # an empty value must not silently drop the safe filter
        ({"endpoint": "posts"}, "endpoint"),
        ({"max_items": "ten"}, "integer"),
        ({"api_url": "civitai.com"}, "api_url"),
        ({"model_id": "abc"}, "model_id"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(CivitaiSpider, tmp_path, **({"api_url": API} | bad))


def test_civitai_models_endpoint_real_responses(tmp_path: Path) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API, endpoint="models")
    request = start_request(spider)
    assert request.url == f"{API}/api/v1/models?limit=100&nsfw=false&sort=Newest&period=AllTime"
    body = (FIXTURES / "civitai" / "civitai_v1_models_list_limit10.json").read_bytes()
    out = out_of(spider.parse_page(json_response(request.url, body)))
    images = [r for r in out if r.meta["imagecrawl_kind"] == "image"]
    pages = [r for r in out if r.meta["imagecrawl_kind"] == "page"]
    assert len(images) == 97
    assert images[0].url.endswith("/5706937.jpeg")
    assert images[0].cb_kwargs["hints"]["source_id"] == "5706937"
    assert images[0].meta["imagecrawl_kind"] == "image"
    # the next page is built from nextCursor on OUR api_url, not the response's nextPage host
    assert [p.url for p in pages] == [f"{request.url}&cursor=37169%7C338034%7C122359"]

    one = make(CivitaiSpider, tmp_path, api_url=API, endpoint="models", model_id="1102")
    request = start_request(one)
    assert request.url == f"{API}/api/v1/models/1102"
    body = (FIXTURES / "civitai" / "civitai_v1_model_1102.json").read_bytes()
    out = out_of(one.parse_page(json_response(request.url, body)))
    assert len(out) == 24 and all(r.cb_kwargs["hints"]["source_id"] for r in out)


def civitai_page(ids: list[int], cursor: str | None, next_page: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if cursor:
        meta["nextCursor"] = cursor
    if next_page:
        meta["nextPage"] = next_page
    return {
        "items": [{"id": i, "url": f"{API}/img/{i}.png", "meta": {"prompt": f"p{i}"}} for i in ids],
        "metadata": meta,
    }


def test_civitai_repeated_cursor_stops_and_is_counted(tmp_path: Path) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API)
    url = (start_request(spider)).url
    out1 = out_of(spider.parse_page(json_response(url, civitai_page([1, 2], "c1"))))
    next_url = out1[-1].url
    assert next_url.endswith("&cursor=c1")
    out2 = out_of(spider.parse_page(json_response(next_url, civitai_page([3], "c1"))))
    assert [r.meta["imagecrawl_kind"] for r in out2] == ["image"]  # the items, but no page with cursor c1 again
    assert stats(spider)["imagecrawl/pages/errors/repeated_cursor"] == 1


def test_civitai_next_page_fallback_and_max_items(tmp_path: Path) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API, max_items="3")
    url = (start_request(spider)).url
    out = out_of(spider.parse_page(json_response(url, civitai_page([1, 2], None, f"{API}/api/v1/images?page=2"))))
    assert out[-1].url == f"{API}/api/v1/images?page=2"
    out = out_of(spider.parse_page(json_response(out[-1].url, civitai_page([3, 4, 5], "c9"))))
    assert [r.url for r in out] == [f"{API}/img/3.png"]  # 3 requested in all: no more images, no next page
    assert spider.requested == 3
    assert start_requests(make(CivitaiSpider, tmp_path, api_url=API, max_items="0")) == []
    assert "limit=3&" in start_request(spider).url  # a page no larger than max_items


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"<html>Cloudflare</html>", "not_json"), (b'{"error": "busy"}', "bad_shape"), (b"[]", "bad_shape")],
)
def test_civitai_bad_pages_are_counted_skips(tmp_path: Path, body: bytes, kind: str) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API)
    url = (start_request(spider)).url
    assert out_of(spider.parse_page(json_response(url, body))) == []
    assert stats(spider) == {f"imagecrawl/pages/errors/{kind}": 1}


def test_civitai_bad_items_are_counted(tmp_path: Path) -> None:
    spider = make(CivitaiSpider, tmp_path, api_url=API)
    url = (start_request(spider)).url
    body = (FIXTURES / "civitai" / "images_page1.json").read_bytes()
    out = out_of(spider.parse_page(json_response(url, body)))
    assert len([r for r in out if r.meta["imagecrawl_kind"] == "image"]) == 6
    assert stats(spider) == {
        "imagecrawl/pages/civitai/pages": 1,
        "imagecrawl/pages/errors/missing_url": 2,
        "imagecrawl/pages/errors/bad_item": 1,
    }


# ---------------------------------------------------------------- lexica


def test_lexica(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="-a q="):
        make(LexicaSpider, tmp_path, api_url=API)
    with pytest.raises(ValueError, match="-a q="):
        make(LexicaSpider, tmp_path, api_url=API, q="  ")
    spider = make(LexicaSpider, tmp_path, api_url=API, q="red fox", max_items="2")
    request = start_request(spider)
    assert request.url == f"{API}/api/v1/search?q=red+fox"
    body = (FIXTURES / "lexica" / "search.json").read_bytes()
    out = out_of(spider.parse_page(json_response(request.url, body)))
    assert len(out) == 2 and out[0].cb_kwargs["hints"]["source"] == "lexica"
    assert out_of(spider.parse_page(json_response(request.url, b"Too many requests"))) == []
    assert stats(spider)["imagecrawl/pages/errors/not_json"] == 1


def lexica_page(ids: list[int], cursor: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {"images": [{"id": str(i), "src": f"{API}/img/{i}.png", "prompt": f"p{i}"} for i in ids]}
    if cursor:
        page["nextCursor"] = cursor
    return page


def test_lexica_cursor_paging_and_max_items(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spider = make(LexicaSpider, tmp_path, api_url=API, q="fox", max_items="3")
    url = start_request(spider).url
    out = out_of(spider.parse_page(json_response(url, lexica_page([1, 2], "c1"))))
    assert [r.meta["imagecrawl_kind"] for r in out] == ["image", "image", "page"]
    assert out[-1].url == f"{url}&cursor=c1"
    # the budget is spent by the last image of the page: the next cursor is still followed
    out = out_of(spider.parse_page(json_response(out[-1].url, lexica_page([3], "c2"))))
    assert [r.url for r in out] == [f"{API}/img/3.png", f"{url}&cursor=c2"]
    with caplog.at_level("INFO", logger="spiders.lexica"):
        out = out_of(spider.parse_page(json_response(out[-1].url, lexica_page([4], "c3"))))
    assert out == [] and spider.requested == 3
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("spiders.lexica", "max_items=3 reached")]

    looping = make(LexicaSpider, tmp_path, api_url=API, q="fox")
    url = start_request(looping).url
    out = out_of(looping.parse_page(json_response(url, lexica_page([1], "c1"))))
    out = out_of(looping.parse_page(json_response(out[-1].url, lexica_page([2], "c1"))))
    assert [r.meta["imagecrawl_kind"] for r in out] == ["image"]
    assert stats(looping)["imagecrawl/pages/errors/repeated_cursor"] == 1


# ---------------------------------------------------------------- gallery


def html_response(url: str, name: str) -> HtmlResponse:
    body = (FIXTURES / "gallery" / name).read_bytes()
    return HtmlResponse(url, body=body, encoding="utf-8", request=Request(url))


def test_gallery_callbacks(tmp_path: Path) -> None:
    base = "http://127.0.0.1:8765"
    spider = make(GallerySpider, tmp_path, profile="sandbox")  # the bundled sandbox profile, its start_url
    assert (start_request(spider)).url == f"{base}/gallery/"
    out = out_of(spider.parse_listing(html_response(f"{base}/gallery/", "listing_page1.html")))
    assert [r.url for r in out] == [
        f"{base}/gallery/item/g0001",
        f"{base}/gallery/item/g0002",
        f"{base}/gallery/item/g0003",
        f"{base}/gallery/?page=2",
    ]
    assert [r.priority for r in out] == [5, 5, 5, 0]
    image = list(spider.parse_detail(html_response(f"{base}/gallery/item/g0001", "detail_full.html")))
    assert image[0].url == f"{base}/images/gallery/g0001.png"
    assert image[0].cb_kwargs["hints"]["origin"] == "html"
    assert list(spider.parse_detail(html_response(f"{base}/gallery/item/x", "detail_noimage.html"))) == []
    assert out_of(spider.parse_listing(html_response(f"{base}/gallery/", "listing_blocked.html"))) == []
    assert stats(spider) == {
        "imagecrawl/pages/gallery/listings": 2,
        "imagecrawl/pages/gallery/details": 1,
        "imagecrawl/pages/errors/missing_element": 2,
        "imagecrawl/pages/errors/unhealthy": 1,
    }


def test_gallery_limits_and_arguments(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = "http://127.0.0.1:8765"
    spider = make(GallerySpider, tmp_path, profile="sandbox", start_url=f"{base}/gallery/", max_items="2")
    with caplog.at_level("INFO", logger="spiders.gallery"):
        out = out_of(spider.parse_listing(html_response(f"{base}/gallery/", "listing_page1.html")))
    assert [r.url for r in out] == [f"{base}/gallery/item/g0001", f"{base}/gallery/item/g0002"]
    assert spider.requested == 2
    assert [(r.name, r.getMessage()) for r in caplog.records if "max_items" in r.getMessage()] == [
        ("spiders.gallery", "max_items=2 reached; not following more listing pages")
    ]
    one_page = make(GallerySpider, tmp_path, profile="sandbox", max_pages="1")
    start_request(one_page)
    out = out_of(one_page.parse_listing(html_response(f"{base}/gallery/", "listing_page1.html")))
    assert len(out) == 3  # no next listing page
    with pytest.raises(ValueError, match="start_url"):
        make(GallerySpider, tmp_path, profile="sandbox", start_url="ftp://x/")
    profile = tmp_path / "p.toml"
    profile.write_text('name="p"\nsource="p"\n[listing]\nitem_links="a"\n[detail]\nimage="img"\n')
    with pytest.raises(ValueError, match="no start_url"):
        make(GallerySpider, tmp_path, profile=str(profile))
    with pytest.raises(ValueError, match=r"needs -a profile= .*bundled profile: sandbox"):
        make(GallerySpider, tmp_path)  # no test-site default: a crawl of a gallery names its profile


# ---------------------------------------------------------------- urls


def test_urls_streams_lazily(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    with open(path, "w") as fh:
        for i in range(100_000):
            fh.write(json.dumps({"url": f"https://img.example/{i}.png", "caption": f"c{i}"}) + "\n")
    spider = make(UrlsSpider, tmp_path, input=str(path), shard="1/4")

    async def pull_one() -> Request:
        gen = spider.start()
        request = await gen.__anext__()
        await gen.aclose()
        return request

    request = asyncio.run(pull_one())
    assert request.url == "https://img.example/1.png"
    hints = request.cb_kwargs["hints"]
    assert (hints["source"], hints["source_id"], hints["prompt"], hints["origin"]) == (
        "urls",
        None,
        "c1",
        "input",
    )
    assert hints["params"] == {"input_row": 1} and hints["page_url"] is None
    assert spider.requested == 1  # one pulled, one read: nothing is read ahead
    with pytest.raises(ValueError, match="input file"):
        make(UrlsSpider, tmp_path)
    with pytest.raises(ValueError, match="shard"):
        make(UrlsSpider, tmp_path, input=str(path), shard="2/2")


def test_urls_start_waits_while_the_scheduler_is_full(tmp_path: Path) -> None:
    """Scrapy drains start() eagerly; the urls spider must not queue a whole list in the scheduler."""
    import spiders.urls as mod

    path = tmp_path / "list.txt"
    path.write_text("".join(f"https://img.example/{i}.png\n" for i in range(1000)))
    spider = make(UrlsSpider, tmp_path, input=str(path))
    queue: list[Request] = []
    polls = 0

    class Scheduler:
        def __len__(self) -> int:
            nonlocal polls
            polls += 1
            if len(queue) >= mod.LAZY_BATCH:
                del queue[:100]  # the "downloader" takes 100 requests while the spider waits
            return len(queue)

    class Engine:
        scheduler = Scheduler()

    spider.crawler.engine = Engine()  # type: ignore[assignment]

    async def pull() -> int:
        most = 0
        async for request in spider.start():
            queue.append(request)
            most = max(most, len(queue))
        return most

    most = asyncio.run(pull())
    assert spider.requested == 1000
    assert most == mod.LAZY_BATCH  # never more than LAZY_BATCH requests waiting in the scheduler
    assert polls >= 1000  # the scheduler is asked before every row


def test_urls_start_falls_back_to_scheduler_empty(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"https://img.example/{i}.png\n" for i in range(10)))
    spider = make(UrlsSpider, tmp_path, input=str(path))
    waits: list[object] = []

    class Engine:
        scheduler = object()  # no __len__

        def needs_backout(self) -> bool:
            return True

    async def wait_for(signal: object) -> None:
        waits.append(signal)

    spider.crawler.engine = Engine()  # type: ignore[assignment]
    spider.crawler.signals.wait_for = wait_for  # type: ignore[method-assign]
    assert len(start_requests(spider)) == 10
    assert waits == [scrapy.signals.scheduler_empty] * 10
