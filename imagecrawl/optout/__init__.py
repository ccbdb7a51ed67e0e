"""Pure opt-out rules (no Scrapy imports): X-Robots-Tag, HTML meta robots, TDMRep, Crawl-delay registry.

The Scrapy shells live in :mod:`imagecrawl.optout.downloadermiddlewares.optout` and
:mod:`imagecrawl.optout.spidermiddlewares`; see docs/optout.md.
"""

from __future__ import annotations

from imagecrawl.optout.rules import (
    DEFAULT_DIRECTIVES,
    HtmlMeta,
    blocking_directives,
    parse_meta_content,
    parse_x_robots_tag,
    scan_html_meta,
)
from imagecrawl.optout.tdmrep import (
    TdmRule,
    location_matches,
    parse_tdm_header,
    parse_tdmrep_json,
    tdm_file_reservation,
    tdm_reserved,
)

__all__ = [
    "DEFAULT_DIRECTIVES",
    "HtmlMeta",
    "TdmRule",
    "blocking_directives",
    "location_matches",
    "parse_meta_content",
    "parse_tdm_header",
    "parse_tdmrep_json",
    "parse_x_robots_tag",
    "scan_html_meta",
    "tdm_file_reservation",
    "tdm_reserved",
]
