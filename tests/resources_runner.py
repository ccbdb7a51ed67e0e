"""Test helper: run crawls as :mod:`tests.crawl_runner` does, then list what they left open.

    python -m tests.resources_runner SPEC.json OUT.json

After every crawl of SPEC has ended (in one process), OUT.json gets ``threads``: the names of the
project's threads still alive (``imagecrawl-*``: ledger, spool, media), and ``files``: for each crawl's
``out`` folder, the files under its store (``settings.IMAGECRAWL_STORE``) this process still holds open
(the ledger, the near index, spools), read from ``/proc/self/fd``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from pathlib import Path

from tests import crawl_runner


def open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found


def main(spec_path: str, out_path: str) -> int:
    crawl_runner.main(spec_path)
    gc.collect()  # what is only unreachable is not a leak; what a live object holds is
    threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("imagecrawl-"))
    files = open_files()
    held: dict[str, list[str]] = {}
    for spec in json.loads(Path(spec_path).read_text()):
        store = str(Path(spec["settings"]["IMAGECRAWL_STORE"]).resolve())
        held[spec["out"]] = sorted(f for f in files if f.startswith(store + os.sep))
    Path(out_path).write_text(json.dumps({"threads": threads, "files": held}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
