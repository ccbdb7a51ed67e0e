"""How much of a policy file (robots.txt, tdmrep.json) is read. Pure: no Scrapy.

A policy file is read up to ``IMAGECRAWL_TUNING['policy_max_bytes']`` (512 KiB, as Google reads 500 KiB of a
robots.txt): the download stops there (the Scrapy side raises ``StopDownload`` from
``bytes_received``), and what is read is cut back to its last complete line, so that a rule cut in the
middle (``Allow: /pri`` of ``Allow: /private/x``) is never read as a broader one. A compressed body is
decompressed up to the same budget, never further.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from imagecrawl.errors import ConfigError
from imagecrawl.tuning import DEFAULTS, tuning

DEFAULT_POLICY_MAX_BYTES: Final = DEFAULTS.policy_max_bytes
#: the Content-Encoding values read here (others make the body unreadable: ``None``)
_ZLIB: Final = {"gzip": 47, "x-gzip": 47, "deflate": 15}


class PolicyBodyError(ValueError):
    """A policy file whose body cannot be read within the budget (an unknown encoding, corrupt data)."""


def _inflate(data: bytes, encoding: str, cap: int) -> bytes:
    wbits = _ZLIB[encoding]
    try:
        out = zlib.decompressobj(wbits).decompress(data, cap)
    except zlib.error:
        if encoding != "deflate":
            raise
        out = zlib.decompressobj(-15).decompress(data, cap)  # raw deflate, as some servers send it
    return out


def _unbrotli(data: bytes, cap: int) -> bytes:
    import brotli

    decompressor = brotli.Decompressor()
    out = decompressor.process(data, output_buffer_limit=cap)
    return bytes(out[:cap])


def decode_policy_body(
    body: bytes, encodings: Iterable[str], cap: int = DEFAULT_POLICY_MAX_BYTES
) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of ``body`` once its ``Content-Encoding`` (applied in order) is undone,
    cut at the last line break when the budget was reached, and whether it was; raises
    :class:`PolicyBodyError`."""
    codings = [c.strip().lower() for value in encodings for c in value.split(",") if c.strip()]
    # a truncated transfer may leave a few more bytes than the budget (the last chunk read)
    data = body if codings else body[: cap + 1]
    for coding in reversed([c for c in codings if c != "identity"]):
        if coding not in _ZLIB and coding != "br":
            raise PolicyBodyError(f"unsupported Content-Encoding {coding!r}")
        try:
            data = _inflate(data, coding, cap + 1) if coding in _ZLIB else _unbrotli(data, cap + 1)
        except Exception as exc:  # zlib.error, brotli.error, a missing brotli module
            raise PolicyBodyError(f"cannot decode {coding}: {exc}") from exc
    return cut_to_budget(data, cap), len(data) > cap


def cut_to_budget(data: bytes, cap: int = DEFAULT_POLICY_MAX_BYTES) -> bytes:
    """``data`` if it fits in ``cap`` bytes, else its first ``cap`` bytes cut back to the last line
    break (CR or LF) in them; nothing when there is none."""
    if len(data) <= cap:
        return data
    head = data[:cap]
    end = max(head.rfind(b"\n"), head.rfind(b"\r"))
    return head[: end + 1] if end >= 0 else b""


MAX_POLICY_TTL_SECONDS: Final = 86400.0


@dataclass(frozen=True, slots=True)
class PolicyFileConfig:
    """``IMAGECRAWL_TUNING['policy_max_bytes']``, ``IMAGECRAWL_TUNING['policy_ttl_seconds']`` and
    ``IMAGECRAWL_TUNING['robots_retry_seconds']`` (defaults in imagecrawl/defaults.py)."""

    max_bytes: int = DEFAULT_POLICY_MAX_BYTES
    ttl_seconds: float = DEFAULTS.policy_ttl_seconds
    retry_seconds: float = DEFAULTS.robots_retry_seconds

    @classmethod
    def from_settings(cls, settings: Any) -> PolicyFileConfig:
        max_bytes = tuning(settings).policy_max_bytes
        ttl = tuning(settings).policy_ttl_seconds
        retry = tuning(settings).robots_retry_seconds
        if max_bytes < 1024:
            raise ConfigError(f"IMAGECRAWL_TUNING['policy_max_bytes'] must be at least 1024, got {max_bytes}")
        if not 0 < ttl <= MAX_POLICY_TTL_SECONDS:
            raise ConfigError(f"IMAGECRAWL_TUNING['policy_ttl_seconds'] must be > 0 and <= 86400 (RFC 9309), got {ttl}")
        if not 0 < retry < float("inf"):
            raise ConfigError(f"IMAGECRAWL_TUNING['robots_retry_seconds'] must be a positive number, got {retry}")
        return cls(max_bytes, ttl, retry)

    def next_retry(self, previous: float | None) -> float:
        """The wait before fetching an unreachable policy file again: ``retry_seconds``, doubling up to a day."""
        return self.retry_seconds if previous is None else min(previous * 2, MAX_POLICY_TTL_SECONDS)
