"""Rendering JavaScript galleries in a headless browser (scrapy-playwright with Debian's Chromium).

A gallery profile with ``render = "browser"`` makes the gallery spider send its page requests with
``meta["playwright"] = True``: they still pass every downloader middleware (robots, opt-outs, netguard,
pacing, the shared rate gate, ban handling) and only then does scrapy-playwright load them in Chromium.
Listing pages are scrolled until no new items arrive (infinite scroll); the rendered DOM is the
response the page objects parse. Every request a rendered page, any of its frames (``about:blank``,
``srcdoc``, ``data:``, ``blob:`` ones included), workers or popups make is refused or routed through the
crawl's own policy (:class:`RequestPolicy`): the network guard, robots.txt and opt-out middlewares, then the
site's pacing gate, with the crawl's User-Agent; Chromium follows no redirect itself (each hop is fetched,
checked and paced by :class:`PolicyDownloadHandler` with ``route.fetch(max_redirects=0)``; an HTML page
reached by a redirect gets a ``<base>`` of its own URL so that its relative links still resolve against it).
Fonts, media and images are aborted (images are fetched by the crawl itself, as gated requests), so are
trackers and other sites. Popups are closed, the context's own route aborts whatever no page route sees,
service workers are blocked, WebSockets closed, and Chromium's own network leads to a proxy that does not
exist, so nothing that escapes the routes reaches any address (docs/optout.md).

Only :func:`configure` touches Scrapy settings; the spider calls it from ``from_crawler`` when its
profile asks for a browser, so crawls that need none never start one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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
from imagecrawl.tuning import tuning

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
    # Every request of a page is fulfilled by the crawl's own route (fetched by Playwright, outside
    # Chromium's network stack). Whatever a route cannot see (a preconnect, WebRTC) would go out by
    # Chromium's own network: it is sent to a proxy that does not exist, loopback included.
    "--proxy-server=http://127.0.0.1:1",
    "--proxy-bypass-list=<-loopback>",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-features=NetworkPrediction",
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
    """``IMAGECRAWL_BROWSER_*`` (defaults in imagecrawl/defaults.py)."""

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
        extra = tuning(settings).browser_args
        return cls(
            executable=str(settings.get("IMAGECRAWL_BROWSER_EXECUTABLE")),
            headless=tuning(settings).browser_headless,
            args=tuple(dict.fromkeys([*DEFAULT_ARGS, *extra])),
            scroll_idle_seconds=tuning(settings).browser_scroll_idle_seconds,
            max_scrolls=tuning(settings).browser_max_scrolls,
            navigation_timeout_seconds=tuning(settings).browser_timeout_seconds,
            block_types=frozenset(tuning(settings).browser_block_types),
            block_patterns=tuple(tuning(settings).browser_block_patterns),
            allow_third_party=tuning(settings).browser_allow_third_party,
            max_pages=max(1, tuning(settings).browser_max_pages),
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


def _http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


class RequestPolicy:
    """``PLAYWRIGHT_ABORT_REQUEST``, and the route of every request a rendered page, any of its frames
    (``about:blank``, ``srcdoc``, ``data:``, ``blob:`` ones included), workers or popups make: each is
    refused, or checked by the crawl's own network guard, robots.txt and opt-out middlewares, paced by its
    pacing middleware and fetched hop by hop with the crawl's User-Agent. Counted as
    ``imagecrawl/browser/aborted/<reason>``, ``imagecrawl/browser/subrequests`` and
    ``imagecrawl/browser/navigations``."""

    def __init__(self, config: BrowserConfig, crawler: Any) -> None:
        self.config = config
        self.crawler = crawler  # its stats exist only once the crawl starts: read them late
        self.blocked = config.blocked
        self.site_key = site_key_mode(crawler.settings)
        self.max_redirects = crawler.settings.getint("REDIRECT_MAX_TIMES")

    @property
    def user_agent(self) -> str:
        """The crawl's identity, read late: the add-on sets ``USER_AGENT`` after the spider configured
        the browser."""
        return str(self.crawler.settings.get("USER_AGENT") or "")

    def _abort(self, reason: str, url: str) -> bool:
        self.crawler.stats.inc_value(f"imagecrawl/browser/aborted/{reason}")
        logger.debug("Browser request aborted (%s): %s", reason, url)
        return True

    def _crawl_policy(self) -> tuple[list[Any], Any]:
        """The crawl's own network guard, robots.txt and opt-out middlewares (the instances Scrapy
        built), in downloader order, and its pacing middleware (or None): the browser's requests pass
        exactly what Scrapy's requests pass."""
        from imagecrawl.guard.downloadermiddlewares.netguard import NetGuardMiddleware
        from imagecrawl.optout.downloadermiddlewares.optout import OptOutMiddleware
        from imagecrawl.optout.downloadermiddlewares.robots import RobotsMiddleware
        from imagecrawl.pacing.downloadermiddlewares.pacing import PacingMiddleware

        engine = getattr(self.crawler, "engine", None)
        if engine is None:
            return [], None
        kinds = (NetGuardMiddleware, RobotsMiddleware, OptOutMiddleware)
        mws = engine.downloader.middleware.middlewares
        pacing = next((mw for mw in mws if isinstance(mw, PacingMiddleware)), None)
        return [mw for mw in mws if isinstance(mw, kinds)], pacing

    async def admit(self, url: str) -> Any:
        """The Scrapy request standing for the browser's request of ``url`` once the crawl's policy let
        it through and its site's pacing gate gave it a slot (hand it to :meth:`done`), or None if refused."""
        from scrapy import Request
        from scrapy.exceptions import IgnoreRequest

        probe = Request(url, meta={meta.RENDER: "browser"})
        guards, pacing = self._crawl_policy()
        try:
            for mw in guards:
                await mw.process_request(probe)
            if pacing is not None:
                await pacing.process_request(probe)
            else:
                # pacing off: distributed crawls still wait at the site's gate shared by all workers
                limiter = crawl_context(self.crawler).shared_limiter()
                if limiter is not None:
                    site = site_of_url(url, self.site_key)
                    while (wait := limiter.acquire(site)) > 0:
                        await asyncio.sleep(min(wait, 1.0))
        except IgnoreRequest as exc:
            logger.info("Browser request refused (%s): %s", exc, url)
            return None
        return probe

    def done(self, probe: Any, status: int | None, headers: dict[str, str] | None = None) -> None:
        """The answer to an admitted request (``status`` None: it failed), fed back to pacing."""
        from scrapy.http import Response

        _, pacing = self._crawl_policy()
        if pacing is None or probe is None:
            return
        if status is None:
            pacing.process_exception(probe, ConnectionError("browser request failed"))
        else:
            pacing.process_response(probe, Response(probe.url, status=status, headers=headers or {}))

    def _third_party(self, origin: str | None, url: str) -> bool:
        """A request to another site than the page's own (the site of the URL the crawl rendered,
        whatever the URL of the frame that asks: ``about:blank``, ``data:``, ``blob:`` frames belong
        to the page that made them)."""
        if self.config.allow_third_party:
            return False
        return origin is None or _site(origin) != _site(url)

    async def route(self, route: Any, request: Any, origin: str | None) -> None:
        """A request a page of the crawl made itself (``origin``: the URL the crawl asked to render):
        aborted if refused, else admitted and fetched hop by hop."""
        url: str = request.url
        navigation = request.is_navigation_request()
        if not _http(url):
            if url.startswith(("data:", "blob:", "about:")):
                with contextlib.suppress(Exception):
                    await route.continue_()  # local: nothing leaves the browser
                return
            await self._refuse(route, "navigation_scheme" if navigation else "scheme", url)
            return
        if not navigation:
            if request.resource_type in self.config.block_types:
                await self._refuse(route, request.resource_type, url)
                return
            if self.blocked is not None and self.blocked.search(url):
                await self._refuse(route, "tracker", url)
                return
            if self._third_party(origin, url):
                await self._refuse(route, "third_party", url)
                return
        probe = await self.admit(url)
        if probe is None:
            await self._refuse(route, "navigation" if navigation else "policy", url)
            return
        if navigation:
            self.crawler.stats.inc_value("imagecrawl/browser/navigations")
        else:
            self.crawler.stats.inc_value("imagecrawl/browser/subrequests")
        headers = await request.all_headers()
        await self.fetch(route, request, headers, request.method, request.post_data_buffer, probe, origin)

    async def _refuse(self, route: Any, reason: str, url: str) -> None:
        from playwright.async_api import Error as PlaywrightError

        self._abort(reason, url)
        with contextlib.suppress(PlaywrightError):
            await route.abort()

    async def unowned(self, route: Any, request: Any) -> None:
        """The context's route: requests of pages the crawl did not open (popups) and anything else the
        page routes do not see. None of them is the crawl's business: all are aborted."""
        await self._refuse(route, "popup", request.url)

    async def close_popup(self, page: Any) -> None:
        """A page opened by a page of the crawl (``window.open``, ``target=_blank``): closed at once."""
        from playwright.async_api import Error as PlaywrightError

        self.crawler.stats.inc_value("imagecrawl/browser/popups_closed")
        with contextlib.suppress(PlaywrightError):
            await page.close()

    async def _hop_refused(self, request: Any, url: str, origin: str | None) -> Any:
        """The admitted request for the ``Location`` of a redirect, or None (counted) if it may not be
        followed: the crawl's policy applies to every hop, and a page's own XHR/fetch stays on its site."""
        reason: str | None = None
        if not _http(url):
            reason = "redirect"
        elif not request.is_navigation_request() and self.blocked is not None and self.blocked.search(url):
            reason = "tracker"
        elif not request.is_navigation_request() and self._third_party(origin, url):
            reason = "third_party"
        if reason is not None:
            self._abort(reason, url)
            return None
        probe = await self.admit(url)
        if probe is None:
            self._abort("redirect", url)
        return probe

    async def fetch(
        self,
        route: Any,
        request: Any,
        headers: dict[str, str],
        method: str,
        data: Any,
        probe: Any,
        origin: str | None,
    ) -> int | None:
        """Fetch ``request`` without following redirects, check and admit each hop with
        :meth:`_hop_refused` and fulfil the browser's request with the final response (so Chromium
        follows no redirect itself). Returns the final status (None: failed)."""
        from playwright.async_api import Error as PlaywrightError

        headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        if self.user_agent:
            headers["user-agent"] = self.user_agent
        url = request.url
        status: int | None = None
        try:
            response = await route.fetch(method=method, headers=headers, post_data=data, max_redirects=0)
            self.done(probe, response.status, response.headers)
            probe = None
            for hop in range(self.max_redirects + 1):
                location = response.headers.get("location")
                if response.status not in REDIRECT_STATUSES or not location:
                    break
                url = urljoin(url, location)
                await response.dispose()
                if hop == self.max_redirects:
                    self._abort("redirect", url)  # one more than REDIRECT_MAX_TIMES
                else:
                    probe = await self._hop_refused(request, url, origin)
                if probe is None:
                    # the redirect without its Location: a dead end for the browser, and for Scrapy (the
                    # page it asked for) a 3xx response it ignores, as when it refuses a redirect itself
                    kept = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED}
                    await route.fulfill(status=response.status, headers=kept, body=b"")
                    return response.status
                self.crawler.stats.inc_value("imagecrawl/browser/redirects")
                if response.status in (301, 302, 303) and method != "HEAD":
                    method, data = "GET", None
                response = await route.fetch(url=url, method=method, headers=headers, post_data=data, max_redirects=0)
                self.done(probe, response.status, response.headers)
                probe = None
            status = response.status
            if url == request.url or "html" not in response.headers.get("content-type", ""):
                await route.fulfill(response=response)
            else:
                await route.fulfill(response=response, body=with_base(await response.body(), url))
        except PlaywrightError as exc:  # the page closed, the server went away...
            self.done(probe, None)
            logger.debug("Browser request failed: %s (%s)", url, exc)
            with contextlib.suppress(PlaywrightError):
                await route.abort()
        return status

    async def __call__(self, request: Any) -> bool:
        """``PLAYWRIGHT_ABORT_REQUEST``: the page routes of this handler decide everything themselves."""
        return False


