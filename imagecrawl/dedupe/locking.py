"""SQLite files several processes open at once (the dedupe ledger, the near-duplicate index)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def while_locked(fn: Callable[[], T], seconds: float = 30.0) -> T:
    """Run ``fn``, again while SQLite says the file is locked: processes opening a new store at the same
    moment race to switch its file to WAL and create its tables, and that race is not always left to
    the busy timeout."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
