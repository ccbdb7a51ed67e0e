"""Combined soak: several faults on ONE S3 store in one run, then an audit against the sandbox's catalog.

    uv run python -m benchmarks.soak_faults --items 300 --workers 2 --seconds 90 --seed 1

For ``--seconds`` the store sees, all at once: ``--workers`` ``scrapy crawl civitai`` processes on the same
store and state dir (each with its own JOBDIR) that are SIGKILLed at random moments and come back (processes
leaving and joining), S3 behind the fault-injecting proxy of tests/faultproxy.py switched down for a few
seconds at random, and a full disk: the outbox is a tmpfs of 96 KiB for the first third of the run, then
grown (the technique of tests/test_disk_full_e2e.py; skipped when tmpfs cannot be mounted). Then the faults
stop and each JOBDIR is run once more to completion. The audit (the helpers of benchmarks/soak_kill.py):
every safe catalog item stored, no duplicate id, no duplicate image. Exit status 0 only if it holds.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import REPO
from benchmarks.soak_kill import expected_ids
from tests.conftest import LOOPBACK, read_store
from tests.crawlers import merge_settings, setting_text
from tests.faultproxy import FaultProxy
from tests.sandbox.testing import start_sandbox
from tests.servers import start_moto, stop_process

OUTBOX_FULL, OUTBOX_ROOMY = "96k", "256m"


@contextlib.contextmanager
def small_outbox(outbox: Path) -> Iterator[bool]:
    """A tiny tmpfs on the outbox (yields False, untouched, when it cannot be mounted)."""
    outbox.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={OUTBOX_FULL}", "tmpfs", str(outbox)], check=False)
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(outbox)], check=False)


def crawl_cmd(api_url: str, settings: dict[str, str], jobdir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "civitai", "-a", f"api_url={api_url}", "-a", "limit=25"]
    for key, value in {**settings, "JOBDIR": str(jobdir)}.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the faults go on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--probe-fresh", action="store_true", help="then a run with a new JOBDIR: what it adds")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="imagecrawl-soak-faults-"))
    state, logs = work / "state", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site = start_sandbox(items=args.items, seed=args.seed)
    moto = start_moto()
    bucket = moto.create_bucket("soak")
    proxy = FaultProxy(moto.port)
    settings = merge_settings(
        LOOPBACK,
        moto.settings,
        {
            "LOG_LEVEL": "WARNING",
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "IMAGECRAWL_STORE": f"s3://{bucket}/d",
            "IMAGECRAWL_STATE_DIR": str(state),
            "IMAGECRAWL_STORE_PROBE": "False",
            "IMAGECRAWL_SHARD_MAX_ROWS": "20",
            "IMAGECRAWL_NEAR_POLICY": "keep",
            "IMAGECRAWL_TUNING": {
                "commit_retry_seconds": "0.5",
                "s3_max_attempts": "2",
                "close_commit_timeout_seconds": "3",
            },
        },
    )
    api_url = site.base_url.rstrip("/")
    jobdirs = [work / f"job{i}" for i in range(args.workers)]
    exits: Counter[int] = Counter()
    kills = outages = starts = 0
    started = time.monotonic()
    try:
        with small_outbox(state / "outbox") as disk_full:
            grown = not disk_full
            procs: dict[int, subprocess.Popen[bytes]] = {}
            kill_at = {i: time.monotonic() + rng.uniform(2, 12) for i in range(args.workers)}
            outage_at, outage_end = time.monotonic() + rng.uniform(5, 15), 0.0
            while (now := time.monotonic()) - started < args.seconds:
                if not grown and now - started > args.seconds / 3:
                    subprocess.run(["mount", "-o", f"remount,size={OUTBOX_ROOMY}", str(state / "outbox")], check=True)
                    grown = True
                    print(f"{now - started:5.1f} s  outbox grown to {OUTBOX_ROOMY}", flush=True)
                if proxy.down and now >= outage_end:
                    proxy.down = False
                    print(f"{now - started:5.1f} s  S3 back", flush=True)
                elif not proxy.down and now >= outage_at:
                    proxy.down, outages = True, outages + 1
                    outage_end, outage_at = now + rng.uniform(2, 8), now + rng.uniform(10, 25)
                    print(f"{now - started:5.1f} s  S3 down until {outage_end - started:.1f} s", flush=True)
                for i, jobdir in enumerate(jobdirs):
                    proc = procs.get(i)
                    if proc is not None and proc.poll() is not None:
                        exits[proc.returncode] += 1
                        proc = None
                    if proc is None:  # a worker joins (again)
                        log = (logs / f"worker{i}-{starts}.log").open("wb")
                        cmd = crawl_cmd(api_url, settings, jobdir)
                        procs[i] = proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log)
                        starts += 1
                    if now >= kill_at[i]:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        procs.pop(i)
                        kills += 1
                        kill_at[i] = now + rng.uniform(3, 15)
                        print(f"{now - started:5.1f} s  kill #{kills} (worker {i})", flush=True)
                time.sleep(0.2)
            for proc in procs.values():  # the faults stop: the last workers leave
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            proxy.down = False
            if not grown:
                subprocess.run(["mount", "-o", f"remount,size={OUTBOX_ROOMY}", str(state / "outbox")], check=True)
            faulty = time.monotonic() - started
            print(f"{faulty:5.1f} s  faults over; a clean run per job dir", flush=True)
            final_codes = []
            for i, jobdir in enumerate(jobdirs):  # one clean run per job dir, to completion
                with (logs / f"final{i}.log").open("wb") as log:
                    final_codes.append(subprocess.run(crawl_cmd(api_url, settings, jobdir), cwd=REPO, stdout=log,
                                                      stderr=log, check=False).returncode)  # fmt: skip
        elapsed = time.monotonic() - started
        table = read_store(f"s3://{bucket}/d", columns=["id", "image_sha256", "__filename"], env=moto.env)
        if args.probe_fresh:  # diagnosis: would a run with a fresh JOBDIR find what is missing?
            with (logs / "fresh.log").open("wb") as log:
                subprocess.run(crawl_cmd(api_url, settings, work / "job-fresh"), cwd=REPO, stdout=log, stderr=log)
            fresh = read_store(f"s3://{bucket}/d", columns=["id"], env=moto.env)["id"].to_pylist()
    finally:
        proxy.close()
        site.stop()
        stop_process(moto.process)
    must_have, groups = expected_ids(args.items, args.seed)
    ids = Counter(table["id"].to_pylist())
    shas = Counter(table["image_sha256"].to_pylist())
    missing = must_have - set(ids)
    dup_ids = [i for i, n in ids.items() if n > 1]
    dup_images = [s for s, n in shas.items() if n > 1]
    print(f"\nitems {args.items}, workers {args.workers}, starts {starts}, kills {kills}, S3 outages {outages}, "
          f"disk full {'yes' if disk_full else 'skipped (no tmpfs)'}, exits during faults {dict(exits)}, "
          f"final runs exit {final_codes}")  # fmt: skip
    print(f"wall time {elapsed:.1f} s ({faulty:.1f} s of faults), work dir {work}")
    print(f"rows {table.num_rows} (expected {groups} unique images)")
    print(f"missing {len(missing)}, duplicate ids {len(dup_ids)}, duplicate images {len(dup_images)}")
    if dup_ids:  # diagnosis: which shards hold the duplicates (their names carry run and sequence)
        files: dict[str, set[str]] = {}
        for row_id, name in zip(table["id"].to_pylist(), table["__filename"].to_pylist(), strict=True):
            if row_id in dup_ids:
                files.setdefault(row_id, set()).add(name.rsplit("/", 1)[-1])
        for pair, count in Counter(tuple(sorted(names)) for names in files.values()).most_common():
            print(f"  {count} duplicate ids in {' and '.join(pair)}")
    if args.probe_fresh:
        print(f"a run with a fresh JOBDIR then stored {len(missing & set(fresh))} of the {len(missing)} missing")
    ok = not missing and not dup_ids and not dup_images and table.num_rows == groups and not any(final_codes)
    print("AUDIT", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
