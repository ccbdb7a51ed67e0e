"""Opt-outs, decided as early and as cheaply as possible (see docs/optout.md).

* robots.txt — :mod:`imagecrawl.optout.downloadermiddlewares.robots`.
* TDMRep file — ``/.well-known/tdmrep.json`` fetched once per site (like robots.txt); a request
  whose path a rule reserves is dropped before it is sent.
* X-Robots-Tag, the aipref ``Content-Usage`` header (``train-ai=n``) and the ``tdm-reservation``
  header — decided in a ``headers_received`` handler: an opted-out image is abandoned with
  ``StopDownload`` before its body is read (one header exchange).
* HTML meta (robots, our token, tdm-reservation) and header opt-outs of *pages* — recorded on the
  page's request meta (``imagecrawl_optout_page``); the spider middleware
  :class:`imagecrawl.optout.spidermiddlewares.OptOutSpiderMiddleware` drops image requests found
  on such a page.

Every skip goes through the crawl's :class:`~imagecrawl.optout.skiplog.SkipLog` (:func:`skip_log`): a
stat ``imagecrawl/optout/<reason>`` and one JSON line in the skip log (``IMAGECRAWL_OPTOUT_LOG``), so
skips can be listed after the crawl.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Self

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured, StopDownload
from scrapy.http import Headers, Response, TextResponse
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl import meta
from imagecrawl.optout.aipref import parse_content_usage_header, usage_refuses_training
from imagecrawl.optout.budget import PolicyBodyError, PolicyFileConfig, decode_policy_body
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.optout.rules import blocking_directives, parse_x_robots_tag, scan_html_meta
from imagecrawl.optout.skiplog import SkipLog
from imagecrawl.optout.tdmrep import (
    TdmRepError,
    TdmRule,
    parse_tdm_header,
    parse_tdmrep_json,
    tdm_file_reservation,
    tdm_reserved,
)
from imagecrawl.storage.context import crawl_context
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

TDMREP_PATH: Final = "/.well-known/tdmrep.json"
#: Stat / skip-log reasons.
REASONS: Final = (
    "robots_txt",
    "x_robots_tag",
    "meta_robots",
    "tdmrep_file",
    "tdmrep_header",
    "tdmrep_meta",
    "content_signal",
    "content_usage",
    "embedded_data_mining",
    "embedded_c2pa",
)


def skip_log(crawler: Crawler) -> SkipLog:
    """The skip log of one crawl, shared by the robots, opt-out and spider middlewares."""

    def make() -> SkipLog:
        log = SkipLog(crawler.stats, OptOutConfig.from_settings(crawler.settings).log_path)
        crawler.signals.connect(log.close, signal=signals.spider_closed)
        return log

    return crawl_context(crawler).get(SkipLog, make)


class PolicyFiles:
    """How the crawl fetches its policy files (robots.txt, tdmrep.json): one per crawl
    (:func:`policy_files`). Their requests carry ``meta["imagecrawl_policy_file"]``; the download stops
    once ``IMAGECRAWL_TUNING['policy_max_bytes']`` are in (``bytes_received``), whatever ``DOWNLOAD_MAXSIZE``
    says, and :meth:`read` decodes at most that much. ``clock`` (monotonic seconds) is injectable."""

    def __init__(self, crawler: Crawler, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = PolicyFileConfig.from_settings(crawler.settings)
        #: their own short timeout: a site that never answers costs seconds, not DOWNLOAD_TIMEOUT
        self.timeout = tuning(crawler.settings).policy_timeout_seconds
        self.crawler = crawler
        self.clock = clock
        crawler.signals.connect(self._bytes_received, signal=signals.bytes_received)

    def request(self, url: str, **meta_keys: Any) -> Request:
        """A request for the policy file at ``url``: asked unencoded, read within the budget."""
        return Request(
            url,
            priority=1000,
            headers={"Accept-Encoding": "identity"},
            # no DOWNLOAD_MAXSIZE cut (a 40 MB file is not an error): the budget stops it, far earlier
            meta={
                "dont_obey_robotstxt": True,
                meta.POLICY_FILE: 0,
                "download_maxsize": 0,
                "download_timeout": self.timeout,
                **meta_keys,
            },
            callback=NO_CALLBACK,
        )

    def _bytes_received(self, data: bytes, request: Request, spider: Any = None) -> None:
        got = request.meta.get(meta.POLICY_FILE)
        if got is None:
            return
        got += len(data)
        request.meta[meta.POLICY_FILE] = got
        if got > self.config.max_bytes:
            raise StopDownload(fail=False)

    def read(self, response: Response, name: str) -> tuple[bytes, bool]:
        """The body of a policy file within the budget (decoded, cut at a line break) and whether it was
        cut; raises :class:`PolicyBodyError` when it cannot be read."""
        cap = self.config.max_bytes
        encodings = _header_values(response.headers, b"Content-Encoding")
        body, cut = decode_policy_body(response.body, encodings, cap)
        cut = cut or "download_stopped" in response.flags
        if cut:
            self.crawler.stats.inc_value("imagecrawl/optout/policy_file_truncated")
            logger.info(
                "%s of %s is larger than %d bytes: only its first %d bytes are read",
                name,
                urlparse_cached(response).netloc,
                cap,
                len(body),
            )
        return body, cut


def policy_files(crawler: Crawler) -> PolicyFiles:
    """The crawl's :class:`PolicyFiles`."""
    return crawl_context(crawler).get(PolicyFiles, lambda: PolicyFiles(crawler))


