"""Per-site pacing and ban handling. The core is pure state machines (no Scrapy): the AIMD controller, the
Retry-After parser, the ban tracker and the rate gate that combines them, the frontier's site queues. The
Scrapy adapters: ``downloadermiddlewares/`` (``pacing``, ``bans``, ``retry``) and ``scheduler.py`` (the
site-aware frontier as Scrapy's ``SCHEDULER``)."""

from __future__ import annotations

from imagecrawl.pacing.aimd import AimdConfig, AimdController
from imagecrawl.pacing.bans import BanConfig, BanState, BanTracker, Verdict
from imagecrawl.pacing.gate import CONGESTION, Event, Feedback, InProcessGate, RateGate, Signal
from imagecrawl.pacing.retryafter import RetryAfter, parse_retry_after
from imagecrawl.pacing.sitekey import site_of_host, site_of_url

__all__ = [
    "CONGESTION",
    "AimdConfig",
    "AimdController",
    "BanConfig",
    "BanState",
    "BanTracker",
    "Event",
    "Feedback",
    "InProcessGate",
    "RateGate",
    "RetryAfter",
    "Signal",
    "Verdict",
    "parse_retry_after",
    "site_of_host",
    "site_of_url",
]
