"""The exit status of ``scrapy crawl``, decided in one place. Pure: no Scrapy imports.

A component that finds the crawl failed to deliver calls :func:`set_exit_code` with one of the codes
below; the status is kept in the stat :data:`EXIT_CODE_STAT`, and the **first** failure recorded wins
(a later, consequent one does not overwrite it: a full disk that also leaves shards in the outbox
exits 5, not 3). ``scrapy crawl`` (:mod:`imagecrawl.commands.crawl`) exits with it; an error raised
while the crawl starts exits with its own ``exit_code`` (:mod:`imagecrawl.errors`).

The ``imagecrawl`` commands that work on a store (``forget``, ``recheck``) stop on an error with
:func:`status_of` it: a user's mistake 2, the store's or the state folder's trouble 3, a bug ``None``
(it keeps its traceback).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

#: the stat holding the status ``scrapy crawl`` exits with (0 or absent: success)
EXIT_CODE_STAT: Final = "imagecrawl/exit_code"

#: a user mistake: a wrong argument or setting, or no contact for a crawl of someone else's site
USAGE: Final = 2
#: the store did not take every shard (they wait in the outbox), or could not be written at start
STORE: Final = 3
#: nothing fetched: every request was refused or failed
NOTHING_FETCHED: Final = 4
#: the local disk refused a write (the crawl stops; spooled rows are kept)
WRITE_ERROR: Final = 5


#: the client libraries whose errors say the store (S3) or the shared state (Redis) did not answer or refused
_STORE_CLIENTS: Final = ("botocore", "boto3", "redis")


def status_of(exc: BaseException) -> int | None:
    """The exit status of a command that stopped on ``exc``: its own ``exit_code`` (``ConfigError`` 2,
    ``StoreError`` 3, :mod:`imagecrawl.errors`); :data:`STORE` for a file, SQLite, S3 or Redis error
    (the store or the state folder cannot be read or written); None for anything else (a bug)."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, OSError | sqlite3.Error):
        return STORE
    if type(exc).__module__.split(".", 1)[0] in _STORE_CLIENTS:
        return STORE
    return None


def set_exit_code(stats: Any, code: int) -> bool:
    """Record ``code`` as the crawl's exit status unless an earlier failure was recorded; True if it was."""
    if stats.get_value(EXIT_CODE_STAT):
        return False
    stats.set_value(EXIT_CODE_STAT, code)
    return True


#: set when the crawl ended with something undecided that a later run must ask again (an image another run
#: writing into the same store held the claim on): not a failure (exit status 0), but the crawl is not
#: complete either: JOBDIR stays unclean and incremental watermarks stay where they were
UNSETTLED_STAT: Final = "imagecrawl/dedupe/claim_wait/unsettled"


def mark_unsettled(stats: Any) -> None:
    stats.inc_value("imagecrawl/dedupe/claim_wait/unsettled")  # UNSETTLED_STAT, spelled out for docs/stats.md


def unsettled(stats: Any) -> int:
    """How many things this crawl left undecided (:data:`UNSETTLED_STAT`)."""
    return int(stats.get_value(UNSETTLED_STAT) or 0)


def exit_code(stats: Any) -> int:
    """The status recorded so far (0: none)."""
    return int(stats.get_value(EXIT_CODE_STAT) or 0)
