"""Crawls and forget runs on one store take turns: ``<state>/store.lock`` (flock, dropped by the kernel
when the process dies). A crawl holds it shared for its whole run, so crawls run side by side; a forget
run holds it exclusive while it rewrites shards. A forget run refuses (one line) while a crawl writes into
the store; a crawl that starts during a forget run waits for it. Pure: no Scrapy."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from imagecrawl.errors import StoreError

logger = logging.getLogger(__name__)

LOCK_NAME = "store.lock"


def _open(state: Path) -> IO[str]:
    state.mkdir(parents=True, exist_ok=True)
    return open(state / LOCK_NAME, "a+")


@contextlib.contextmanager
def exclusive(state: Path, *, what: str = "imagecrawl forget") -> Iterator[None]:
    """Hold the store exclusively, or raise :class:`StoreError` at once if a crawl holds it."""
    try:
        fh = _open(state)
    except OSError as exc:
        raise StoreError(f"cannot open the crawl state in {state}: {exc.strerror or exc}") from None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"a crawl (or another forget run) is writing into this store now ({state / LOCK_NAME} is held): "
                f"run {what} again when it has ended"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def hold_for_crawl(state: Path, *, poll_seconds: float = 0.5) -> IO[str] | None:
    """Take the store shared for a crawl; wait (one WARNING line) while a forget run holds it. The
    returned file keeps the lock until it is closed or the process ends; None if the state folder cannot
    hold a lock file (the crawl goes on: the ledger reports that folder's trouble itself)."""
    try:
        fh = _open(state)
    except OSError:
        return None
    warned = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            if warned:
                logger.warning("The forget run on %s has ended: the crawl starts", state)
            return fh
        except BlockingIOError:
            if not warned:
                logger.warning(
                    "A forget run is rewriting this store (%s is held): the crawl waits for it to end",
                    state / LOCK_NAME,
                )
                warned = True
            time.sleep(poll_seconds)
