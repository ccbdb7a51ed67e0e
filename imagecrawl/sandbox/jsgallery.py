"""``imagecrawl.sandbox.jsgallery`` is :mod:`imagecrawl.sandbox.sites.jsgallery`; its names stay importable here."""

from __future__ import annotations

from imagecrawl.sandbox.sites.jsgallery import PAGE_SIZE, add_routes

__all__ = ["PAGE_SIZE", "add_routes"]
