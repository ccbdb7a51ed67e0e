"""Retry-After parsing (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, capped."""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """A parsed Retry-After: the seconds to wait from now, and whether an absurd value was capped."""

    seconds: float
    capped: bool = False
    raw: str = ""
    is_date: bool = False

    def pause_seconds(self, margin: float = 0.1) -> float:
        """How long to stay away: the value plus a margin for the time the answer spent on its way
        (and an HTTP date's whole-second resolution)."""
        return self.seconds + margin + (1.0 if self.is_date else 0.0)


def parse_retry_after(value: str | bytes | None, now: float, max_seconds: float) -> RetryAfter | None:
    """Seconds to wait according to ``value`` (``now`` is a Unix timestamp for HTTP dates).

    Returns ``None`` for a missing or unparseable header; a date in the past gives 0 s; a value above
    ``max_seconds`` is capped (``capped=True``) so a hostile or buggy header cannot park a site forever.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    seconds: float
    try:
        seconds = float(text)
        if not math.isfinite(seconds):
            return RetryAfter(max_seconds, capped=True, raw=text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
        is_date = True
    else:
        is_date = False
    seconds = max(0.0, seconds)
    if seconds > max_seconds:
        return RetryAfter(max_seconds, capped=True, raw=text, is_date=is_date)
    return RetryAfter(seconds, raw=text, is_date=is_date)
