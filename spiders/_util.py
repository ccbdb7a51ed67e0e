"""Shared bits of the site adapters: argument parsing and counted, logged skips."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from scrapy.http import Response

logger = logging.getLogger(__name__)

#: meta of every API/listing/detail page request (image requests carry ``imagecrawl_kind = "image"``)
PAGE_META = {"imagecrawl_kind": "page"}


def optional_int(value: Any, name: str, *, minimum: int = 0) -> int | None:
    """A spider argument that is a non-negative int, or unset (None / ""). ``ValueError`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"-a {name}= must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"-a {name}= must be >= {minimum}, got {number}")
    return number


def count_errors(spider: Any, kinds: Iterable[str], response: Response | str) -> None:
    """Count each skip kind as ``imagecrawl/pages/errors/<kind>`` and log one line per page."""
    counts = Counter(kinds)
    if not counts:
        return
    stats = spider.crawler.stats
    for kind, n in counts.items():
        stats.inc_value(f"imagecrawl/pages/errors/{kind}", n)
    url = response if isinstance(response, str) else response.url
    logger.warning(
        "Skipped %d entr%s on %s: %s",
        sum(counts.values()),
        "y" if sum(counts.values()) == 1 else "ies",
        url,
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
    )


def count_error(spider: Any, kind: str, response: Response | str, message: str) -> None:
    """One page-level skip: counted as ``imagecrawl/pages/errors/<kind>`` and logged with ``message``."""
    spider.crawler.stats.inc_value(f"imagecrawl/pages/errors/{kind}")
    url = response if isinstance(response, str) else response.url
    logger.warning("Skipping page %s (%s): %s", url, kind, message)
