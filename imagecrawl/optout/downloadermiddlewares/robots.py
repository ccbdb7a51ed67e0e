"""robots.txt, fixed and counted: one robots middleware for every crawl (see docs/optout.md).

It is Scrapy's ``RobotsTxtMiddleware`` (Protego, our product token) with:

* every waiting request getting the parser. Scrapy 2.19's ``robot_parser`` makes every request that
  arrives while a host's robots.txt is still downloading await the same Deferred through
  ``Deferred.asFuture``, which consumes the result: only the first waiter gets the parser, the others
  get ``None``, which the middleware treats as "allowed". Here each waiter gets its own Deferred
  chained on the shared one, and the result is passed on to the next;
* each refusal counted (``imagecrawl/optout/robots_txt``) and listed in the skip log;
* an unreachable robots.txt read as "disallow all" (RFC 9309 §2.3.1.4): a 5xx, a 429 (the site asks
  us to slow down, not to go ahead), or a download that failed (connection refused or reset, timeout,
  DNS error, a refusal by another middleware). It is fetched again ``IMAGECRAWL_TUNING['robots_retry_seconds']``
  later (doubling while it stays unreachable); each such fetch is counted
  (``imagecrawl/optout/robots_txt_unreachable``), each request refused meanwhile too. Any other 4xx
  means "no rules". The fetch has its own short timeout (``IMAGECRAWL_TUNING['policy_timeout_seconds']``) and
  is not retried after a download error: a site that does not answer at all (refused, timeout, DNS)
  has its robots.txt fetched again with its next request, and the pacing gate's dead-site circuit
  decides when that is;
* the ``Crawl-delay`` for our token, capped (``MAX_CRAWL_DELAY_SECONDS``), kept in the crawl's
  :class:`~imagecrawl.optout.crawldelay.CrawlDelays`: Crawl-delay's one path, the pacing gate is its listener;
* hosts in ``IMAGECRAWL_OPTOUT_OWNED_HOSTS`` exempt (warned at start);
* the ``Content-Signal`` (``ai-train=no``) and ``Content-Usage`` (``train-ai=n``) lines, which Protego
  skips, read from the robots.txt text (:mod:`imagecrawl.optout.robotsprefs`): a URL they refuse is
  not requested (``imagecrawl/optout/content_signal`` / ``content_usage``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.robotstxt import RobotParser
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler
from twisted.internet.defer import Deferred

from imagecrawl import meta
from imagecrawl.optout.budget import PolicyBodyError
from imagecrawl.optout.config import OptOutConfig
from imagecrawl.optout.crawldelay import CrawlDelays
from imagecrawl.optout.downloadermiddlewares.optout import policy_files, skip_log
from imagecrawl.optout.robotsprefs import RobotsPrefs, parse_robots_prefs, robots_refusal
from imagecrawl.pacing.gate import Signal
from imagecrawl.pacing.signals import classify_exception
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)

_DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"
#: download-error kinds (``imagecrawl_download_error``) that mean the site did not answer at all
NO_ANSWER_KINDS = frozenset({"timeout", "connection_refused", "dns", "connection"})


def crawl_delays(crawler: Crawler) -> CrawlDelays:
    """The Crawl-delay registry of one crawl."""
    return crawl_context(crawler).get(CrawlDelays, CrawlDelays)


class RobotsMiddleware(RobotsTxtMiddleware):
    """Scrapy's robots.txt middleware (Protego) with our token, plus: every waiter gets the parser,
    counted skips, Crawl-delay for pacing, 5xx = disallow, the user's own hosts exempt."""

    def __init__(self, crawler: Crawler) -> None:
        if not crawler.settings.getbool("ROBOTSTXT_OBEY"):
            logger.warning("ROBOTSTXT_OBEY is off: robots.txt is NOT honoured (only for sites you own)")
            raise NotConfigured("ROBOTSTXT_OBEY is off")
        super().__init__(crawler)
        self.optout_config = OptOutConfig.from_settings(crawler.settings)
        self.token = self.optout_config.token
        self.skips = skip_log(crawler)
        self.delays = crawl_delays(crawler)
        self.pref_kinds = self.optout_config.robots_kinds()
        self._prefs: dict[str, RobotsPrefs] = {}
        self.policy = policy_files(crawler)
        #: netloc -> (time to fetch robots.txt again, the wait that led to it) while unreachable
        self._unreachable: dict[str, tuple[float, float]] = {}
        #: netloc -> when its robots.txt was last read (the clock of :class:`PolicyFiles`)
        self._fetched_at: dict[str, float] = {}
        crawler.signals.connect(self._robots_parsed, signal=signals.robots_parsed)

    async def process_request(self, request: Request) -> None:  # type: ignore[override]
        if self.optout_config.owns(request.url):
            return  # a site the user owns (IMAGECRAWL_OPTOUT_OWNED_HOSTS, warned at start)
        await super().process_request(request)

    async def robot_parser(self, request: Request) -> RobotParser | None:
        url = urlparse_cached(request)
        netloc = url.netloc
        current = self._parsers.get(netloc)
        if current is not None and not isinstance(current, Deferred) and self._stale(netloc):
            del self._parsers[netloc]  # fetched again below; until then its requests wait for it
        if netloc not in self._parsers:
            # Scrapy's fetch, without its traceback for an unreachable site (logged in one line below)
            self._parsers[netloc] = Deferred()
            robots_request = self.policy.request(f"{url.scheme}://{netloc}/robots.txt", **{meta.KIND: "robots"})
            try:
                response = await self.crawler.engine.download_async(robots_request)
                await self._parse_robots(response, netloc, request)
            except Exception as exc:
                self._robots_error(exc, netloc, robots_request.meta.get(meta.DOWNLOAD_ERROR))
            self._stats.inc_value("robotstxt/request_count")
        parser = self._parsers[netloc]
        if isinstance(parser, Deferred):
            waiter: Deferred[RobotParser | None] = Deferred()

            def relay(result: Any) -> Any:
                waiter.callback(result)
                return result  # keep the result for the next waiter

            parser.addCallback(relay)
            return await maybe_deferred_to_future(waiter)
        return parser

    def _stale(self, netloc: str) -> bool:
        """True when the site's robots.txt is due again: unreachable and its retry time has come, or
        read longer than ``IMAGECRAWL_TUNING['policy_ttl_seconds']`` ago (RFC 9309 §2.4)."""
        now = self.policy.clock()
        again = self._unreachable.get(netloc)
        if again is not None:
            return now >= again[0]
        fetched = self._fetched_at.get(netloc)
        if fetched is not None and now - fetched >= self.policy.config.ttl_seconds:
            self._stats.inc_value("imagecrawl/optout/robots_txt_refreshed")
            logger.info("robots.txt of %s is %gs old: fetching it again", netloc, now - fetched)
            return True
        return False

    def process_request_2(self, rp: RobotParser | None, request: Request) -> None:
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest:
            unreachable = urlparse_cached(request).netloc in self._unreachable
            self.skips.skip("robots_txt", request.url, "robots.txt unreachable" if unreachable else "Disallow")
            raise
        if rp is None or not self.pref_kinds or request.meta.get("dont_obey_robotstxt"):
            return
        refusal = robots_refusal(
            self._prefs.get(urlparse_cached(request).netloc), self.token, request.url, self.pref_kinds
        )
        if refusal is not None:
            reason, detail = refusal
            self.skips.skip(reason, request.url, detail)
            raise IgnoreRequest(f"robots.txt {reason}: {detail}")

    def _mark_unreachable(self, netloc: str, why: str, no_answer: bool = False) -> None:
        """RFC 9309 §2.3.1.4: an unreachable robots.txt means "disallow everything"; try again later.
        ``no_answer`` (refused, timeout, DNS): with the site's next request, which the dead-site circuit
        holds back while the site does not answer."""
        self._stats.inc_value("imagecrawl/optout/robots_txt_unreachable")
        previous = self._unreachable.get(netloc)
        if no_answer:
            # keep the backoff a later unreachable answer (a 5xx) continues from
            self._unreachable[netloc] = (
                self.policy.clock(),
                previous[1] if previous is not None else self.policy.config.retry_seconds / 2,
            )
            logger.warning(
                "robots.txt of %s is unreachable (%s): treating the site as disallowed until it answers", netloc, why
            )
            return
        wait = self.policy.config.next_retry(previous[1] if previous is not None else None)
        self._unreachable[netloc] = (self.policy.clock() + wait, wait)
        logger.warning(
            "robots.txt of %s is unreachable (%s): treating the site as disallowed, fetching it again in %gs",
            netloc,
            why,
            wait,
        )

    def _read(self, response: Response, netloc: str) -> bytes:
        """The rules text of a robots.txt response (its status decides, RFC 9309 §2.3.1), within the budget."""
        if response.status >= 500 or response.status == 429:
            self._mark_unreachable(netloc, f"HTTP {response.status}")
            return _DISALLOW_ALL
        if response.status >= 400:
            self._unreachable.pop(netloc, None)
            return b""  # "unavailable": no rules (not the error page's text)
        try:
            body, _ = self.policy.read(response, "robots.txt")
        except PolicyBodyError as exc:
            self._mark_unreachable(netloc, str(exc))
            return _DISALLOW_ALL
        self._unreachable.pop(netloc, None)
        return body

    def _build(self, body: bytes) -> tuple[RobotParser, RobotsPrefs | None]:
        """Protego's parser and the preference lines of ``body`` (run on a thread: 512 KiB of rules
        take a good part of a second to parse)."""
        rp = build_from_crawler(self._parserimpl, self.crawler, body)
        prefs = parse_robots_prefs(body.decode("utf-8-sig", "replace")) if self.pref_kinds else None
        return rp, prefs

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        self._stats.inc_value("robotstxt/response_count")
        self._stats.inc_value(f"robotstxt/response_status_count/{response.status}")
        body = self._read(response, netloc)
        rp, prefs = await asyncio.to_thread(self._build, body)
        self._fetched_at[netloc] = self.policy.clock()
        # Stored before the parser is handed out, so the first request already sees them.
        if prefs:
            self._prefs[netloc] = prefs
            logger.info("robots.txt of %s states AI usage preferences (Content-Signal / Content-Usage)", netloc)
        else:
            self._prefs.pop(netloc, None)
        await self.crawler.signals.send_catch_log_async(signal=signals.robots_parsed, robotparser=rp, request=request)
        rp_dfd = self._parsers.get(netloc)
        self._parsers[netloc] = rp
        if isinstance(rp_dfd, Deferred):
            rp_dfd.callback(rp)

    def _robots_error(self, exc: Exception, netloc: str, kind: str | None = None) -> None:
        # Scrapy stores None ("allow everything") for a failed download: store "disallow" instead.
        if not isinstance(exc, IgnoreRequest):
            self._stats.inc_value(f"robotstxt/exception_count/{type(exc)}")
        # the download-errors middleware turns the error into an IgnoreRequest; its kind stays in meta
        no_answer = kind in NO_ANSWER_KINDS or classify_exception(exc) in (
            Signal.TIMEOUT,
            Signal.CONNECTION,
            Signal.BROKEN,
        )
        self._mark_unreachable(netloc, f"{type(exc).__name__}: {exc}", no_answer)
        self._fetched_at[netloc] = self.policy.clock()
        rp = self._parserimpl.from_crawler(self.crawler, _DISALLOW_ALL)
        rp_dfd = self._parsers.get(netloc)
        self._parsers[netloc] = rp
        if isinstance(rp_dfd, Deferred):
            rp_dfd.callback(rp)

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
