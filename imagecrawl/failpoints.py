"""Named crash points for crash-safety tests: ``IMAGECRAWL_FAILPOINTS="shard.commit.after:2"`` makes the
process kill itself with SIGKILL the 2nd time it passes ``shard.commit.after``. Unset (always, outside
tests), :func:`hit` is a dictionary lookup on an empty dict."""

from __future__ import annotations

import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for part in spec.split(","):
        name, _, count = part.strip().partition(":")
        if name:
            points[name] = int(count or 1)
    return points


_ARMED = _parse(os.environ.get("IMAGECRAWL_FAILPOINTS", ""))
_SEEN: dict[str, int] = {}


def hit(name: str) -> None:
    if not _ARMED or name not in _ARMED:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _ARMED[name]:
        sys.stderr.write(f"imagecrawl failpoint {name} reached: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
