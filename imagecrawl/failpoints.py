"""Named crash points for crash-safety tests: ``IMAGECRAWL_FAILPOINTS="shard.commit.after:2"`` makes the
process kill itself with SIGKILL the 2nd time it passes ``shard.commit.after``; ``name:N:stop`` makes it
stop itself there with SIGSTOP instead (the test decides when it goes on, with SIGCONT: a process caught
in the middle of its work). Unset (always, outside tests), :func:`hit` is a dictionary lookup on an empty
dict."""

from __future__ import annotations

import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    points: dict[str, tuple[int, str]] = {}
    for part in spec.split(","):
        name, _, rest = part.strip().partition(":")
        count, _, action = rest.partition(":")
        if name:
            points[name] = (int(count or 1), action or "kill")
    return points


_ARMED = _parse(os.environ.get("IMAGECRAWL_FAILPOINTS", ""))
_SEEN: dict[str, int] = {}


def hit(name: str) -> None:
    if not _ARMED or name not in _ARMED:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    count, action = _ARMED[name]
    if _SEEN[name] == count:
        sig = signal.SIGSTOP if action == "stop" else signal.SIGKILL
        sys.stderr.write(f"imagecrawl failpoint {name} reached: {sig.name}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), sig)
