"""Rendering JavaScript galleries in a headless browser (scrapy-playwright with Debian's Chromium).

A gallery profile with ``render = "browser"`` makes the gallery spider send its page requests with
``meta["playwright"] = True``: they still pass every downloader middleware (robots, opt-outs, netguard,
pacing, the shared rate gate, ban handling) and only then does scrapy-playwright load them in Chromium.
Listing pages are scrolled until no new items arrive (infinite scroll); the rendered DOM is the
response the page objects parse. Navigations the page starts itself (iframes, a script's ``location``
change) pass the crawl's own network guard, robots.txt and opt-out middlewares before they leave the
browser, and so does every hop of every redirect: Chromium follows redirects without routing them again, so
:class:`PolicyDownloadHandler` fetches each request of a page itself (``route.fetch(max_redirects=0)``),
checks each ``Location`` like a request of its own, follows it by hand and hands only the final response to
the browser (the frame's URL stays the first hop's; an HTML page reached by a redirect gets a ``<base>``
of its own URL so that its relative links still resolve against it). Requests the *page itself* makes are filtered by
:class:`RequestPolicy`: fonts, media and images are aborted (images are fetched by the crawl itself, as
gated requests), so are trackers and other sites; what is left (the gallery's own XHR/fetch calls) waits at
the site's shared rate gate when the crawl is distributed, so scrolling never goes faster than the site's cap.

Only :func:`configure` touches Scrapy settings; the spider calls it from ``from_crawler`` when its
profile asks for a browser, so crawls that need none never start one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from parsel.csstranslator import HTMLTranslator

from imagecrawl import meta
from imagecrawl.errors import ConfigError, missing_extra
from imagecrawl.pacing.config import site_key_mode
from imagecrawl.pacing.sitekey import site_of_url
from imagecrawl.storage.context import crawl_context

logger = logging.getLogger(__name__)

#: Chromium flags for a quiet headless run in a container (no sandbox: root in CI, no GPU, no phoning home)
DEFAULT_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DROPPED = frozenset({"location", "content-length", "content-encoding", "transfer-encoding"})
# Scroll to the bottom until the item count stops growing for ``idleMs`` (or ``maxScrolls`` is reached).
SCROLL_JS = """
async ({xpath, idleMs, maxScrolls}) => {
  const count = () => document.evaluate(
    'count(' + xpath + ')', document, null, XPathResult.NUMBER_TYPE, null).numberValue;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  let seen = count();
  let scrolls = 0;
  while (scrolls < maxScrolls) {
    window.scrollTo(0, document.documentElement.scrollHeight);
    scrolls += 1;
    let grew = false;
    for (let waited = 0; waited < idleMs; waited += 50) {
      await sleep(50);
      if (count() > seen) { grew = true; break; }
    }
    if (!grew) break;
    // let the rest of this batch land before scrolling again
    let last = count();
    for (let waited = 0; waited < idleMs; waited += 50) {
      await sleep(50);
      const now = count();
      if (now === last) break;
      last = now;
    }
    seen = count();
  }
  return {items: count(), scrolls: scrolls};
}
"""


@dataclass(frozen=True, slots=True)
class BrowserConfig:
    """``IMAGECRAWL_BROWSER_*`` (defaults in imagecrawl/settings.py)."""

    executable: str
    headless: bool
    args: tuple[str, ...]
    scroll_idle_seconds: float
    max_scrolls: int
    navigation_timeout_seconds: float
    block_types: frozenset[str]
    block_patterns: tuple[str, ...]
    allow_third_party: bool
    max_pages: int

    @classmethod
    def from_settings(cls, settings: Any) -> BrowserConfig:
        extra = settings.getlist("IMAGECRAWL_BROWSER_ARGS")
        return cls(
            executable=str(settings.get("IMAGECRAWL_BROWSER_EXECUTABLE")),
            headless=settings.getbool("IMAGECRAWL_BROWSER_HEADLESS"),
            args=tuple(dict.fromkeys([*DEFAULT_ARGS, *extra])),
            scroll_idle_seconds=settings.getfloat("IMAGECRAWL_BROWSER_SCROLL_IDLE_SECONDS"),
            max_scrolls=settings.getint("IMAGECRAWL_BROWSER_MAX_SCROLLS"),
            navigation_timeout_seconds=settings.getfloat("IMAGECRAWL_BROWSER_TIMEOUT_SECONDS"),
            block_types=frozenset(settings.getlist("IMAGECRAWL_BROWSER_BLOCK_TYPES")),
            block_patterns=tuple(settings.getlist("IMAGECRAWL_BROWSER_BLOCK_PATTERNS")),
            allow_third_party=settings.getbool("IMAGECRAWL_BROWSER_ALLOW_THIRD_PARTY"),
            max_pages=max(1, settings.getint("IMAGECRAWL_BROWSER_MAX_PAGES")),
        )

    @property
    def blocked(self) -> re.Pattern[str] | None:
        if not self.block_patterns:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.block_patterns), re.IGNORECASE)


def selector_xpath(kind: str, expr: str) -> str:
    """The XPath of a profile selector (``css`` or ``xpath``), for counting matches in the browser."""
    return HTMLTranslator().css_to_xpath(expr) if kind == "css" else expr


def listing_meta(config: BrowserConfig, item_xpath: str) -> dict[str, Any]:
    """Request meta of a listing page: render it, scroll until no new items arrive."""
    from scrapy_playwright.page import PageMethod

    return {
        "playwright": True,
        meta.RENDER: "browser",
        "playwright_page_goto_kwargs": {"wait_until": "load"},
        "playwright_page_methods": [
            PageMethod(
                "evaluate",
                SCROLL_JS,
                {
                    "xpath": item_xpath,
                    "idleMs": int(config.scroll_idle_seconds * 1000),
                    "maxScrolls": config.max_scrolls,
                },
            )
        ],
    }


def page_meta() -> dict[str, Any]:
    """Request meta of any other page of a browser-rendered gallery."""
    return {"playwright": True, meta.RENDER: "browser"}


_HEAD = re.compile(rb"<head(?:\s[^>]*)?>", re.IGNORECASE)


def with_base(body: bytes, url: str) -> bytes:
    """``body`` (an HTML page) with a ``<base href=url>`` first in its head, unless it has a base already."""
    if re.search(rb"<base[\s>]", body[:65536], re.IGNORECASE):
        return body
    # quotes and brackets percent-encoded, "&" kept: w3lib's get_base_url reads the attribute unescaped
    safe = url.replace('"', "%22").replace("<", "%3C").replace(">", "%3E")
    tag = b'<base href="' + safe.encode() + b'">'
    head = _HEAD.search(body[:65536])
    return body[: head.end()] + tag + body[head.end() :] if head else tag + body


def _site(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc or "").lower()


class RequestPolicy:
    """``PLAYWRIGHT_ABORT_REQUEST``: which requests a rendered page may make itself. Counted as
    ``imagecrawl/browser/aborted/<reason>`` and ``imagecrawl/browser/subrequests``."""

    def __init__(self, config: BrowserConfig, crawler: Any) -> None:
        self.config = config
        self.crawler = crawler  # its stats exist only once the crawl starts: read them late
        self.blocked = config.blocked
        self.site_key = site_key_mode(crawler.settings)
        self.max_redirects = crawler.settings.getint("REDIRECT_MAX_TIMES")
        self.user_agent = str(crawler.settings.get("USER_AGENT") or "")

    def _abort(self, reason: str, url: str) -> bool:
        self.crawler.stats.inc_value(f"imagecrawl/browser/aborted/{reason}")
        logger.debug("Browser request aborted (%s): %s", reason, url)
        return True

    def _crawl_policy(self) -> list[Any]:
        """The crawl's own network guard, robots.txt and opt-out middlewares (the instances Scrapy
        built), in downloader order: the browser's navigations pass exactly what Scrapy's requests pass."""
        from imagecrawl.downloadermiddlewares.netguard import NetGuardMiddleware
        from imagecrawl.downloadermiddlewares.optout import OptOutMiddleware
        from imagecrawl.downloadermiddlewares.robots import RobotsMiddleware

        engine = getattr(self.crawler, "engine", None)
        if engine is None:
            return []
        kinds = (NetGuardMiddleware, RobotsMiddleware, OptOutMiddleware)
        return [mw for mw in engine.downloader.middleware.middlewares if isinstance(mw, kinds)]

    async def _navigation_refused(self, request: Any) -> bool:
        """True (aborted, counted) if a navigation the page started itself - an iframe, a script's
        ``location`` change - is refused by the crawl's policy. The navigation Scrapy asked for (the
        first one of a fresh page's main frame) already passed the downloader middlewares."""
        frame = request.frame
        main = frame is not None and frame.parent_frame is None
        if main and request.redirected_from is None and (frame.url or "about:blank") == "about:blank":
            return False
        url: str = request.url
        if not url.startswith(("http://", "https://")):
            return self._abort("navigation_scheme", url) if not url.startswith(("about:", "data:")) else False
        if await self._policy_refuses(url):
            return self._abort("navigation", url)
        self.crawler.stats.inc_value("imagecrawl/browser/navigations")
        return False

    async def _policy_refuses(self, url: str) -> bool:
        from scrapy import Request
        from scrapy.exceptions import IgnoreRequest

        probe = Request(url, meta={meta.RENDER: "browser"})
        for mw in self._crawl_policy():
            try:
                await mw.process_request(probe)
            except IgnoreRequest as exc:
                logger.info("Browser request refused (%s): %s", exc, url)
                return True
        return False

    def _third_party(self, request: Any, url: str) -> bool:
        frame = request.frame
        page_url = frame.url if frame is not None else ""
        return not self.config.allow_third_party and page_url.startswith("http") and _site(page_url) != _site(url)

    async def _hop_refused(self, request: Any, url: str) -> bool:
        """True (counted) if the ``Location`` of a redirect may not be followed: the crawl's policy applies
        to every hop, and a page's own XHR/fetch stays on its site."""
        if not url.startswith(("http://", "https://")):
            return self._abort("redirect", url)
        if not request.is_navigation_request():
            if self.blocked is not None and self.blocked.search(url):
                return self._abort("tracker", url)
            if self._third_party(request, url):
                return self._abort("third_party", url)
        if await self._policy_refuses(url):
            return self._abort("redirect", url)
        return False

    async def route(self, route: Any, request: Any) -> None:
        """A request the page made itself: aborted if refused, else fetched hop by hop."""
        if await self(request):
            await route.abort()
            return
        headers = await request.all_headers()
        if self.user_agent:
            headers["user-agent"] = self.user_agent
        await self.fetch(route, request, headers, request.method, request.post_data_buffer)

    async def fetch(self, route: Any, request: Any, headers: dict[str, str], method: str, data: Any) -> None:
        """Fetch ``request`` without following redirects, check each hop with :meth:`_hop_refused` and
        fulfil the browser's request with the final response (so Chromium follows no redirect itself)."""
        from playwright.async_api import Error as PlaywrightError

        headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        url = request.url
        try:
            response = await route.fetch(method=method, headers=headers, post_data=data, max_redirects=0)
            for hop in range(self.max_redirects + 1):
                location = response.headers.get("location")
                if response.status not in REDIRECT_STATUSES or not location:
                    break
                url = urljoin(url, location)
                await response.dispose()
                refused = self._abort("redirect", url) if hop == self.max_redirects else None
                if refused or await self._hop_refused(request, url):
                    # the redirect without its Location: a dead end for the browser, and for Scrapy (the
                    # page it asked for) a 3xx response it ignores, as when it refuses a redirect itself
                    kept = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED}
                    await route.fulfill(status=response.status, headers=kept, body=b"")
                    return
                self.crawler.stats.inc_value("imagecrawl/browser/redirects")
                if response.status in (301, 302, 303) and method != "HEAD":
                    method, data = "GET", None
                response = await request.frame.page.context.request.fetch(
                    url, method=method, headers=headers, data=data, max_redirects=0
                )
            if url == request.url or "html" not in response.headers.get("content-type", ""):
                await route.fulfill(response=response)
            else:
                await route.fulfill(response=response, body=with_base(await response.body(), url))
        except PlaywrightError as exc:  # the page closed, the server went away...
            logger.debug("Browser request failed: %s (%s)", url, exc)
            with contextlib.suppress(PlaywrightError):
                await route.abort()

    async def __call__(self, request: Any) -> bool:
        url: str = request.url
        if request.is_navigation_request():
            return await self._navigation_refused(request)
        if not url.startswith(("http://", "https://")):
            return False  # data:, blob:
        if request.resource_type in self.config.block_types:
            return self._abort(request.resource_type, url)
        if self.blocked is not None and self.blocked.search(url):
            return self._abort("tracker", url)
        if self._third_party(request, url):
            return self._abort("third_party", url)
        self.crawler.stats.inc_value("imagecrawl/browser/subrequests")
        # distributed crawls: the page's own requests wait at the site's gate shared by all workers
        limiter = crawl_context(self.crawler).shared_limiter()
        if limiter is not None:
            site = site_of_url(url, self.site_key)
            while (wait := limiter.acquire(site)) > 0:
                await asyncio.sleep(min(wait, 1.0))
        return False


