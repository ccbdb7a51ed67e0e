"""Settings given by the user, checked in one place before the crawl starts: unknown ``IMAGECRAWL_*``
names (with the nearest valid one), values that do not parse as the type of their default in
imagecrawl/defaults.py (``-s IMAGECRAWL_MAX_RATE_PER_SITE=abc``), numbers that are not finite or
outside their range (:data:`RANGES`), and the values that name something which must work
(:data:`CHECKS`: the allowed networks, ``LOG_LEVEL``, the files and folders the crawl writes). Each
problem is a :class:`~imagecrawl.errors.ConfigError` naming the setting (one line, exit status 2). The
keys of ``IMAGECRAWL_TUNING`` are checked against :class:`imagecrawl.tuning.Tuning` the same way, and an
internal given under its old setting name (each key was an ``IMAGECRAWL_*`` setting of its own) is one
line naming its key.

``scrapy crawl`` (imagecrawl/commands/crawl.py) runs :func:`check_settings` before Scrapy sets up its
logging (a bad ``LOG_LEVEL`` or ``LOG_FILE`` fails there); the add-on runs it again on every crawler's
settings (Scrapyd, a spider's ``custom_settings``)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scrapy.settings import BaseSettings

from imagecrawl import defaults as project
from imagecrawl import tuning
from imagecrawl.errors import ConfigError, unknown_name

PREFIX = "IMAGECRAWL_"
#: settings whose default is None (derived at run time) and the type a given value must have
NONE_DEFAULT_TYPES: dict[str, type] = {}


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
        elif kind is dict and name != tuning.SETTING:
            settings.getdict(name)
    except (TypeError, ValueError):
        what = {bool: "true or false", int: "an integer", float: "a number", dict: "a JSON object"}[kind]
        if kind is int and not own:
            what = "a number"
        raise ConfigError(f"setting {name} must be {what}, got {value!r}") from None


#: numeric settings and the values they accept (checked after the type; NaN and infinity never pass)
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": (lambda v: v > 0, "a number > 0"),
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": (lambda v: v >= 1, "an integer >= 1"),
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": (lambda v: v > 0, "a number > 0"),
    "IMAGECRAWL_MEDIA_THREADS": (lambda v: v >= 0, "an integer >= 0"),
}


def _number(settings: BaseSettings, name: str) -> float | None:
    value = settings.get(name)
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_networks(settings: BaseSettings, name: str) -> None:
    from imagecrawl.guard.downloadermiddlewares.netguard import parse_networks

    value = settings.get(name)
    if isinstance(value, str) and ";" in value:
        raise ConfigError(f"setting {name}: separate networks with commas, not ';' (got {value!r})")
    parse_networks(value)


def _check_at_least_one(settings: BaseSettings, name: str) -> None:
    """A Scrapy concurrency: a whole number of requests, at least 1 (0 would never send one)."""
    value = settings.get(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # the type check names it
    if not number.is_integer() or number < 1:
        raise ConfigError(f"setting {name} must be an integer >= 1, got {value!r}")


def _check_log_level(settings: BaseSettings, name: str) -> None:
    value = settings.get(name)
    if isinstance(value, int) or value is None:
        return
    if str(value) not in logging.getLevelNamesMapping():
        valid = "CRITICAL, ERROR, WARNING, INFO, DEBUG"
        raise ConfigError(f"setting {name} must be one of {valid}; got {value!r}")


def _cannot(name: str, path: str, exc: OSError) -> ConfigError:
    if isinstance(exc, FileExistsError | NotADirectoryError):  # a file where a folder must be
        return ConfigError(f"setting {name} {path!r}: cannot write there: a file stands where a folder must be")
    return ConfigError(f"setting {name} {path!r}: cannot write there: {exc.strerror or exc}")


def _check_file(settings: BaseSettings, name: str) -> None:
    """A file the crawl appends to or replaces: its folder exists (or can be made) and takes a file."""
    value = settings.get(name)
    if not value:
        return
    path = Path(str(value)).expanduser()
    if path.is_dir():
        raise ConfigError(f"setting {name} {str(value)!r}: is a folder, not a file")
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.open("w").close()
        probe.unlink()
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise _cannot(name, str(value), exc) from None


def _check_folder(settings: BaseSettings, name: str) -> None:
    """A folder the crawl keeps state in: a folder (or nothing yet, and it can be made), writable."""
    value = settings.get(name)
    if not value:
        return
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"setting {name} {str(value)!r}: names a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot(name, str(value), exc) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"setting {name} {str(value)!r}: cannot write there: Permission denied")


#: settings whose value must name something that works, each with its check
CHECKS: dict[str, Callable[[BaseSettings, str], None]] = {
    "IMAGECRAWL_ALLOWED_NETWORKS": _check_networks,
    "LOG_LEVEL": _check_log_level,
    "CONCURRENT_REQUESTS": _check_at_least_one,
    "CONCURRENT_REQUESTS_PER_DOMAIN": _check_at_least_one,
    "LOG_FILE": _check_file,
    "IMAGECRAWL_STATS_FILE": _check_file,
    "JOBDIR": _check_folder,
}


#: settings that were renamed (CHANGELOG.md): the old name is one line naming the new one
#: (built from the new names: an old name is no setting any more, docs/settings.md lists it under the new one)
RENAMED: dict[str, str] = {PREFIX + new: new for new in ("RETRY_ENABLED", "RETRY_TIMES")}
#: internals that became keys of IMAGECRAWL_TUNING (CHANGELOG.md): old setting name -> key
MOVED_TO_TUNING: dict[str, str] = {PREFIX + key.upper(): key for key in tuning.fields()}


def moved_hint(name: str, value: Any) -> str:
    """The one line for an internal given under its old setting name."""
    key = MOVED_TO_TUNING[name]
    shown = value if isinstance(value, bool | int | float) else str(value)
    example = json.dumps({key: shown})
    return (
        f"setting {name} is now the key {key!r} of {tuning.SETTING}: "
        f"{tuning.SETTING} = {example} (docs/settings.md#tuning, CHANGELOG.md)"
    )


#: components that moved into their feature's folder (CHANGELOG.md, docs/architecture.md#layout): old
#: import path -> new. A project that names an old path (to place a component or to turn it off with None)
#: gets one line naming the new path, before Scrapy would try to import it.
#: (old module, new module, class)
_MOVES: tuple[tuple[str, str, str], ...] = (
    ("imagecrawl.downloadermiddlewares.identity", "imagecrawl.guard.downloadermiddlewares.identity", "IdentityGuard"),
    (
        "imagecrawl.downloadermiddlewares.netguard",
        "imagecrawl.guard.downloadermiddlewares.netguard",
        "NetGuardMiddleware",
    ),
    ("imagecrawl.downloadermiddlewares.errors", "imagecrawl.downloadermiddlewares", "DownloadErrorsMiddleware"),
    ("imagecrawl.downloadermiddlewares.errors", "imagecrawl.downloadermiddlewares", "HttpCompressionMiddleware"),
    ("imagecrawl.downloadermiddlewares.errors", "imagecrawl.downloadermiddlewares", "RedirectLoopCounter"),
    ("imagecrawl.downloadermiddlewares.known", "imagecrawl.dedupe.downloadermiddlewares", "KnownImageMiddleware"),
    ("imagecrawl.downloadermiddlewares.robots", "imagecrawl.optout.downloadermiddlewares.robots", "RobotsMiddleware"),
    ("imagecrawl.downloadermiddlewares.optout", "imagecrawl.optout.downloadermiddlewares.optout", "OptOutMiddleware"),
    (
        "imagecrawl.downloadermiddlewares.retry",
        "imagecrawl.pacing.downloadermiddlewares.retry",
        "BackoffRetryMiddleware",
    ),
    ("imagecrawl.downloadermiddlewares.bans", "imagecrawl.pacing.downloadermiddlewares.bans", "BanMiddleware"),
    ("imagecrawl.downloadermiddlewares.pacing", "imagecrawl.pacing.downloadermiddlewares.pacing", "PacingMiddleware"),
    ("imagecrawl.extensions.jobdir", "imagecrawl.jobdir.downloadermiddlewares", "KeepOnCloseMiddleware"),
    ("imagecrawl.spidermiddlewares.optout", "imagecrawl.optout.spidermiddlewares", "OptOutSpiderMiddleware"),
    ("imagecrawl.pipelines.validate", "imagecrawl.pipelines", "ValidatePipeline"),
    ("imagecrawl.pipelines.dedupe", "imagecrawl.dedupe.pipelines", "DedupePipeline"),
    ("imagecrawl.pipelines.parquet", "imagecrawl.storage.pipelines", "ParquetPipeline"),
    ("imagecrawl.extensions.storage", "imagecrawl.storage.extensions", "StorageOwner"),
    ("imagecrawl.extensions.resume", "imagecrawl.jobdir.extensions", "ResumeGuard"),
    ("imagecrawl.extensions.jobdir", "imagecrawl.jobdir.extensions", "JobdirGuard"),
    ("imagecrawl.extensions.monitor", "imagecrawl.report.extensions.monitor", "Monitor"),
    ("imagecrawl.extensions.statsfile", "imagecrawl.report.extensions.statsfile", "StatsFile"),
    ("imagecrawl.extensions.outcome", "imagecrawl.report.extensions.outcome", "CrawlOutcome"),
    ("imagecrawl.extensions.progress", "imagecrawl.report.extensions.progress", "ProgressLine"),
    ("imagecrawl.extensions.report", "imagecrawl.report.extensions.report", "CrawlReport"),
    ("imagecrawl.scheduler", "imagecrawl.pacing.scheduler", "FrontierScheduler"),
    ("imagecrawl.distributed.frontier", "imagecrawl.distributed.scheduler", "RedisScheduler"),
    ("imagecrawl.distributed.frontier", "imagecrawl.distributed.scheduler", "RedisDupeFilter"),
    (
        "imagecrawl.distributed.middlewares",
        "imagecrawl.distributed.downloadermiddlewares",
        "GlobalRateMiddleware",
    ),
    ("imagecrawl.distributed.middlewares", "imagecrawl.distributed.spidermiddlewares", "LeaseSpiderMiddleware"),
)
MOVED_COMPONENTS: dict[str, str] = {f"{old}.{name}": f"{new}.{name}" for old, new, name in _MOVES}
#: the DNS resolver's old path keeps working (imagecrawl/resolver.py): Scrapy installs TWISTED_DNS_RESOLVER
#: before any add-on runs, so no one-line error can come first; the add-on logs a WARNING with the new path
OLD_RESOLVER = "imagecrawl.resolver.GuardedResolver"
#: the settings that name components by import path
PATH_SETTINGS = (
    "DOWNLOADER_MIDDLEWARES",
    "SPIDER_MIDDLEWARES",
    "ITEM_PIPELINES",
    "EXTENSIONS",
    "SCHEDULER",
    "DUPEFILTER_CLASS",
)
#: the settings that name one component (the others name a dict of them)
_ONE_PATH = ("SCHEDULER", "DUPEFILTER_CLASS")


def check_moved_components(settings: BaseSettings) -> None:
    """Raise :class:`ConfigError` for a component named by its import path from before the move into
    feature folders (run before the add-on installs its components: Scrapy would import the old path)."""
    for name in PATH_SETTINGS:
        named = [settings.get(name)] if name in _ONE_PATH else list(settings.getdict(name))
        for path in named:
            if isinstance(path, str) and path in MOVED_COMPONENTS:
                raise ConfigError(
                    f"setting {name} names {path}, which moved: use {MOVED_COMPONENTS[path]} (CHANGELOG.md)"
                )


def check_settings(settings: BaseSettings) -> None:
    """Raise :class:`ConfigError` for the first renamed or unknown ``IMAGECRAWL_*`` setting, unparsable
    value, number out of its range, or a value naming something that cannot work."""
    known = defaults()
    for name in settings:
        if name in RENAMED:
            new = RENAMED[name]
            raise ConfigError(f"setting {name} was renamed: use {new} (Scrapy's own, same meaning; CHANGELOG.md)")
        if name in MOVED_TO_TUNING:
            raise ConfigError(moved_hint(name, settings.get(name)))
        if name.startswith(PREFIX) and name not in known:
            raise unknown_name("setting", name, [n for n in known if n.startswith(PREFIX)], more="docs/settings.md")
    for name, default in known.items():
        kind = NONE_DEFAULT_TYPES.get(name, type(default))
        if kind in (bool, int, float, dict):
            _check_value(settings, name, kind)
        if kind in (int, float) and name.startswith(PREFIX):
            number = _number(settings, name)
            if number is None:
                continue
            rule = RANGES.get(name)
            if not math.isfinite(number) or (rule is not None and not rule[0](number)):
                what = rule[1] if rule is not None else "a finite number"
                raise ConfigError(f"setting {name} must be {what}, got {settings.get(name)!r}")
    tuning.Tuning.from_settings(settings)  # unknown keys, bad values: one line
    for name, check in CHECKS.items():
        check(settings, name)
    _check_choices(settings)
    _check_scrapyd_store(settings)


def under_scrapyd() -> bool:
    """A Scrapyd job: its process runs ``python -m scrapyd.runner`` (older Scrapyd versions set ``SCRAPY_JOB``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", "") == "scrapyd.runner" or bool(os.environ.get("SCRAPY_JOB"))


def _check_scrapyd_store(settings: BaseSettings) -> None:
    """Under Scrapyd a relative store would land in Scrapyd's own working directory: refused, with the fix."""
    store = str(settings.get("IMAGECRAWL_STORE"))
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
