"""Scrapy's per-response DEBUG records are not made while no handler takes them
(:func:`imagecrawl.redact.skip_unhandled_debug`), and nothing a handler takes is lost."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from imagecrawl.redact import skip_unhandled_debug

PARENT = "imagecrawl-test-debug"
NAMES = (f"{PARENT}.core.engine", f"{PARENT}.core.scraper")


class Records(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.seen: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelno))


@pytest.fixture
def parent() -> Iterator[logging.Logger]:
    logger = logging.getLogger(PARENT)
    logger.propagate = False  # only the handlers of the test (see only_test_handlers)
    logger.setLevel(1)  # every level let through, as Scrapy's root logger does (NOTSET)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for name in (PARENT, *NAMES):
        logging.getLogger(name).setLevel(logging.NOTSET)


def only_test_handlers(logger: logging.Logger, *handlers: logging.Handler) -> None:
    """pytest's log capture attaches itself to every non-propagating logger when the test starts (a
    handler at NOTSET, which takes DEBUG): the test's own handlers replace it."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)


def made(name: str, level: int) -> bool:
    """Whether ``logger.log(level, ...)`` makes a record (counted by the record factory)."""
    count = 0
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        nonlocal count
        count += 1
        return factory(*args, **kwargs)  # type: ignore[arg-type]

    logging.setLogRecordFactory(counting)
    try:
        logging.getLogger(name).log(level, "Crawled (200) <GET %s>", "http://127.0.0.1/a.png")
    finally:
        logging.setLogRecordFactory(factory)
    return count == 1


def test_debug_records_no_handler_takes_are_not_made(parent: logging.Logger) -> None:
    handler = Records(logging.INFO)
    only_test_handlers(parent, handler)
    assert all(made(name, logging.DEBUG) for name in NAMES)  # before: made, then dropped
    undo = skip_unhandled_debug(NAMES)
    assert not any(made(name, logging.DEBUG) for name in NAMES)
    assert all(made(name, logging.INFO) for name in NAMES)
    assert handler.seen == [(name, logging.INFO) for name in NAMES]  # what a handler takes still arrives
    undo()
    assert all(logging.getLogger(name).level == logging.NOTSET for name in NAMES)
    assert all(made(name, logging.DEBUG) for name in NAMES)


def test_a_handler_at_debug_keeps_them_and_a_set_level_is_left_alone(parent: logging.Logger) -> None:
    low = Records(logging.DEBUG)
    only_test_handlers(parent, Records(logging.WARNING), low)
    undo = skip_unhandled_debug(NAMES)
    assert all(made(name, logging.DEBUG) for name in NAMES)
    assert low.seen == [(name, logging.DEBUG) for name in NAMES]
    undo()
    parent.removeHandler(low)
    # a level the user set is theirs, whatever the handlers say
    logging.getLogger(NAMES[0]).setLevel(logging.DEBUG)
    undo = skip_unhandled_debug(NAMES)
    assert logging.getLogger(NAMES[0]).level == logging.DEBUG
    assert logging.getLogger(NAMES[1]).level == logging.DEBUG + 1
    undo()
    assert logging.getLogger(NAMES[0]).level == logging.DEBUG
    assert logging.getLogger(NAMES[1]).level == logging.NOTSET