def _policy_handler() -> type:
    from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

    class PolicyDownloadHandler(ScrapyPlaywrightDownloadHandler):
        """scrapy-playwright's handler whose page routes fetch every request through the crawl's
        :class:`RequestPolicy` - the navigation Scrapy asked for (its headers, method and body) included,
        so a redirect of that one is checked hop by hop too."""

        def _make_request_handler(
            self,
            context_name: str,
            method: str,
            url: str,
            headers: Any,
            body: bytes | None,
            encoding: str,
            spider: Any,
            initial_request_done: asyncio.Event,
        ) -> Any:
            policy: RequestPolicy = self.abort_request

            async def handler(route: Any, request: Any) -> None:
                initial = request.url.rstrip("/") == url.rstrip("/") and request.is_navigation_request()
                if not initial or initial_request_done.is_set():
                    await policy.route(route, request)
                    return
                initial_request_done.set()  # it passed the downloader middlewares already
                final = await request.all_headers()
                if self.process_request_headers is not None:
                    final = self.process_request_headers(
                        browser_type_name=self.config.browser_type_name,
                        playwright_request=request,
                        scrapy_request_data={
                            "method": method,
                            "url": url,
                            "headers": headers,
                            "body": body,
                            "encoding": encoding,
                        },
                    )
                    final = await final if inspect.isawaitable(final) else final
                headers.clear()
                headers.update(final)
                await policy.fetch(route, request, dict(final), method, body or None)

            return handler

    return PolicyDownloadHandler


