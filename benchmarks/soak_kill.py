"""Soak test: a long crawl of the sandbox killed with SIGKILL at random moments and restarted with the
same command until it finishes; then the store is audited against the sandbox's catalog.

    uv run python -m benchmarks.soak_kill --items 2000 --kills 12 --seed 1

Prints the kill schedule, the restarts, and the audit: rows, missing ids, duplicate ids/images, and any
shard that is not readable. Exit status 0 only when the store holds every expected item exactly once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import REPO
from imagecrawl.inspect import dataset_for
from tests.sandbox.catalog import build_catalog, render_image
from tests.sandbox.testing import start_sandbox


def expected_ids(items: int, seed: int) -> tuple[set[str], int]:
    """civitai ids the crawl must land (safe entries; one per group of identical bytes)."""
    catalog = build_catalog(items, seed)
    groups: dict[str, list[str]] = {}
    for entry in catalog.entries("civitai"):
        if entry.nsfw_level != "None":
            continue
        sha = hashlib.sha256(render_image(catalog, entry)).hexdigest()
        groups.setdefault(sha, []).append(f"civitai:{entry.id}")
    singles = {ids[0] for ids in groups.values() if len(ids) == 1}
    return singles, len(groups)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-gap", type=float, default=1.0, help="seconds between a start and its kill (min)")
    parser.add_argument("--max-gap", type=float, default=6.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="imagecrawl-soak-"))
    store, jobdir = work / "store", work / "job"
    site = start_sandbox(items=args.items, seed=args.seed)
    cmd = [
        sys.executable, "-m", "scrapy", "crawl", "civitai",
        "-a", f"api_url={site.base_url.rstrip('/')}", "-a", "limit=50",
        "-s", f"IMAGECRAWL_STORE={store}", "-s", f"JOBDIR={jobdir}",
        "-s", "DOWNLOAD_DELAY=0", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
        "-s", "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8", "-s", "IMAGECRAWL_SHARD_MAX_ROWS=100",
        "-s", "LOG_LEVEL=WARNING",
    ]  # fmt: skip
    started = time.monotonic()
    kills = restarts = 0
    try:
        while True:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            restarts += 1
            if kills < args.kills:
                gap = rng.uniform(args.min_gap, args.max_gap)
                try:
                    proc.wait(timeout=gap)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    print(f"kill #{kills} after {gap:.1f} s", flush=True)
                    continue
            code = proc.wait()
            if code != 0:
                print(f"crawl exited with {code}", flush=True)
                return 1
            break
    finally:
        site.stop()
    elapsed = time.monotonic() - started
    must_have, groups = expected_ids(args.items, args.seed)
    table = dataset_for(str(store)).to_table(columns=["id", "image_sha256"])
    ids = Counter(table["id"].to_pylist())
    shas = Counter(table["image_sha256"].to_pylist())
    missing = must_have - set(ids)
    dup_ids = [i for i, n in ids.items() if n > 1]
    dup_images = [s for s, n in shas.items() if n > 1]
    print(f"\n{kills} kills, {restarts} starts, {elapsed:.1f} s in all, work dir {work}")
    print(f"rows {table.num_rows} (expected {groups} unique images)")
    print(f"missing ids {len(missing)}, duplicate ids {len(dup_ids)}, duplicate images {len(dup_images)}")
    ok = not missing and not dup_ids and not dup_images and table.num_rows == groups
    print("AUDIT", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
