"""Crawlers and settings for unit tests, with the project's defaults loaded.

Scrapy's ``get_crawler(settings_dict=...)`` starts from Scrapy's own defaults only, so a component built
through it sees no ``IMAGECRAWL_*`` value at all. ``scrapy crawl`` always loads ``imagecrawl/defaults.py``
(the one source of those defaults); these helpers do the same::

    crawler = make_crawler(IMAGECRAWL_NEAR_POLICY="keep")
    pipeline = DedupePipeline.from_crawler(crawler)

    config = ProgressConfig.from_settings(Settings(project_settings(IMAGECRAWL_TUNING={"progress_sites": 2})))

The overrides replace the project's values at "project" priority, as if ``imagecrawl/defaults.py`` said
them; spider ``custom_settings`` and the add-ons apply on top, as in a real crawl.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from typing import Any

from scrapy import Spider
from scrapy.crawler import Crawler
from scrapy.utils.test import get_crawler

from imagecrawl import defaults as _defaults
from imagecrawl import settings as _project


def project_settings(**overrides: Any) -> dict[str, Any]:
    """Every default of ``imagecrawl/defaults.py`` and every setting of ``imagecrawl/settings.py`` (its
    ``ADDONS`` included; fresh copies of lists and dicts), then ``overrides``."""
    values = {
        name: copy.deepcopy(value)
        for module in (_defaults, _project)
        for name, value in vars(module).items()
        if name.isupper()
    }
    return {**values, **overrides}


def make_crawler(spidercls: type[Spider] | None = None, **overrides: Any) -> Crawler:
    """An unstarted crawler (``scrapy.utils.test.get_crawler``) with the project's settings and ``overrides``."""
    return get_crawler(spidercls, project_settings(**overrides))


def stop_engine(crawler: Crawler) -> None:
    """What ``engine_stopped`` does for imagecrawl at the end of a crawl: the owner of the store and ledger
    (:class:`imagecrawl.storage.extensions.StorageOwner`) closes them (Scrapy's own extensions are left
    alone: they were never started)."""
    from imagecrawl.storage.extensions import storage_owner

    storage_owner(crawler).close()


class Clock:
    """A monotonic clock a test moves by hand (``component.clock = Clock()``; ``clock.advance(0.2)``).

    ``time()`` is the wall clock that moves with it, and ``await clock.sleep(s)`` moves it by ``s`` at once
    (then lets the event loop run), for components that pause: a wait is measured exactly, not slept."""

    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.start = self.now = start
        self.wall_start = wall
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.wall_start + (self.now - self.start)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def tuning_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``IMAGECRAWL_TUNING`` keys of a settings dict (a dict, or its JSON text as ``-s`` takes it)."""
    value = settings.get("IMAGECRAWL_TUNING") or {}
    return dict(json.loads(value) if isinstance(value, str) else value)


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Settings dicts merged left to right, as ``{**a, **b}`` but with the keys of their ``IMAGECRAWL_TUNING``
    merged too (a later layer's key wins)."""
    merged: dict[str, Any] = {}
    tuned: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
        tuned.update(tuning_of(layer))
    if tuned:
        merged["IMAGECRAWL_TUNING"] = tuned
    return merged


def setting_text(value: Any) -> str:
    """A setting's value as ``-s NAME=value`` takes it: dicts and lists as JSON, the rest as text."""
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
