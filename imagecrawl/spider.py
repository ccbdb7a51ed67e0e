"""The base class of every site adapter: images are ordinary scheduled requests, turned into records here."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import scrapy
from scrapy import signals
from scrapy.http import Response
from twisted.python.failure import Failure

from imagecrawl import meta, redact
from imagecrawl.errors import unknown_name
from imagecrawl.incremental import Incremental
from imagecrawl.items import PromptImage
from imagecrawl.media import MIN_PHASH_SIDE, MediaError
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.optout.downloadermiddlewares.optout import skip_log
from imagecrawl.records import EmbeddedOptOut, SourceHints, build_record
from imagecrawl.state import author_salt, state_dir_for
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import Tuning, tuning

logger = logging.getLogger(__name__)

#: Image requests outrank page requests: finishing started items keeps the frontier small.
IMAGE_PRIORITY = 10


def spider_arguments(cls: type[scrapy.Spider]) -> list[str]:
    """The ``-a`` arguments a spider class names in its ``__init__`` (keyword parameters, in order)."""
    params = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self"]


class ImageSpider(scrapy.Spider):
    """Subclasses yield :meth:`image_request` for every image they find.

    A subclass whose ``__init__`` names its arguments gets the rest checked: an unknown ``-a`` argument
    (``-a max_item=3``) is a :class:`~imagecrawl.errors.ConfigError` listing the valid ones, instead of
    an attribute nobody reads. ``name`` and names starting with ``_`` (Scrapyd's ``_job``) pass."""

    #: False: no callback of this spider yields an image request (all of them come from ``start()``), so
    #: the opt-out spider middleware, which drops images found on opted-out pages, is not installed
    requests_from_pages: bool = True
    _salt: bytes | None = None
    _media_pool: ThreadPoolExecutor | None = None
    _media_threads: int | None = None
    _optout: OptOutConfig | None = None
    _tuning: Tuning | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self).__init__ is not ImageSpider.__init__:
            for key in kwargs:
                if key != "name" and not key.startswith("_"):
                    raise unknown_name(f"-a argument of the {self.name} spider", key, spider_arguments(type(self)))
        super().__init__(*args, **kwargs)

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        # Every -a argument passes here (a subclass's __init__ may take some by name): a credential in
        # one (-a api_url=http://user:pw@host, ?token=...) is masked from now on, in any form.
        redact.install(redact.url_secrets([*args, *kwargs.values()]))
        return super().from_crawler(crawler, *args, **kwargs)

    def image_request(self, url: str, hints: SourceHints, **kwargs: Any) -> scrapy.Request:
        request_meta = {meta.KIND: "image", **kwargs.pop("meta", {})}
        if hints.source_id:
            # Lets the known-image check skip the download when this record is already in the store.
            request_meta.setdefault(meta.RECORD_ID, f"{hints.source}:{hints.source_id}")
        return scrapy.Request(
            url,
            callback=self.parse_image,
            cb_kwargs={"hints": hints.to_meta()},
            meta=request_meta,
            priority=kwargs.pop("priority", IMAGE_PRIORITY),
            **kwargs,
        )

    def image_failed(self, failure: Failure) -> None:
        """Errback of image (and gallery detail) requests of an incremental walk: a failed download keeps
        the walk's watermark where it was (:meth:`imagecrawl.incremental.Incremental.image_failed`).

        A method of the spider, so JOBDIR can save the request (docs/spiders.md#running)."""
        incremental = crawl_context(self.crawler).find(Incremental)
        if incremental is not None:
            incremental.image_failed(failure)

    @property
    def salt(self) -> bytes:
        if self._salt is None:
            settings = self.crawler.settings
            state = state_dir_for(settings.get("IMAGECRAWL_STORE"), settings.get("IMAGECRAWL_STATE_DIR"))
            self._salt = author_salt(state, settings.get("IMAGECRAWL_AUTHOR_SALT"))
        return self._salt

    def _media_executor(self) -> ThreadPoolExecutor | None:
        """The threads that build records (IMAGECRAWL_MEDIA_THREADS; 0 = on the reactor thread).

        Decoding for the perceptual hash, sha256 and zlib release the GIL, so records are built while the
        reactor thread goes on downloading: a one-process crawl uses a second core."""
        if self._media_threads is None:
            self._media_threads = max(0, self.crawler.settings.getint("IMAGECRAWL_MEDIA_THREADS"))
            if self._media_threads:
                self._media_pool = ThreadPoolExecutor(self._media_threads, thread_name_prefix="imagecrawl-media")
                self.crawler.signals.connect(self._stop_media_pool, signal=signals.spider_closed)
        return self._media_pool

    def _stop_media_pool(self) -> None:
        if self._media_pool is not None:
            self._media_pool.shutdown(wait=True)
            self._media_pool = None

    def _internals(self) -> Tuning:
        """The crawl's :class:`~imagecrawl.tuning.Tuning`, read once (it is asked for every image)."""
        if self._tuning is None:
            self._tuning = tuning(self.crawler.settings)
        return self._tuning

    def _embedded_optout(self, url: str) -> bool:
        """Whether an image's own data-mining statement is honoured (``IMAGECRAWL_TUNING['optout_embedded']``)."""
        if self._optout is None:
            self._optout = OptOutConfig.from_settings(self.crawler.settings)
        config = self._optout
        return config.enabled and config.embedded and not config.owns(url)

    async def parse_image(self, response: Response, hints: dict[str, Any]) -> AsyncIterator[PromptImage]:
        stats = self.crawler.stats
        assert stats is not None
        fixes: list[str] = []
        build = functools.partial(
            build_record,
            hints=SourceHints.from_meta(hints),
            image_url=response.url,
            body=response.body,
            salt=self.salt,
            max_pixels=self._internals().max_image_pixels,
            embedded_optout=self._embedded_optout(response.url),
            on_fix=fixes.append,
        )
        pool = self._media_executor()
        if pool is not None and len(response.body) <= self._internals().media_inline_max_bytes:
            pool = None  # a small image: the hand-off to a thread and back costs about what building it does
        try:
            record = build() if pool is None else await asyncio.get_running_loop().run_in_executor(pool, build)
        except MediaError as exc:
            stats.inc_value(f"imagecrawl/media/errors/{exc.kind}")
            logger.warning("Skipping %s: %s (%s)", response.url, exc, exc.kind)
            return
        except EmbeddedOptOut as exc:
            skip_log(self.crawler).skip(exc.reason, response.url, exc.detail)
            return
        stats.inc_value("imagecrawl/media/images")
        if record.image_phash is None and min(record.width or 0, record.height or 0) >= MIN_PHASH_SIDE:
            stats.inc_value("imagecrawl/media/phash_over_budget")  # no bounded decoding for it: no near-dedupe
        for fix in fixes:  # counted here, on the reactor thread
            stats.inc_value(f"imagecrawl/records/{fix}")
        if record.metadata_source is not None and record.metadata_source not in ("api", "html"):
            stats.inc_value("imagecrawl/metadata/from_file")
        yield record
