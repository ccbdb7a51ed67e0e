"""Is a run (a ledger owner) still going? The one rule for claims and for a shared outbox's files: on
this host, its process is alive (and, for this very process, the owner was not closed); on another
host sharing the file, its heartbeat is fresher than ``stale_seconds``. No Scrapy."""

from __future__ import annotations

import os
import socket
import time

HOST = socket.gethostname()
#: owners opened by this process and not closed (several crawlers may share one store in one process)
LIVE_OWNERS: set[str] = set()


def owner_is_alive(owner: str, host: str, pid: int, heartbeat: float, stale_seconds: float) -> bool:
    if host != HOST:
        return heartbeat >= time.time() - stale_seconds
    if pid == os.getpid():
        return owner in LIVE_OWNERS  # else the pid was reused: the earlier owner is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