def _is_image(request: Request, headers: Headers | None) -> bool:
    if request.meta.get(meta.KIND) == "image":
        return True
    if headers is not None:
        ctype = (headers.get(b"Content-Type") or b"").split(b";", 1)[0].strip().lower()
        return ctype.startswith(b"image/")
    return False


def _header_values(headers: Headers, name: bytes) -> list[str]:
    return [v.decode("latin-1") for v in headers.getlist(name)]


@dataclass(frozen=True, slots=True)
class _TdmFile:
    """What one site's tdmrep.json said, until ``expires`` (the clock of :class:`PolicyFiles`)."""

    rules: list[TdmRule] | None
    expires: float
    unreachable: bool = False
    retry: float | None = None  # the wait before this fetch again, while unreachable


class OptOutMiddleware:
    def __init__(self, crawler: Crawler, config: OptOutConfig) -> None:
        self.crawler = crawler
        self.config = config
        self.ledger = skip_log(crawler)
        self.policy = policy_files(crawler)
        self._tdm: dict[str, _TdmFile | asyncio.Future[_TdmFile]] = {}
        crawler.signals.connect(self._headers_received, signal=signals.headers_received)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = OptOutConfig.from_settings(crawler.settings)
        if not config.enabled:
            logger.warning(
                "IMAGECRAWL_OPTOUT_ENABLED is off: X-Robots-Tag, HTML meta robots, TDMRep, the Content-Usage "
                "header and embedded data-mining statements are NOT honoured (only for sites you own)"
            )
            raise NotConfigured("IMAGECRAWL_OPTOUT_ENABLED is off")
        config.warn_disabled()
        return cls(crawler, config)

    # --- TDMRep file ---------------------------------------------------------------------------

    @staticmethod
    def _internal(request: Request) -> bool:
        if request.meta.get(meta.KIND) == "tdmrep" or request.meta.get(meta.POLICY_FILE) is not None:
            return True
        robots = urlparse_cached(request).path == "/robots.txt"
        return robots and bool(request.meta.get("dont_obey_robotstxt"))

    async def _tdm_rules(self, request: Request) -> _TdmFile:
        parts = urlparse_cached(request)
        netloc = parts.netloc
        cached = self._tdm.get(netloc)
        if isinstance(cached, asyncio.Future):
            return await asyncio.shield(cached)
        if cached is not None and self.policy.clock() < cached.expires:
            return cached
        future: asyncio.Future[_TdmFile] = asyncio.get_running_loop().create_future()
        self._tdm[netloc] = future
        previous = cached.retry if cached is not None else None
        entry = _TdmFile(None, 0.0)  # cancelled midway: no rules, fetched again by the next request
        try:
            entry = await self._fetch_tdm_rules(parts.scheme, netloc, previous)
        finally:
            # Whatever happened (even cancellation), waiters get an answer.
            self._tdm[netloc] = entry
            if not future.done():
                future.set_result(entry)
        return entry

    def _tdm_unreachable(self, netloc: str, why: str, previous: float | None) -> _TdmFile:
        """Like an unreachable robots.txt: the site's requests are refused until a later fetch answers."""
        wait = self.policy.config.next_retry(previous)
        self.ledger.stats.inc_value("imagecrawl/optout/tdmrep/unreachable")
        logger.warning(
            "%s%s is unreachable (%s): requests of the site are refused, fetching it again in %gs",
            netloc,
            TDMREP_PATH,
            why,
            wait,
        )
        return _TdmFile(None, self.policy.clock() + wait, unreachable=True, retry=wait)

    async def _fetch_tdm_rules(self, scheme: str, netloc: str, previous: float | None) -> _TdmFile:
        stats = self.ledger.stats
        fresh_until = self.policy.clock() + self.policy.config.ttl_seconds
        tdm_request = self.policy.request(f"{scheme}://{netloc}{TDMREP_PATH}", **{meta.KIND: "tdmrep"})
        try:
            engine = self.crawler.engine
            assert engine is not None
            response = await engine.download_async(tdm_request)
        except IgnoreRequest:
            return _TdmFile(None, fresh_until)  # refused by the crawl's own policy: nothing to read
        except Exception as exc:
            stats.inc_value("imagecrawl/optout/tdmrep/fetch_error")
            return self._tdm_unreachable(netloc, f"{type(exc).__name__}: {exc}", previous)
        stats.inc_value(f"imagecrawl/optout/tdmrep/status/{response.status}")
        if response.status >= 500 or response.status == 429:
            return self._tdm_unreachable(netloc, f"HTTP {response.status}", previous)
        if response.status != 200:
            return _TdmFile(None, fresh_until)
        try:
            body, cut = self.policy.read(response, "tdmrep.json")
        except PolicyBodyError as exc:
            stats.inc_value("imagecrawl/optout/tdmrep/fetch_error")
            return self._tdm_unreachable(netloc, str(exc), previous)
        if cut:
            # A file too large to read to its end may hold a reservation past the budget: a refusal
            # that could not be read is not permission, so the whole site counts as reserved.
            stats.inc_value("imagecrawl/optout/tdmrep/over_budget")
            logger.warning(
                "%s%s is larger than IMAGECRAWL_TUNING['policy_max_bytes'] (%d bytes): the site is treated as reserved",
                netloc,
                TDMREP_PATH,
                self.policy.config.max_bytes,
            )
            return _TdmFile([TdmRule("/", 1)], fresh_until)
        try:
            rules = parse_tdmrep_json(body)
        except TdmRepError as exc:
            stats.inc_value("imagecrawl/optout/tdmrep/invalid")
            logger.warning("Ignoring %s%s: %s", netloc, TDMREP_PATH, exc)
            return _TdmFile(None, fresh_until)
        if rules:
            logger.info("%s declares %d TDMRep rule(s)", netloc, len(rules))
        return _TdmFile(rules, fresh_until)

    async def process_request(self, request: Request) -> None:
        if not self.config.tdmrep or self._internal(request) or self.config.owns(request.url):
            return
        if urlparse_cached(request).scheme not in ("http", "https"):
            return
        tdm = await self._tdm_rules(request)
        if tdm.unreachable:
            self.ledger.skip("tdmrep_file", request.url, "tdmrep.json unreachable")
            raise IgnoreRequest("TDMRep: tdmrep.json is unreachable")
        rule = tdm_file_reservation(tdm.rules, request.url)
        if rule is None:
            return
        request.meta[meta.TDM_FILE] = rule.reservation
        if rule.reservation == 1:
            # The file is read before anything is sent; a header or meta that would lift the
            # reservation is never seen, so the resource is left alone (documented trade-off).
            self.ledger.skip("tdmrep_file", request.url, f"location {rule.location}")
            raise IgnoreRequest(f"TDMRep: {rule.location} is reserved")

    # --- headers ---------------------------------------------------------------------------------

    def header_optout(self, request: Request, headers: Headers) -> tuple[str, str] | None:
        """(reason, detail) when the response headers opt this resource out, else None."""
        if self.config.x_robots_tag and self.config.directives:
            found = parse_x_robots_tag(_header_values(headers, b"X-Robots-Tag"), self.config.token)
            hits = blocking_directives(found, self.config.directives)
            if hits:
                return "x_robots_tag", ",".join(hits)
        if self.config.content_usage:
            usage = parse_content_usage_header(_header_values(headers, b"Content-Usage"))
            category = usage_refuses_training(usage)
            if category is not None:
                return "content_usage", f"Content-Usage: {category}=n"
        if self.config.tdmrep:
            header = parse_tdm_header(_header_values(headers, b"tdm-reservation"))
            if header is not None and tdm_reserved(request.meta.get(meta.TDM_FILE), header, None):
                return "tdmrep_header", "tdm-reservation: 1"
        return None

    def _headers_received(self, headers: Headers, body_length: int, request: Request, spider: Any) -> None:
        if self._internal(request) or self.config.owns(request.url) or not _is_image(request, headers):
            return  # pages are read whole: their meta tags may opt their images out
        decision = self.header_optout(request, headers)
        if decision is not None:
            request.meta[meta.OPTOUT_SKIP] = decision
            raise StopDownload(fail=False)

    # --- responses -------------------------------------------------------------------------------

    def process_response(self, request: Request, response: Response) -> Response:
        if self._internal(request) or self.config.owns(request.url):
            return response
        decision = request.meta.pop(meta.OPTOUT_SKIP, None)
        if decision is None and _is_image(request, response.headers):
            # Handlers without headers_received (or cached responses): decided after the fact,
            # but the image still never reaches the dataset.
            decision = self.header_optout(request, response.headers)
        if decision is not None:
            reason, detail = decision
            self.ledger.skip(reason, request.url, detail)
            raise IgnoreRequest(f"opted out: {reason} ({detail})")
        if not _is_image(request, response.headers):
            page = self.page_optout(request, response)
            if page is not None:
                request.meta[meta.OPTOUT_PAGE] = {"reason": page[0], "detail": page[1]}
                self.ledger.stats.inc_value(f"imagecrawl/optout/pages/{page[0]}")
        return response

    def page_optout(self, request: Request, response: Response) -> tuple[str, str] | None:
        """(reason, detail) when a page says the images on it must not be used."""
        header_value: int | None = None
        if self.config.x_robots_tag or self.config.tdmrep or self.config.content_usage:
            header = self.header_optout(request, response.headers)
            if header is not None and header[0] in ("x_robots_tag", "content_usage"):
                return header
            header_value = parse_tdm_header(_header_values(response.headers, b"tdm-reservation"))
        meta_reservation: int | None = None
        is_html = b"html" in (response.headers.get(b"Content-Type") or b"html")
        if isinstance(response, TextResponse) and is_html and (self.config.meta_robots or self.config.tdmrep):
            try:
                text = response.text
            except (UnicodeDecodeError, LookupError):
                text = response.body[:524288].decode("utf-8", "replace")
            tags = scan_html_meta(text, self.config.token)
            if self.config.meta_robots:
                hits = blocking_directives(tags.robots, self.config.directives)
                if hits:
                    return "meta_robots", ",".join(hits)
            meta_reservation = tags.tdm_reservation
        file_value = request.meta.get(meta.TDM_FILE)
        if self.config.tdmrep and tdm_reserved(file_value, header_value, meta_reservation):
            reason = "tdmrep_meta" if meta_reservation is not None else "tdmrep_header"
            return reason, "tdm-reservation: 1"
        return None
