"""``imagecrawl.sandbox.optout_site`` is :mod:`imagecrawl.sandbox.sites.optout`; its names stay importable here."""

from __future__ import annotations

from imagecrawl.sandbox.payloads import optout_png
from imagecrawl.sandbox.sites.optout import (
    CHUNK_BYTES,
    IMAGE_CASES,
    IMAGES_PER_PAGE,
    PAGE_CASES,
    ROBOTS_DISALLOW,
    TDMREP_JSON,
    add_routes,
    image_urls,
)

__all__ = [
    "CHUNK_BYTES",
    "IMAGES_PER_PAGE",
    "IMAGE_CASES",
    "PAGE_CASES",
    "ROBOTS_DISALLOW",
    "TDMREP_JSON",
    "add_routes",
    "image_urls",
    "optout_png",
]
