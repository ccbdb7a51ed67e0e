"""Several processes committing shards into one SQLite dedupe ledger at once (``-a shard=I/N`` crawls
share one store and one ledger). Counts "database is locked" errors and the slowest commit.

    uv run python -m benchmarks.ledger_writers --writers 3 --seconds 25

Each writer commits 10 000-row shards in a loop (and does a few lookups between commits), as the
Parquet pipeline does when a shard is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path

from imagecrawl.dedupe.sqlite import Ledger


def writer(path: Path, name: str, seconds: float, rows: int) -> None:
    ledger = Ledger(path)
    shards = errors = 0
    slowest = 0.0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        entries = [
            (hashlib.sha256(f"{name}-{shards}-{i}".encode()).hexdigest(), f"urls:{name}-{shards}-{i}", i,
             f"http://127.0.0.1/{name}/{shards}/{i}.png")
            for i in range(rows)
        ]  # fmt: skip
        for sha, item_id, _, url in entries[:50]:
            ledger.duplicate_reason(sha, item_id)
            ledger.has_url(url)
        t0 = time.monotonic()
        try:
            ledger.commit_shard(f"part-{name}-{shards:05d}", entries)
        except sqlite3.OperationalError as exc:
            errors += 1
            print(f"writer {name}: {exc}", flush=True)
        slowest = max(slowest, time.monotonic() - t0)
        shards += 1
    print(f"writer {name}: {shards} shards of {rows} rows, {errors} errors, slowest commit {slowest:.2f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    path = Path(tempfile.mkdtemp(prefix="ledger-writers-")) / "ledger.sqlite3"
    procs = [
        multiprocessing.Process(target=writer, args=(path, chr(ord("a") + i), args.seconds, args.rows))
        for i in range(args.writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
