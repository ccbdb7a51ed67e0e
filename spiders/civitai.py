"""Civitai: ``/api/v1/images`` (prompts + parameters in ``meta``) or ``/api/v1/models`` showcase images.

Arguments (``-a name=value``):

* ``api_url``   server base URL (default ``https://civitai.com``)
* ``endpoint``  ``images`` (default) or ``models`` (model showcase images, no prompts in the API)
* ``max_items`` stop requesting pages once this many images were requested (default: unlimited)
* ``sort``      default ``Newest``; ``period`` default ``AllTime``
* ``nsfw``      the API's level filter, ``None`` (default: only images flagged None, i.e. safe),
  ``Soft``, ``Mature``, ``X`` (that level and below) or ``all`` (no filter sent); empty = an error
* ``limit``     page size, default 100, 1..200 (the models endpoint caps it at 100; never above
  ``max_items``)
* ``username``, ``model_id``  narrow the listing (``model_id`` with ``endpoint=models`` fetches one model)

With ``sort=Newest`` the walk is incremental (docs/spiders.md#incremental-runs): it stops paging at the
last complete walk's newest position for the same query (images: ``createdAt``; models: the newest
version's ``publishedAt``, the order models are listed in), or after a run of images the store holds
(models: only images of models the store holds in full count; a model with a new version lists its
old, known versions below it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import scrapy
from scrapy.http import Response

from imagecrawl.errors import ConfigError
from imagecrawl.incremental import Incremental, begin_walk
from imagecrawl.pages import ImageEntry, PageError, ParsedPage
from imagecrawl.pages import civitai as pages
from imagecrawl.spider import ImageSpider
from imagecrawl.storage.watermarks import Walk, normalize_position
from imagecrawl.values import is_http_url
from spiders._util import PAGE_META, CursorPagingMixin, MaxItemsMixin, count_error, count_errors, optional_int

logger = logging.getLogger(__name__)

_NSFW = {level.lower(): level for level in pages.NSFW_LEVELS}


class CivitaiSpider(MaxItemsMixin, CursorPagingMixin, ImageSpider):
    name = "civitai"
    #: what each -a argument of __init__ means (`imagecrawl spiders`; a test checks they match)
    argument_help = {
        "api_url": "the base URL of the API",
        "max_items": "stop after this many images (default: no limit)",
        "sort": "the order of the listing: Newest, Most Reactions, Most Comments, ...",
        "period": "AllTime, Year, Month, Week or Day",
        "nsfw": "None (only images the site flags as safe), Soft, Mature, X or all",
        "limit": "page size (at most 200)",
        "username": "only this user's images",
        "model_id": "only images made with this model",
        "endpoint": "images, or models (each model version's sample images)",
    }

    def __init__(
        self,
        api_url: str = pages.DEFAULT_API_URL,
        max_items: str | int | None = None,
        sort: str = "Newest",
        period: str = "AllTime",
        nsfw: str = "None",
        limit: str | int = 100,
        username: str | None = None,
        model_id: str | None = None,
        endpoint: str = "images",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not is_http_url(api_url):
            raise ConfigError(f"-a api_url= must be an http(s) URL, got {api_url!r}")
        self.api_url = api_url.rstrip("/")
        self.max_items = optional_int(max_items, "max_items")
        page_size = optional_int(limit, "limit", minimum=1) or 100
        if page_size > pages.MAX_LIMIT:
            raise ConfigError(f"-a limit= must be at most {pages.MAX_LIMIT}, got {page_size}")
        # never ask for more than we will take: a small max_items means a small first page
        self.limit = min(page_size, self.max_items) if self.max_items else page_size
        nsfw_key = (nsfw or "").strip().lower()
        if nsfw_key in ("all", "any"):
            self.nsfw: str | None = None
        elif nsfw_key in _NSFW:
            self.nsfw = _NSFW[nsfw_key]
        else:
            raise ConfigError(f"-a nsfw= must be one of None, Soft, Mature, X, all; got {nsfw!r}")
        if endpoint not in ("images", "models"):
            raise ConfigError(f"-a endpoint= must be 'images' or 'models', got {endpoint!r}")
        self.endpoint = endpoint
        if model_id is not None and model_id != "" and not str(model_id).isdigit():
            raise ConfigError(f"-a model_id= must be a number, got {model_id!r}")
        url_builder = pages.images_api_url if endpoint == "images" else pages.models_api_url
        self.first_url = url_builder(
            self.api_url,
            limit=self.limit,
            nsfw=self.nsfw,
            sort=sort or None,
            period=period or None,
            username=username or None,
            model_id=model_id or None,
        )
        self.start_paging(self.first_url)
        self.newest_first = (sort or "Newest") == "Newest"
        self.incremental: Incremental | None = None
        self.walk: Walk | None = None

    def walk_query(self) -> str:
        """The query of this crawl's walk: the first URL without its page size."""
        parts = urlsplit(self.first_url)
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("limit", "cursor")])
        return urlunsplit(parts._replace(query=query))

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.max_items == 0:
            return
        if self.newest_first:
            began = await begin_walk(self.crawler, f"civitai-{self.endpoint}", self.walk_query())
            if began is not None:
                self.incremental, self.walk = began
        yield scrapy.Request(self.first_url, callback=self.parse_page, meta=dict(PAGE_META))

    def _parse_body(self, response: Response) -> ParsedPage:
        if self.endpoint == "images":
            return pages.parse_images(response.body, self.api_url)
        max_level = pages.MODELS_MAX_LEVEL.get(self.nsfw) if self.nsfw else None
        return pages.parse_models(response.body, self.api_url, max_nsfw_level=max_level)

    def _changed_models(self, page: ParsedPage, known: list[bool]) -> set[str]:
        """The models endpoint: ids of the models on ``page`` that show an image the store lacks.

        Models come newest first by their latest version, and a model with a new version lists its old,
        known versions below the new one: their images are no run of known items (the next model may be
        changed too). Only the images of models the store holds in full count as known."""
        if self.endpoint != "models":
            return set()
        return {
            str(entry.hints.params["modelId"])
            for entry, is_known in zip(page.entries, known, strict=True)
            if entry.hints.params.get("modelId") is not None and not is_known
        }

    async def parse_page(self, response: Response) -> AsyncIterator[scrapy.Request]:
        stats = self.crawler.stats
        assert stats is not None
        try:
            page = self._parse_body(response)
        except PageError as exc:
            count_error(self, exc.kind, response, str(exc))
            return
        stats.inc_value("imagecrawl/pages/civitai/pages")
        filtered = page.errors.count("filtered_nsfw")
        if filtered:
            stats.inc_value("imagecrawl/pages/civitai/filtered_nsfw", filtered)
        count_errors(self, (k for k in page.errors if k != "filtered_nsfw"), response)
        inc, walk = self.incremental, self.walk
        known = [False] * len(page.entries)
        if inc is not None and walk is not None:
            known = await inc.known_many(walk, [(_record_id(entry), entry.url) for entry in page.entries])
        changed = self._changed_models(page, known) if inc is not None and walk is not None else set()
        for entry, is_known in zip(page.entries, known, strict=True):
            if not self.take_item():
                break
            if inc is None or walk is None:
                yield self.image_request(entry.url, entry.hints)
                continue
            # images: their createdAt; models: the model's newest version (their showcase images are
            # in no order of time, a new model may show old ones)
            created = entry.hints.params.get("createdAt") if self.endpoint == "images" else entry.position
            position = normalize_position(created)
            if self.endpoint == "models" and entry.hints.params.get("modelId") in changed:
                inc.see(walk, position)  # a known image of a model with new ones is no sign the rest is known
            else:
                inc.see(walk, position, is_known)
            yield self.image_request(entry.url, entry.hints, meta=inc.image_meta(walk), errback=self.image_failed)
        if not self.budget_left():
            self.log_max_items_reached(logger, "; not following more pages")
            return
        if inc is not None and walk is not None and inc.stop(walk):
            return
        request = self.next_page_request(page, response, self.parse_page)
        if request is not None:
            yield request
        elif walk is not None:
            walk.finish()


def _record_id(entry: ImageEntry) -> str | None:
    return f"{entry.hints.source}:{entry.hints.source_id}" if entry.hints.source_id else None