#: the Scrapy request scrapy-playwright is downloading (set around its download, read by the page route)
_SCRAPY_REQUEST: contextvars.ContextVar[Any] = contextvars.ContextVar("scrapy_request", default=None)


def _policy_handler() -> type:
    from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

    class PolicyDownloadHandler(ScrapyPlaywrightDownloadHandler):
        """scrapy-playwright's handler whose routes fetch every request through the crawl's
        :class:`RequestPolicy` - the navigation Scrapy asked for (its headers, method and body) included,
        so a redirect of that one is checked hop by hop too. Its browser contexts block service
        workers, speak with the crawl's User-Agent, abort every request no page route of the crawl
        sees (popups) and close popups; WebSockets are closed."""

        async def _download_request(self, request: Any, spider: Any = None) -> Any:
            token = _SCRAPY_REQUEST.set(request)
            try:
                return await super()._download_request(request, spider)
            finally:
                _SCRAPY_REQUEST.reset(token)

        async def _create_browser_context(self, name: str, context_kwargs: dict | None, spider: Any = None) -> Any:
            policy: RequestPolicy = self.abort_request
            kwargs = dict(context_kwargs or {})
            if policy.user_agent:
                kwargs.setdefault("user_agent", policy.user_agent)
            kwargs["service_workers"] = "block"
            wrapper = await super()._create_browser_context(name, kwargs, spider)
            context = wrapper.context
            await context.route("**", policy.unowned)
            await context.route_web_socket("**", _close_web_socket)

            async def on_page(page: Any) -> None:
                if await page.opener() is not None:
                    await policy.close_popup(page)

            context.on("page", on_page)
            return wrapper

        async def _create_page(self, request: Any, spider: Any) -> Any:
            page = await super()._create_page(request, spider)
            page.on("popup", self.abort_request.close_popup)
            return page

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
            scrapy_request = _SCRAPY_REQUEST.get()

            async def handler(route: Any, request: Any) -> None:
                initial = request.url.rstrip("/") == url.rstrip("/") and request.is_navigation_request()
                if not initial or initial_request_done.is_set():
                    await policy.route(route, request, url)
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
                if policy.user_agent:
                    headers["User-Agent"] = policy.user_agent
                # the document's pacing slot is given back once its first hop is fetched, not when the page
                # is done rendering: its redirect hops and the page's own requests take slots of the site
                await policy.fetch(route, request, dict(final), method, body or None, scrapy_request, url)

            return handler

    return PolicyDownloadHandler


async def _close_web_socket(ws: Any) -> None:
    """No WebSocket leaves the browser: the crawl cannot check or pace what flows in one."""
    from playwright.async_api import Error as PlaywrightError

    with contextlib.suppress(PlaywrightError):
        await ws.close()


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
    # Scrapy builds the spider before the add-ons run: put the add-on's defaults in place now, at the
    # add-on's priority (it sets the same values again later; a value set anywhere else still wins), so
    # that the browser's settings and the request policy read what the crawl will run with.
    from imagecrawl.addon import default_values

    for name, value in default_values().items():
        settings.set(name, value, priority="addon")
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
