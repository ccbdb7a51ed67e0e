"""Errors that stand for a user's mistake or an unusable store: reported as one line, no traceback.

``scrapy crawl`` (imagecrawl/commands/crawl.py) catches them wherever they are raised while the crawl
starts (a spider's ``__init__``, an add-on, a component's ``from_crawler``, the store probe) and exits
with :attr:`exit_code`. Pure: no Scrapy imports.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from imagecrawl import exitcodes


class ConfigError(ValueError):
    """A spider argument or a setting is wrong; the message names it. Exit status 2."""

    exit_code = exitcodes.USAGE


class MissingExtraError(ConfigError):
    """A setting or profile needs an optional part that is not installed; the message says what to install."""


class StoreError(RuntimeError):
    """The store cannot be written (probe at start); the message names the store and why. Exit status 3."""

    exit_code = exitcodes.STORE


#: a longer list of valid names is cut to the closest ones (and ``more``, e.g. where all are listed)
MAX_LISTED = 16


def unknown_name(kind: str, name: str, valid: Iterable[str], more: str = "") -> ConfigError:
    """``unknown <kind>: 'name' (did you mean 'x'?); valid: a, b, c``.

    With more than :data:`MAX_LISTED` valid names only the closest ones are listed, then ``more``."""
    names = sorted(set(valid))
    close = difflib.get_close_matches(name, names, n=MAX_LISTED, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if len(names) <= MAX_LISTED:
        return ConfigError(f"unknown {kind}: {name!r}{hint}; valid: {', '.join(names)}")
    listed = f"close ones: {', '.join(close[:6])}; " if close else ""
    return ConfigError(f"unknown {kind}: {name!r}{hint}; {listed}all {len(names)} valid ones: {more}")


def missing_extra(what: str, extra: str, module: str) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the {extra!r} extra ({module} is not installed): "
        f"uv sync --extra {extra}, or pip install 'imagecrawl[{extra}]'"
    )
