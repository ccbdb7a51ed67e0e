"""Settings given by the user, checked once before the crawl starts: unknown ``IMAGECRAWL_*`` names
(with the nearest valid one) and values that do not parse as the type of their default in
imagecrawl/settings.py (``-s IMAGECRAWL_MAX_RATE_PER_SITE=abc``). Each problem is a
:class:`~imagecrawl.errors.ConfigError` naming the setting."""

from __future__ import annotations

import os
import sys
from typing import Any

from scrapy.settings import BaseSettings

from imagecrawl import settings as project
from imagecrawl.errors import ConfigError, unknown_name

PREFIX = "IMAGECRAWL_"
#: settings whose default is None (derived at run time) and the type a given value must have
NONE_DEFAULT_TYPES: dict[str, type] = {
    "IMAGECRAWL_SHARD_FLUSH_ON_IDLE": bool,
    "IMAGECRAWL_RETRY_TIMES": int,
}


def defaults() -> dict[str, Any]:
    return {name: value for name, value in vars(project).items() if name.isupper()}


def _check_value(settings: BaseSettings, name: str, kind: type) -> None:
    value = settings.get(name)
    if value is None:
        return
    own = name.startswith(PREFIX)
    try:
        if kind is bool:
            settings.getbool(name)
        elif kind is int and own:
            settings.getint(name)
        elif kind in (int, float):
            settings.getfloat(name)  # Scrapy reads some int-defaulted settings (DOWNLOAD_DELAY) as floats
        elif kind is dict:
            settings.getdict(name)
    except (TypeError, ValueError):
        what = {bool: "true or false", int: "an integer", float: "a number", dict: "a JSON object"}[kind]
        if kind is int and not own:
            what = "a number"
        raise ConfigError(f"setting {name} must be {what}, got {value!r}") from None


def check_settings(settings: BaseSettings) -> None:
    """Raise :class:`ConfigError` for the first unknown ``IMAGECRAWL_*`` setting or unparsable value."""
    known = defaults()
    for name in settings:
        if name.startswith(PREFIX) and name not in known:
            raise unknown_name("setting", name, [n for n in known if n.startswith(PREFIX)], more="docs/settings.md")
    for name, default in known.items():
        kind = NONE_DEFAULT_TYPES.get(name, type(default))
        if kind in (bool, int, float, dict):
            _check_value(settings, name, kind)
    _check_choices(settings)
    _check_scrapyd_store(settings)


def under_scrapyd() -> bool:
    """A Scrapyd job: its process runs ``python -m scrapyd.runner`` (older Scrapyd versions set ``SCRAPY_JOB``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", "") == "scrapyd.runner" or bool(os.environ.get("SCRAPY_JOB"))


def _check_scrapyd_store(settings: BaseSettings) -> None:
    """Under Scrapyd a relative store would land in Scrapyd's own working directory: refused, with the fix."""
    store = str(settings.get("IMAGECRAWL_STORE") or "")
    if under_scrapyd() and "://" not in store and not os.path.isabs(store):
        raise ConfigError(
            f"IMAGECRAWL_STORE {store!r} is relative, and Scrapyd runs jobs in its own working directory: "
            "give an absolute path or an s3:// URL (-d setting=IMAGECRAWL_STORE=/srv/dataset)"
        )


#: settings that take one of a few words
CHOICES: dict[str, tuple[str, ...]] = {"IMAGECRAWL_FEED_IMAGES": ("omit", "base64", "path")}


def _check_choices(settings: BaseSettings) -> None:
    for name, allowed in CHOICES.items():
        value = str(settings.get(name) or "").strip().lower()
        if value and value not in allowed:
            raise ConfigError(f"setting {name} must be one of {', '.join(allowed)}, got {settings.get(name)!r}")
