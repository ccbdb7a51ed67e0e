"""Sandbox behaviours of an overloaded or defensive site, per site (the ``Host`` name, port excluded,
so one server can play several sites: ``127.0.0.1`` and ``localhost`` are two sites).

* capacity: a token bucket (``--capacity`` requests/s, ``--capacity-burst`` tokens;
  unlike ``--rate-limit``, which is per client IP and spares robots.txt); a request that finds it
  empty is answered 429 at once (with ``Retry-After`` when ``--retry-after`` is given, in seconds or
  as an HTTP date with ``--retry-after-date``).  While an announced Retry-After window is open every
  request of that site is answered 429 too.  With ``--retry-after-share F`` only that share of the
  refusals carry Retry-After, spread evenly (0.5: the first, third, fifth...); the others announce
  nothing and open no window.
* latency: ``--latency`` seconds plus ``--latency-per-queued`` seconds per request of that site
  already in progress: the site slows down as its queue grows.
* bans: ``--ban-mode 403|challenge|empty`` once the site sees more than ``--ban-rate`` requests within
  one second, or after ``--ban-after`` requests; the ban lasts ``--ban-seconds`` (``--ban-extend``: every
  request during the ban restarts it).  ``403`` answers 403, ``challenge`` a Cloudflare-style challenge
  page (403 + ``cf-mitigated: challenge``), ``empty`` a 200 gallery page with no images (a soft ban).
* fixed answers by path with ``--status-paths``: ``/status/<code>?retry_after=<s>``, ``/challenge``,
  ``/empty``.

The knobs are :class:`tests.sandbox.config.MisbehaveConfig`, the flags are in
:mod:`tests.sandbox.cli`.  The request log (``--log``) records what each request got; the
tests and ``benchmarks/politeness.py`` measure rates, 429s and Retry-After windows from it.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tests.sandbox.config import MisbehaveConfig

BAN_MODES = ("403", "challenge", "empty")

CHALLENGE_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
    '<div id="challenge-form"><noscript>Enable JavaScript and cookies to continue</noscript></div>'
    "<script>window._cf_chl_opt={cvId:'3'};</script></body></html>\n"
)
EMPTY_GALLERY = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Gallery</title></head>\n'
    '<body>\n<h1>Gallery</h1>\n<div class="grid">\n</div>\n</body></html>\n'
)
FORBIDDEN_PAGE = "<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>\n"


@dataclass(slots=True)
class SiteLoad:
    tokens: float
    refilled: float
    retry_after_until: float = 0.0
    in_progress: int = 0
    seen: int = 0
    refusals: int = 0  # 429s for an empty bucket (those inside a window not counted)
    recent: deque[float] = field(default_factory=deque)
    banned_until: float = 0.0


def _retry_after_value(seconds: float, as_date: bool) -> str:
    if as_date:
        return email.utils.formatdate(time.time() + seconds, usegmt=True)
    return f"{seconds:g}"


def announces(share: float, n: int) -> bool:
    """Whether the ``n``-th refusal (0-based) carries Retry-After when a ``share`` of them do: spread
    evenly, the first included, so every prefix of the refusals holds the share to within one."""
    return math.ceil((n + 1) * share - 1e-9) > math.ceil(n * share - 1e-9)


def _too_many(retry_after: float | None, as_date: bool) -> web.Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = _retry_after_value(retry_after, as_date)
    return web.Response(status=429, text="Too Many Requests\n", headers=headers)


def _ban_response(mode: str) -> web.Response:
    if mode == "challenge":
        return web.Response(
            status=403, text=CHALLENGE_PAGE, content_type="text/html", headers={"cf-mitigated": "challenge"}
        )
    if mode == "empty":
        return web.Response(status=200, text=EMPTY_GALLERY, content_type="text/html")
    return web.Response(status=403, text=FORBIDDEN_PAGE, content_type="text/html")


def _fixed_answer(request: web.Request) -> web.Response | None:
    path = request.path
    if path.startswith("/status/"):
        try:
            code = int(path.removeprefix("/status/").strip("/"))
        except ValueError:
            return None
        headers = {}
        ra = request.query.get("retry_after")
        if ra:
            headers["Retry-After"] = ra
        return web.Response(status=code, text=f"status {code}\n", headers=headers)
    if path == "/challenge":
        return _ban_response("challenge")
    if path == "/empty":
        return _ban_response("empty")
    return None


class Misbehaviour:
    """The per-site state of a misbehaving server (clock injectable for unit tests)."""

    def __init__(self, config: MisbehaveConfig) -> None:
        self.config = config
        self.sites: dict[str, SiteLoad] = {}

    def _site(self, host: str, now: float) -> SiteLoad:
        s = self.sites.get(host)
        if s is None:
            s = SiteLoad(tokens=self.burst, refilled=now)
            self.sites[host] = s
        return s

    @property
    def burst(self) -> float:
        c = self.config
        if c.burst is not None:
            return max(1.0, c.burst)
        return max(1.0, c.capacity or 1.0)

    def admit(self, host: str, now: float) -> web.Response | None:
        """The answer for a request arriving ``now``; ``None`` lets it through to the route."""
        c = self.config
        s = self._site(host, now)
        s.seen += 1
        if c.ban_mode is not None:
            s.recent.append(now)
            while s.recent and s.recent[0] <= now - 1.0:
                s.recent.popleft()
            if now < s.banned_until:
                if c.ban_extend:
                    s.banned_until = now + c.ban_seconds
                return _ban_response(c.ban_mode)
            if (c.ban_rate is not None and len(s.recent) > c.ban_rate) or (
                c.ban_after is not None and s.seen > c.ban_after
            ):
                s.banned_until = now + c.ban_seconds
                s.recent.clear()
                return _ban_response(c.ban_mode)
        if c.capacity is not None:
            if now < s.retry_after_until:
                return _too_many(max(0.0, s.retry_after_until - now) if c.retry_after else None, c.retry_after_date)
            s.tokens = min(self.burst, s.tokens + (now - s.refilled) * c.capacity)
            s.refilled = now
            if s.tokens < 1.0:
                s.refusals += 1
                if c.retry_after is None or not announces(c.retry_after_share, s.refusals - 1):
                    return _too_many(None, c.retry_after_date)
                s.retry_after_until = now + c.retry_after
                return _too_many(c.retry_after, c.retry_after_date)
            s.tokens -= 1.0
        return None


def make_misbehave(config: MisbehaveConfig | None) -> Middleware | None:
    """The aiohttp middleware for ``config``; ``None`` when no misbehaviour is asked for."""
    if config is None or not (config.active or config.status_paths):
        return None
    state = Misbehaviour(config)

    @web.middleware
    async def misbehave(request: web.Request, handler: Handler) -> web.StreamResponse:
        if config.status_paths:
            fixed = _fixed_answer(request)
            if fixed is not None:
                return fixed
        if not state.config.active:
            return await handler(request)
        host = (request.url.host or "").lower()
        answer = state.admit(host, time.monotonic())
        if answer is not None:
            return answer
        site = state.sites[host]
        c = state.config
        delay = c.latency + c.latency_per_queued * site.in_progress
        site.in_progress += 1
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            return await handler(request)
        finally:
            site.in_progress -= 1

    return misbehave


# --- measuring a crawl from the request log ---------------------------------------------------


def max_rate_per_second(times: list[float], window: float = 1.0) -> int:
    """The most requests that arrived within any ``window`` seconds (sliding, half-open)."""
    ts = sorted(times)
    best = j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def announced_window_end(record: dict[str, object], fallback: float | None) -> float | None:
    """When the Retry-After window a 429/503 ``record`` announced ends (unix time), or ``None`` when it
    announced none.  The request log records the header it sent (``retry_after``: seconds, counted from
    when the answer was sent, or an HTTP date); a record without that key (an older log) is taken to
    have announced ``fallback`` seconds."""
    if record.get("status") not in (429, 503):
        return None
    sent = float(record["t"]) + float(record.get("dur", 0.0))  # type: ignore[arg-type]
    if "retry_after" not in record:
        return None if fallback is None else sent + fallback
    value = record["retry_after"]
    if value is None or value == "":
        return None
    try:
        return sent + float(str(value))
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError):
        return None


def requests_inside_windows(records: list[dict[str, object]], retry_after: float | None = None) -> int:
    """Requests that arrived while an announced Retry-After window was open.  A 429/503 arriving
    outside any window opens the window its ``Retry-After`` announced (see
    :func:`announced_window_end`; ``retry_after`` seconds for records that do not say); one without
    the header opens none.  A request arriving inside an open window is a violation (and does not
    extend it)."""
    inside = 0
    window_end = float("-inf")
    for r in sorted(records, key=lambda r: float(r["t"])):  # type: ignore[arg-type]
        t = float(r["t"])  # type: ignore[arg-type]
        if t < window_end:
            inside += 1
            continue
        end = announced_window_end(r, retry_after)
        if end is not None:
            window_end = end
    return inside


def overloaded_seconds(records: list[dict[str, object]]) -> int:
    """Whole seconds (since the first request) in which the site had to answer 429 or 503."""
    if not records:
        return 0
    t0 = min(float(r["t"]) for r in records)  # type: ignore[arg-type]
    return len({int(float(r["t"]) - t0) for r in records if r.get("status") in (429, 503)})  # type: ignore[arg-type]
