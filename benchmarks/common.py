"""What the benchmarks share: the repository's paths and the check that the machine is quiet enough."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: where benchmarks keep their builds, caches and results (git-ignored)
OUT = REPO / "benchmarks" / "out"
#: a one-minute load average above this means the figures measure the other work on the machine too
QUIET_LOAD = 0.5


def check_load(label: str) -> float:
    """Print the load average before a measured phase (stderr), with a warning when the machine is busy."""
    one, five, fifteen = os.getloadavg()
    print(f"  {label}: load average {one:.2f} {five:.2f} {fifteen:.2f}", file=sys.stderr)
    if one > QUIET_LOAD:
        print(
            f"  WARNING: load average {one:.2f} > {QUIET_LOAD:g}: the machine is busy, the figures will be off",
            file=sys.stderr,
        )
    return one
