"""Shared bits of the site adapters: argument parsing, counted and logged skips, the ``max_items``
budget and cursor paging."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import scrapy
from scrapy.http import Response

from imagecrawl import meta
from imagecrawl.errors import ConfigError
from imagecrawl.pages import ParsedPage, with_cursor

logger = logging.getLogger(__name__)

#: meta of every API/listing/detail page request (image requests carry ``imagecrawl_kind = "image"``)
PAGE_META = {meta.KIND: "page"}


def optional_int(value: Any, name: str, *, minimum: int = 0) -> int | None:
    """A spider argument that is a non-negative int, or unset (None / ""). ``ValueError`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"-a {name}= must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"-a {name}= must be >= {minimum}, got {number}")
    return number


def count_errors(spider: Any, kinds: Iterable[str], response: Response | str) -> None:
    """Count each skip kind as ``imagecrawl/pages/errors/<kind>`` and log one line per page."""
    counts = Counter(kinds)
    if not counts:
        return
    stats = spider.crawler.stats
    for kind, n in counts.items():
        stats.inc_value(f"imagecrawl/pages/errors/{kind}", n)
    url = response if isinstance(response, str) else response.url
    logger.warning(
        "Skipped %d entr%s on %s: %s",
        sum(counts.values()),
        "y" if sum(counts.values()) == 1 else "ies",
        url,
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
    )


def count_error(spider: Any, kind: str, response: Response | str, message: str) -> None:
    """One page-level skip: counted as ``imagecrawl/pages/errors/<kind>`` and logged with ``message``."""
    spider.crawler.stats.inc_value(f"imagecrawl/pages/errors/{kind}")
    url = response if isinstance(response, str) else response.url
    logger.warning("Skipping page %s (%s): %s", url, kind, message)


class MaxItemsMixin:
    """The ``-a max_items=`` budget: ``requested`` counts what was handed out, None means unlimited.

    The spider sets ``max_items`` (with :func:`optional_int`) and calls :meth:`take_item` before each
    request it counts."""

    max_items: int | None = None
    requested: int = 0

    def budget_left(self) -> bool:
        return self.max_items is None or self.requested < self.max_items

    def take_item(self) -> bool:
        """Count one more requested item; False (and nothing counted) once ``max_items`` are requested."""
        if not self.budget_left():
            return False
        self.requested += 1
        return True

    def log_max_items_reached(self, log: logging.Logger, then: str = "") -> None:
        """The ``max_items=N reached`` INFO line, on the spider module's own ``log``; ``then`` is appended."""
        log.info("max_items=%d reached%s", self.max_items, then)


class CursorPagingMixin:
    """Paged JSON APIs: the next page is the current URL with ``cursor=<next_cursor>``, else the page's
    ``next_page`` URL. A cursor or a URL met before ends the paging, counted as ``repeated_cursor``.

    The spider calls :meth:`start_paging` with its first page URL before paging."""

    _cursors: set[str]
    _page_urls: set[str]

    def start_paging(self, first_url: str) -> None:
        self._cursors = set()
        self._page_urls = {first_url}

    def next_page_url(self, page: ParsedPage, response: Response) -> str | None:
        if page.next_cursor is not None:
            if page.next_cursor in self._cursors:
                count_error(self, "repeated_cursor", response, f"cursor {page.next_cursor!r} seen before")
                return None
            self._cursors.add(page.next_cursor)
            url = with_cursor(response.url, page.next_cursor)
        elif page.next_page is not None:
            url = page.next_page
        else:
            return None
        if url in self._page_urls:
            count_error(self, "repeated_cursor", response, f"next page {url} requested before")
            return None
        self._page_urls.add(url)
        return url

    def next_page_request(
        self, page: ParsedPage, response: Response, callback: Callable[[Response], Any]
    ) -> scrapy.Request | None:
        """The request for the page after ``page`` (``imagecrawl_kind = "page"``), or None at the end."""
        url = self.next_page_url(page, response)
        return None if url is None else scrapy.Request(url, callback=callback, meta=dict(PAGE_META))
