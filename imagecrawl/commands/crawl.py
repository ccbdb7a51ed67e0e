"""``scrapy crawl`` that also fails the process when the crawl could not deliver its data.

Scrapy's own command exits non-zero only when a crawler fails to start, and prints an error raised
while the crawl starts (in a spider's ``__init__``, an add-on, a component) inside "Task exception was
never retrieved" and a traceback. Here:

* a :class:`~imagecrawl.errors.ConfigError` (a wrong ``-a`` argument or ``-s`` setting) is one line
  ``imagecrawl: error: ...`` and exit status 2; a :class:`~imagecrawl.errors.StoreError` (the store
  probe at start failed) is one line and exit status 3; any other error keeps its traceback;
* components record a failure with :func:`imagecrawl.exitcodes.set_exit_code` (shards the store did
  not take: 3; a crawl that got nothing: 4; no contact: 2; a full disk: 5; the first one wins) and
  this command exits with it (the exit codes in README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from scrapy import signals
from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError

from imagecrawl import redact
from imagecrawl.errors import ConfigError, StoreError, unknown_name
from imagecrawl.exitcodes import exit_code
from imagecrawl.settings_check import check_settings

logger = logging.getLogger(__name__)


#: errors of the optional Redis client that mean the server named by the settings cannot be reached
_REDIS_UNREACHABLE = ("ConnectionError", "TimeoutError", "AuthenticationError")


def user_error(exc: BaseException | None) -> ConfigError | StoreError | None:
    """The user-facing error behind ``exc`` (itself, or its cause), if it is one. A Redis server that
    cannot be reached (IMAGECRAWL_REDIS_URL) is store trouble, whichever component met it first."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ConfigError | StoreError):
            return exc
        if type(exc).__module__.startswith("redis.") and type(exc).__name__ in _REDIS_UNREACHABLE:
            return StoreError(f"the Redis server of IMAGECRAWL_REDIS_URL (or REDIS_URL) cannot be reached: {exc}")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def report(error: ConfigError | StoreError, settings: Any = None) -> int:
    """The one place a user's mistake becomes one line on stderr (credentials masked), and the same line
    in ``LOG_FILE`` when there is one (Scrapyd's job log is one); its exit status."""
    line = f"imagecrawl: error: {redact.mask(str(error))}"
    print(line, file=sys.stderr)
    path = settings.get("LOG_FILE") if settings is not None else None
    if path:
        _to_log_file(str(path), line, str(settings.get("LOG_ENCODING") or "utf-8"))
    return error.exit_code


def _to_log_file(path: str, line: str, encoding: str) -> None:
    """Through Scrapy's log handler when it writes that file; before Scrapy set up its logging (a setting
    checked first), appended in the same format."""
    target = os.path.abspath(path)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and os.path.abspath(handler.baseFilename) == target:
            logger.error("%s", line)
            return
    try:
        with open(target, "a", encoding=encoding) as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{__name__}] ERROR: {line}\n")
    except OSError as exc:
        print(f"imagecrawl: cannot write to LOG_FILE {path}: {exc}", file=sys.stderr)


class Command(ScrapyCrawlCommand):
    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        assert self.settings is not None
        try:
            # before Scrapy sets up its logging and resolver: LOG_LEVEL, LOG_FILE, the allowed networks
            check_settings(self.settings)
        except ConfigError as exc:
            sys.exit(report(exc, self.settings))

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one spider name")
        assert self.crawler_process
        spiders = self.crawler_process.spider_loader.list()
        if args[0] not in spiders:
            self.exitcode = report(unknown_name("spider", args[0], spiders, more="scrapy list"), self.settings)
            return
        crawler = self._create_crawler(args[0])
        skip_unhandled_debug_records(crawler)
        failures: list[BaseException] = []
        result: Any = self.crawler_process.crawl(crawler, **opts.spargs)
        if isinstance(result, asyncio.Future):
            result.add_done_callback(lambda task: _collect(task, failures))
        else:  # a Deferred (Twisted's CrawlerProcess)
            result.addErrback(lambda failure: _collect_failure(failure, failures))
        self.crawler_process.start()
        error = user_error(failures[0]) if failures else None
        if error is not None:
            self.exitcode = report(error, self.settings)
            return
        if self.crawler_process.bootstrap_failed:
            self.exitcode = 1
            return
        try:
            stats = crawler.stats
        except RuntimeError:  # Scrapy's public attribute before the crawl got its stats: nothing recorded
            return
        if code := exit_code(stats):
            self.exitcode = code


def skip_unhandled_debug_records(crawler: Crawler) -> None:
    """While the engine runs, Scrapy's per-response DEBUG records are not made when no handler takes them
    (:func:`imagecrawl.redact.skip_unhandled_debug`; decided once the crawl's log handler is in place)."""
    undo: list[Callable[[], None]] = []

    def started() -> None:
        undo.append(redact.skip_unhandled_debug())

    def stopped() -> None:
        while undo:
            undo.pop()()

    crawler.signals.connect(started, signal=signals.engine_started, weak=False)
    crawler.signals.connect(stopped, signal=signals.engine_stopped, weak=False)


def _collect(task: asyncio.Future[Any], failures: list[BaseException]) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # retrieved: asyncio does not print "Task exception was never retrieved"
    if exc is None:
        return
    failures.append(exc)
    if user_error(exc) is None:
        logger.error("The crawl failed to start", exc_info=exc)


def _collect_failure(failure: Any, failures: list[BaseException]) -> None:
    failures.append(failure.value)
    if user_error(failure.value) is None:
        return failure
    return None
