"""Ban detection: bursts of 401/403/429, challenge pages, soft bans (pages without what a healthy page
must contain).  The verdicts feed the per-site ban state machine in the pacing gate, which makes a
banned site go quiet (exponential cool-down), sends one probe, resumes slowly or abandons the site;
when every site is abandoned the spider closes with reason ``banned``.  Never evades: no identity,
proxy or header rotation of any kind.

Sits after HttpCompressionMiddleware (590) on the way back so it reads decompressed bodies.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Headers, Response, TextResponse
from scrapy.settings import BaseSettings

from imagecrawl import defaults, meta
from imagecrawl.pacing import Verdict
from imagecrawl.pacing.bans import EVIDENCE, BanState
from imagecrawl.pacing.config import RetryConfig
from imagecrawl.pacing.downloadermiddlewares.pacing import PacingRuntime, runtime_for
from imagecrawl.pacing.downloadermiddlewares.retry import retry_later
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)


#: Ban answers whose request is fetched again later (429s are the retry middleware's, with Retry-After).
BAN_RETRY = EVIDENCE - {Verdict.STATUS_429}
#: Only the start of a body is searched for markers.
SCAN_BYTES = 65536


@dataclass(frozen=True, slots=True)
class BansConfig:
    enabled: bool = defaults.IMAGECRAWL_BANS_ENABLED
    #: markup of challenge/interstitial pages (IMAGECRAWL_TUNING['ban_challenge_markers'])
    challenge_markers: tuple[str, ...] = DEFAULTS.ban_challenge_markers
    healthy_markers: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        markers = tuning(settings).ban_challenge_markers
        healthy = {
            str(site).lower(): re.compile(str(rx))
            for site, rx in settings.getdict("IMAGECRAWL_BAN_HEALTHY_MARKERS").items()
        }
        return cls(
            enabled=settings.getbool("IMAGECRAWL_BANS_ENABLED"),
            challenge_markers=tuple(markers),
            healthy_markers=healthy,
        )


def classify_response(
    status: int,
    headers: Mapping[str, str],
    text: str | None,
    challenge_markers: Iterable[str],
    healthy_marker: re.Pattern[str] | None,
) -> Verdict:
    """Pure: what one answer says about a ban (``headers`` with lower-case names; ``text`` is the
    start of a textual body, ``None`` for binary bodies)."""
    if headers.get("cf-mitigated", "").strip().lower() == "challenge":
        return Verdict.CHALLENGE
    if text is not None and status in (200, 403, 429, 503) and any(m in text for m in challenge_markers):
        return Verdict.CHALLENGE
    if status == 401:
        return Verdict.STATUS_401
    if status == 403:
        return Verdict.STATUS_403
    if status == 429:
        return Verdict.STATUS_429
    if 200 <= status < 300:
        if healthy_marker is not None and text is not None and not healthy_marker.search(text):
            return Verdict.SOFT
        return Verdict.HEALTHY
    return Verdict.NEUTRAL


class ResponseHeaders(Mapping[str, str]):
    """A response's headers as :func:`classify_response` reads them (lower-case names, latin-1 text), each
    decoded when asked: not every header of every response decoded into a dict first."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        value = self._headers.get(name)
        if value is None:
            raise KeyError(name)
        return bytes(value).decode("latin-1")

    def __iter__(self) -> Iterator[str]:
        return (bytes(k).decode("latin-1").lower() for k in self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class BanMiddleware:
    def __init__(self, crawler: Crawler, config: BansConfig, runtime: PacingRuntime) -> None:
        assert crawler.stats is not None
        self.crawler = crawler
        self.stats = crawler.stats
        self.config = config
        self.runtime = runtime
        self.retry = RetryConfig.from_settings(crawler.settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = BansConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("IMAGECRAWL_BANS_ENABLED is off")
        if not crawler.settings.getbool("IMAGECRAWL_PACING_ENABLED"):
            raise NotConfigured("ban handling needs the pacing gate (IMAGECRAWL_PACING_ENABLED is off)")
        return cls(crawler, config, runtime_for(crawler))

    def _marker(self, request: Request, site: str) -> re.Pattern[str] | None:
        marker = request.meta.get(meta.HEALTHY_MARKER)
        if marker:
            return marker if isinstance(marker, re.Pattern) else re.compile(str(marker))
        return self.config.healthy_markers.get(site)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        sent_at = request.meta.get(meta.SENT_AT)
        if sent_at is None:  # not paced (cache hit, data: URL, dont_pace)
            return response
        site = self.runtime.site_of(request)
        text: str | None = None
        if isinstance(response, TextResponse):
            text = response.body[:SCAN_BYTES].decode(response.encoding or "utf-8", errors="replace")
        headers = ResponseHeaders(response.headers)
        marker = self._marker(request, site)
        verdict = classify_response(response.status, headers, text, self.config.challenge_markers, marker)
        self._report(site, verdict, float(sent_at))
        banned = self.runtime.gate.state_of(site) in (BanState.BANNED, BanState.PROBING)
        if banned and verdict in BAN_RETRY and self.retry.enabled and not request.meta.get("dont_retry"):
            # Once the site has banned us, a ban answer says nothing about the page: fetch it again
            # when the site lets us (the gate holds the copy through the cool-down; it is dropped if
            # the site is abandoned).  A lone 403 before any ban is the page's own answer.
            delay = self.retry.backoff(int(request.meta.get("retry_times", 0)) + 1, self.runtime.rng)
            retry = retry_later(self.crawler, request, f"ban-{verdict.value}", delay, self.retry)
            if retry is not None:
                return retry
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        sent_at = request.meta.get(meta.SENT_AT)
        if sent_at is not None:
            self._report(self.runtime.site_of(request), Verdict.ERROR, float(sent_at))

    def _report(self, site: str, verdict: Verdict, sent_at: float) -> None:
        if verdict not in (Verdict.HEALTHY, Verdict.NEUTRAL, Verdict.ERROR):
            self.stats.inc_value(f"imagecrawl/bans/evidence/{verdict.value}")
        self.runtime.gate.verdict(site, verdict, sent_at, time.monotonic())
        self.runtime.flush()