def __getattr__(name: str) -> Any:
    # built on first use (``DOWNLOAD_HANDLERS`` loads it by name) so that importing this module needs no
    # scrapy-playwright
    if name == "PolicyDownloadHandler":
        return _policy_handler()
    raise AttributeError(name)


def configure(crawler: Any) -> BrowserConfig:
    """Route ``meta["playwright"]`` requests to scrapy-playwright with the configured Chromium.

    Called by a spider's ``from_crawler`` (before the settings freeze) when it needs a browser."""
    settings = crawler.settings
    config = BrowserConfig.from_settings(settings)
    try:
        import scrapy_playwright  # noqa: F401
    except ImportError:
        raise missing_extra('a profile with render = "browser"', "browser", "scrapy-playwright") from None
    if not os.path.exists(config.executable):
        raise ConfigError(
            f"no browser at {config.executable}: apt-get install chromium, or set IMAGECRAWL_BROWSER_EXECUTABLE"
        )
    handler = f"{__name__}.PolicyDownloadHandler"
    settings.set("DOWNLOAD_HANDLERS", {"http": handler, "https": handler}, priority="spider")
    settings.set("PLAYWRIGHT_BROWSER_TYPE", "chromium", priority="spider")
    settings.set(
        "PLAYWRIGHT_LAUNCH_OPTIONS",
        {"executable_path": config.executable, "headless": config.headless, "args": list(config.args)},
        priority="spider",
    )
    settings.set("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT", config.navigation_timeout_seconds * 1000, priority="spider")
    settings.set("PLAYWRIGHT_MAX_PAGES_PER_CONTEXT", config.max_pages, priority="spider")
    settings.set("PLAYWRIGHT_ABORT_REQUEST", RequestPolicy(config, crawler), priority="spider")
    logger.info("Pages of this crawl are rendered in %s (headless=%s)", config.executable, config.headless)
    return config
