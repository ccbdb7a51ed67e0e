"""``imagecrawl.sandbox.hostile`` is :mod:`imagecrawl.sandbox.sites.hostile`; its names stay importable here."""

from __future__ import annotations

from imagecrawl.sandbox.sites.hostile import BEHAVIOURS, DUPLICATES, Behaviour, make_hostile

__all__ = ["BEHAVIOURS", "DUPLICATES", "Behaviour", "make_hostile"]
