"""Opt-outs, decided as early and as cheaply as possible (see docs/optout.md).

* robots.txt — :class:`RobotsTxtMiddleware`, Scrapy's own (Protego) with our token, counting each
  refusal, reading 5xx robots.txt as "disallow all" (RFC 9309 §2.3.1.4) and handing the
  ``Crawl-delay`` to pacing through :func:`imagecrawl.optout.crawldelay.crawl_delays`.
* TDMRep file — ``/.well-known/tdmrep.json`` fetched once per site (like robots.txt); a request
  whose path a rule reserves is dropped before it is sent.
* X-Robots-Tag and the ``tdm-reservation`` header — decided in a ``headers_received`` handler: an
  opted-out image is abandoned with ``StopDownload`` before its body is read (one header exchange).
* HTML meta (robots, our token, tdm-reservation) and header opt-outs of *pages* — recorded on the
  page's request meta (``imagecrawl_optout_page``); the spider middleware
  :class:`imagecrawl.spidermiddlewares.optout.OptOutSpiderMiddleware` drops image requests found
  on such a page.

Every skip goes through :class:`OptOutLedger`: a stat ``imagecrawl/optout/<reason>`` and one JSON
line in the skip log (``IMAGECRAWL_OPTOUT_LOG``), so skips can be listed after the crawl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Self

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured, StopDownload
from scrapy.http import Headers, Response, TextResponse
from scrapy.http.request import NO_CALLBACK
from scrapy.robotstxt import RobotParser
from scrapy.settings import BaseSettings
from scrapy.utils.httpobj import urlparse_cached

from imagecrawl.addon import UA_TOKEN
from imagecrawl.downloadermiddlewares.robots import RobotsTxtMiddleware as FixedRobotsTxtMiddleware
from imagecrawl.optout.crawldelay import crawl_delays
from imagecrawl.optout.rules import (
    DEFAULT_DIRECTIVES,
    KNOWN_DIRECTIVES,
    blocking_directives,
    parse_x_robots_tag,
    scan_html_meta,
)
from imagecrawl.optout.tdmrep import (
    TdmRepError,
    TdmRule,
    parse_tdm_header,
    parse_tdmrep_json,
    tdm_file_reservation,
    tdm_reserved,
)
from imagecrawl.state import state_dir_for

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
)
META_SKIP: Final = "imagecrawl_optout"  # set on a request abandoned at headers_received
META_PAGE: Final = "imagecrawl_optout_page"  # {"reason", "detail"} of an opted-out page
META_TDM_FILE: Final = "imagecrawl_tdm_file"  # the file's reservation for this URL (0/1), if any


@dataclass(frozen=True, slots=True)
class OptOutConfig:
    enabled: bool = True
    x_robots_tag: bool = True
    meta_robots: bool = True
    tdmrep: bool = True
    directives: frozenset[str] = DEFAULT_DIRECTIVES
    token: str = UA_TOKEN
    log_path: Path | None = None
    #: hosts (and their subdomains) the user owns: no opt-out rule, robots.txt included, applies there
    owned_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> OptOutConfig:
        raw_directives = settings.getlist("IMAGECRAWL_OPTOUT_DIRECTIVES", sorted(DEFAULT_DIRECTIVES))
        directives = frozenset(d.strip().lower() for d in raw_directives if d.strip())
        unknown = directives - KNOWN_DIRECTIVES
        if unknown:
            raise ValueError(
                f"IMAGECRAWL_OPTOUT_DIRECTIVES: unknown {sorted(unknown)}; known: {sorted(KNOWN_DIRECTIVES)}"
            )
        raw_log = str(settings.get("IMAGECRAWL_OPTOUT_LOG") or "")
        log_path: Path | None
        if raw_log == "-":
            log_path = None
        elif raw_log:
            log_path = Path(raw_log)
        else:
            store = str(settings.get("IMAGECRAWL_STORE") or "data/")
            log_path = state_dir_for(store, str(settings.get("IMAGECRAWL_STATE_DIR") or "")) / "optout.jsonl"
        token = str(settings.get("ROBOTSTXT_USER_AGENT") or UA_TOKEN).split("/", 1)[0].strip().lower()
        return cls(
            enabled=settings.getbool("IMAGECRAWL_OPTOUT_ENABLED", True),
            x_robots_tag=settings.getbool("IMAGECRAWL_OPTOUT_X_ROBOTS_TAG", True),
            meta_robots=settings.getbool("IMAGECRAWL_OPTOUT_META_ROBOTS", True),
            tdmrep=settings.getbool("IMAGECRAWL_OPTOUT_TDMREP", True),
            directives=directives,
            token=token or UA_TOKEN,
            log_path=log_path,
            owned_hosts=frozenset(
                h.strip().lower().rstrip(".") for h in settings.getlist("IMAGECRAWL_OPTOUT_OWNED_HOSTS") if h.strip()
            ),
        )

    def owns(self, request: Request) -> bool:
        """True for a request to a host the user declared as their own."""
        if not self.owned_hosts:
            return False
        host = (urlparse_cached(request).hostname or "").rstrip(".").lower()
        return any(host == h or host.endswith("." + h) for h in self.owned_hosts)

    def warn_disabled(self) -> None:
        """Switching a rule off is never silent."""
        for name, on in (
            ("IMAGECRAWL_OPTOUT_X_ROBOTS_TAG", self.x_robots_tag),
            ("IMAGECRAWL_OPTOUT_META_ROBOTS", self.meta_robots),
            ("IMAGECRAWL_OPTOUT_TDMREP", self.tdmrep),
        ):
            if not on:
                logger.warning("%s is off: that opt-out is NOT honoured (only for sites you own)", name)
        if self.owned_hosts:
            logger.warning(
                "IMAGECRAWL_OPTOUT_OWNED_HOSTS: robots.txt and opt-outs are NOT honoured on %s (sites you own)",
                ", ".join(sorted(self.owned_hosts)),
            )
        if not self.directives and (self.x_robots_tag or self.meta_robots):
            logger.warning("IMAGECRAWL_OPTOUT_DIRECTIVES is empty: no robots directive opts anything out")


class OptOutLedger:
    """Counts and lists every skip of one crawl (shared by the downloader and spider middlewares)."""

    def __init__(self, crawler: Crawler, log_path: Path | None) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.log_path = log_path
        self._fh: IO[str] | None = None
        crawler.signals.connect(self.close, signal=signals.spider_closed)

    def skip(self, reason: str, url: str, detail: str = "", page: str | None = None) -> None:
        self.stats.inc_value(f"imagecrawl/optout/{reason}")
        self.stats.inc_value("imagecrawl/optout/skipped")
        logger.info("Opted out (%s%s): %s", reason, f": {detail}" if detail else "", url)
        if self.log_path is None:
            return
        try:
            if self._fh is None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            record = {"t": round(time.time(), 3), "reason": reason, "url": url, "detail": detail}
            if page:
                record["page"] = page
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.stats.inc_value("imagecrawl/optout/log_errors")
            logger.warning("Cannot write the opt-out log %s: %s", self.log_path, exc)
            self.log_path = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


_LEDGERS: weakref.WeakKeyDictionary[Crawler, OptOutLedger] = weakref.WeakKeyDictionary()


def optout_ledger(crawler: Crawler, log_path: Path | None = None) -> OptOutLedger:
    ledger = _LEDGERS.get(crawler)
    if ledger is None:
        ledger = _LEDGERS[crawler] = OptOutLedger(crawler, log_path)
    return ledger


def _is_image(request: Request, headers: Headers | None) -> bool:
    if request.meta.get("imagecrawl_kind") == "image":
        return True
    if headers is not None:
        ctype = (headers.get(b"Content-Type") or b"").split(b";", 1)[0].strip().lower()
        return ctype.startswith(b"image/")
    return False


def _header_values(headers: Headers, name: bytes) -> list[str]:
    return [v.decode("latin-1") for v in headers.getlist(name)]


class RobotsTxtMiddleware(FixedRobotsTxtMiddleware):
    """The robots.txt middleware (Scrapy's, with robots.py's waiter fix), plus: counted skips,
    Crawl-delay for pacing, 5xx = disallow."""

    def __init__(self, crawler: Crawler) -> None:
        if not crawler.settings.getbool("ROBOTSTXT_OBEY"):
            logger.warning("ROBOTSTXT_OBEY is off: robots.txt is NOT honoured (only for sites you own)")
            raise NotConfigured("ROBOTSTXT_OBEY is off")
        super().__init__(crawler)
        self.optout_config = OptOutConfig.from_settings(crawler.settings)
        self.token = self.optout_config.token
        self.ledger = optout_ledger(crawler, OptOutConfig.from_settings(crawler.settings).log_path)
        self.delays = crawl_delays(crawler)
        crawler.signals.connect(self._robots_parsed, signal=signals.robots_parsed)

    async def process_request(self, request: Request) -> None:  # type: ignore[override]
        if self.optout_config.owns(request):
            return  # a site the user owns (IMAGECRAWL_OPTOUT_OWNED_HOSTS, warned at start)
        await super().process_request(request)

    def process_request_2(self, rp: RobotParser | None, request: Request) -> None:
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest:
            self.ledger.skip("robots_txt", request.url, "Disallow")
            raise

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        if response.status >= 500:
            # RFC 9309 §2.3.1.4: an unreachable robots.txt means "disallow everything".
            self._stats.inc_value("imagecrawl/optout/robots_txt_unreachable")
            logger.warning("robots.txt of %s answered %d: treating the site as disallowed", netloc, response.status)
            response = response.replace(body=b"User-agent: *\nDisallow: /\n")
        elif response.status >= 400:
            response = response.replace(body=b"")  # "unavailable": no rules (not the error page's text)
        await super()._parse_robots(response, netloc, request)

    def _robots_parsed(self, robotparser: RobotParser, request: Request) -> None:
        netloc = urlparse_cached(request).netloc
        try:
            delay = robotparser.crawl_delay(self.token)
        except Exception:
            logger.debug("crawl_delay() failed for %s", netloc, exc_info=True)
            delay = None
        self.delays.set(netloc, delay)
        if delay is not None:
            logger.info("robots.txt of %s asks for Crawl-delay: %gs (handed to pacing)", netloc, delay)


class OptOutMiddleware:
    def __init__(self, crawler: Crawler, config: OptOutConfig) -> None:
        self.crawler = crawler
        self.config = config
        self.ledger = optout_ledger(crawler, config.log_path)
        self._tdm: dict[str, list[TdmRule] | asyncio.Future[list[TdmRule] | None] | None] = {}
        crawler.signals.connect(self._headers_received, signal=signals.headers_received)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = OptOutConfig.from_settings(crawler.settings)
        if not config.enabled:
            logger.warning(
                "IMAGECRAWL_OPTOUT_ENABLED is off: X-Robots-Tag, HTML meta robots and TDMRep are NOT "
                "honoured (only for sites you own)"
            )
            raise NotConfigured("IMAGECRAWL_OPTOUT_ENABLED is off")
        config.warn_disabled()
        return cls(crawler, config)

    # --- TDMRep file ---------------------------------------------------------------------------

    @staticmethod
    def _internal(request: Request) -> bool:
        if request.meta.get("imagecrawl_kind") == "tdmrep":
            return True
        robots = urlparse_cached(request).path == "/robots.txt"
        return robots and bool(request.meta.get("dont_obey_robotstxt"))

    async def _tdm_rules(self, request: Request) -> list[TdmRule] | None:
        parts = urlparse_cached(request)
        netloc = parts.netloc
        cached = self._tdm.get(netloc)
        if isinstance(cached, asyncio.Future):
            return await asyncio.shield(cached)
        if netloc in self._tdm:
            return cached
        future: asyncio.Future[list[TdmRule] | None] = asyncio.get_running_loop().create_future()
        self._tdm[netloc] = future
        rules: list[TdmRule] | None = None
        try:
            rules = await self._fetch_tdm_rules(parts.scheme, netloc)
        finally:
            # Whatever happened (even cancellation), waiters get an answer: no rules.
            self._tdm[netloc] = rules
            if not future.done():
                future.set_result(rules)
        return rules

    async def _fetch_tdm_rules(self, scheme: str, netloc: str) -> list[TdmRule] | None:
        stats = self.ledger.stats
        tdm_request = Request(
            f"{scheme}://{netloc}{TDMREP_PATH}",
            priority=1000,
            meta={"dont_obey_robotstxt": True, "imagecrawl_kind": "tdmrep"},
            callback=NO_CALLBACK,
        )
        try:
            engine = self.crawler.engine
            assert engine is not None
            response = await engine.download_async(tdm_request)
        except IgnoreRequest:
            return None
        except Exception as exc:  # a failed fetch means "no file", never a crash
            stats.inc_value("imagecrawl/optout/tdmrep/fetch_error")
            logger.warning("Could not fetch %s%s: %s", netloc, TDMREP_PATH, exc)
            return None
        stats.inc_value(f"imagecrawl/optout/tdmrep/status/{response.status}")
        if response.status != 200:
            return None
        try:
            rules = parse_tdmrep_json(response.body)
        except TdmRepError as exc:
            stats.inc_value("imagecrawl/optout/tdmrep/invalid")
            logger.warning("Ignoring %s%s: %s", netloc, TDMREP_PATH, exc)
            return None
        if rules:
            logger.info("%s declares %d TDMRep rule(s)", netloc, len(rules))
        return rules

    async def process_request(self, request: Request) -> None:
        if not self.config.tdmrep or self._internal(request) or self.config.owns(request):
            return
        if urlparse_cached(request).scheme not in ("http", "https"):
            return
        rule = tdm_file_reservation(await self._tdm_rules(request), request.url)
        if rule is None:
            return
        request.meta[META_TDM_FILE] = rule.reservation
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
        if self.config.tdmrep:
            header = parse_tdm_header(_header_values(headers, b"tdm-reservation"))
            if header is not None and tdm_reserved(request.meta.get(META_TDM_FILE), header, None):
                return "tdmrep_header", "tdm-reservation: 1"
        return None

    def _headers_received(self, headers: Headers, body_length: int, request: Request, spider: Any) -> None:
        if self._internal(request) or self.config.owns(request) or not _is_image(request, headers):
            return  # pages are read whole: their meta tags may opt their images out
        decision = self.header_optout(request, headers)
        if decision is not None:
            request.meta[META_SKIP] = decision
            raise StopDownload(fail=False)

    # --- responses -------------------------------------------------------------------------------

    def process_response(self, request: Request, response: Response) -> Response:
        if self._internal(request) or self.config.owns(request):
            return response
        decision = request.meta.pop(META_SKIP, None)
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
                request.meta[META_PAGE] = {"reason": page[0], "detail": page[1]}
                self.ledger.stats.inc_value(f"imagecrawl/optout/pages/{page[0]}")
        return response

    def page_optout(self, request: Request, response: Response) -> tuple[str, str] | None:
        """(reason, detail) when a page says the images on it must not be used."""
        header_value: int | None = None
        if self.config.x_robots_tag or self.config.tdmrep:
            header = self.header_optout(request, response.headers)
            if header is not None and header[0] == "x_robots_tag":
                return header
            header_value = parse_tdm_header(_header_values(response.headers, b"tdm-reservation"))
        meta_reservation: int | None = None
        is_html = b"html" in (response.headers.get(b"Content-Type") or b"html")
        if isinstance(response, TextResponse) and is_html and (self.config.meta_robots or self.config.tdmrep):
            try:
                text = response.text
            except (UnicodeDecodeError, LookupError):
                text = response.body[:524288].decode("utf-8", "replace")
            meta = scan_html_meta(text, self.config.token)
            if self.config.meta_robots:
                hits = blocking_directives(meta.robots, self.config.directives)
                if hits:
                    return "meta_robots", ",".join(hits)
            meta_reservation = meta.tdm_reservation
        file_value = request.meta.get(META_TDM_FILE)
        if self.config.tdmrep and tdm_reserved(file_value, header_value, meta_reservation):
            reason = "tdmrep_meta" if meta_reservation is not None else "tdmrep_header"
            return reason, "tdm-reservation: 1"
        return None
