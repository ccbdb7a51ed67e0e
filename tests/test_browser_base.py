"""The ``<base>`` a rendered page reached by a redirect gets (imagecrawl.browser.with_base)."""

from __future__ import annotations

from scrapy.http import HtmlResponse
from scrapy.utils.response import get_base_url

from imagecrawl.browser import with_base

FINAL = "http://127.0.0.1:8000/gallery/page/?a=1&b=2"


def test_the_base_goes_first_in_the_head() -> None:
    body = with_base(b"<html><HEAD lang=en><title>t</title></head><body><a href='x'>x</a></body></html>", FINAL)
    assert body.startswith(b'<html><HEAD lang=en><base href="http://127.0.0.1:8000/gallery/page/?a=1&b=2">')
    response = HtmlResponse("http://127.0.0.1:8000/redirect?to=elsewhere", body=body)
    assert get_base_url(response) == FINAL
    assert response.urljoin("x") == "http://127.0.0.1:8000/gallery/page/x"


def test_a_page_without_head_gets_it_first_and_an_existing_base_wins() -> None:
    assert with_base(b"<p>hi</p>", FINAL).startswith(b"<base href=")
    page = b'<html><head><base href="/own/"></head></html>'
    assert with_base(page, FINAL) == page
    assert with_base(b"<html><header>no head</header></html>", FINAL).startswith(b"<base href=")
