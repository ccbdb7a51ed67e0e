"""What ``imagecrawl forget`` costs: forgetting a fraction of the rows of a large store.

    uv run python -m benchmarks.forget_cost                       # 1 000 000 rows, 100 shards, forget 1 %
    uv run python -m benchmarks.forget_cost --rows 20000 --rows-per-shard 1000   # a quick smoke

Builds a local store of made-up rows in the project's schema (``--image-bytes`` of image per row; real
shards hold far larger images, so *bytes rewritten / store bytes* is the figure that carries over), then
forgets ``--fraction`` of its rows, selected by SHA-256 through a ``--from`` file (a takedown list), and
measures the plan (reading the selection columns of every shard) and the removal (tombstones, rewrites,
ledger, audit) separately. ``--layout`` places the selected rows:

* ``clustered`` (default): consecutive rows, as a site's or an account's rows land together in the shards
  of the crawls that found them: only the shards holding them should be rewritten;
* ``spread``: every ``1/fraction``-th row: nearly every shard holds one and is rewritten.

It prints the shards holding selected rows and the shards rewritten (the goal: equal) and the bytes read
and written. The store is kept under ``--dir`` (default a temporary folder) and reused when it exists
with the same shape (building 1 M rows takes a while).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from imagecrawl.forget import cli, engine
from imagecrawl.forget.selectors import Selection, read_selector_file
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore
from tests.forget_util import put_shard, rows_table, sha_of, shard_key_of


def build(root: Path, rows: int, per_shard: int, image_bytes: int) -> LocalStore:
    shape = {"rows": rows, "per_shard": per_shard, "image_bytes": image_bytes}
    marker = root.parent / "store-shape.json"
    if marker.exists() and json.loads(marker.read_text()) == shape:
        return LocalStore(root)
    shutil.rmtree(root, ignore_errors=True)
    store = LocalStore(root)
    started = time.monotonic()
    for i, first in enumerate(range(0, rows, per_shard)):
        put_shard(store, shard_key_of(i), rows_table(first, min(per_shard, rows - first), image_bytes=image_bytes))
    marker.write_text(json.dumps(shape))
    print(f"built {rows} rows in {len(range(0, rows, per_shard))} shards in {time.monotonic() - started:.1f} s")
    return store


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every shard file of a local store: key -> (inode, modification time in ns)."""
    out = {}
    for path in root.rglob("*.parquet"):
        key = path.relative_to(root).as_posix()
        if not key.startswith("."):
            stat = path.stat()
            out[key] = (stat.st_ino, stat.st_mtime_ns)
    return out


def chosen_rows(rows: int, fraction: float, layout: str) -> list[int]:
    count = max(1, round(rows * fraction))
    if layout == "clustered":
        start = rows // 3
        return list(range(start, start + count))
    step = max(1, rows // count)
    return list(range(0, rows, step))[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--image-bytes", type=int, default=256)
    parser.add_argument("--layout", choices=("clustered", "spread"), default="clustered")
    parser.add_argument("--dir", default="", help="where the store lives (kept; default: a temporary folder)")
    args = parser.parse_args(argv)

    tmp = None if args.dir else tempfile.mkdtemp(prefix="imagecrawl-forget-bench-")
    root = Path(args.dir or tmp or ".") / "store"
    work = root.parent / f"work-{args.layout}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        base = build(root, args.rows, args.rows_per_shard, args.image_bytes)
        # forget on a copy, so the built store can be reused
        copy = work / "store"
        shutil.copytree(base.root, copy, ignore=shutil.ignore_patterns(".imagecrawl"))
        store = LocalStore(copy)
        state = state_dir_for(str(copy))
        picked = chosen_rows(args.rows, args.fraction, args.layout)
        takedown = work / "takedown.txt"
        takedown.write_text("".join(f"{sha_of(n)}\n" for n in picked))
        selection = Selection.resolve(read_selector_file(str(takedown)), salt=None, near_distance=8)
        holding = {shard_key_of(n // args.rows_per_shard) for n in picked}
        total_shards = sum(1 for _ in store.list_shards())
        store_bytes = sum(s.size for s in store.list_shards())
        before = files_of(copy)

        started = time.monotonic()
        plan, _stones = engine.scan(store, selection, reason="benchmark")
        plan_seconds = time.monotonic() - started
        started = time.monotonic()
        result = cli.run(store, state, selection, "benchmark", dry_run=False)
        total_seconds = time.monotonic() - started
        rewritten = len(result["shards_rewritten"]) + len(result["shards_deleted"])
        after = files_of(copy)
        # which shard files changed on disk (a new file under the key, or the key gone), whatever the run says
        touched = {key for key, stamp in before.items() if after.get(key) != stamp}
        print(
            f"store: {args.rows} rows in {total_shards} shards, {store_bytes / 1e6:.1f} MB "
            f"({args.image_bytes} image bytes a row)"
        )
        print(f"selected: {len(picked)} rows ({args.fraction:.2%}), layout {args.layout}")
        print(
            f"shards holding selected rows: {len(holding)}; shards rewritten: {rewritten} of {total_shards}; "
            f"shard files changed on disk: {len(touched)}"
            f" -> {'only those (goal met)' if touched == holding else 'NOT only those'}"
        )
        print(f"rows removed: {result['rows_removed']}")
        print(f"plan (selection columns of every shard): {plan_seconds:.2f} s")
        print(f"forget run (plan again, tombstones, rewrites, ledger, audit): {total_seconds:.2f} s")
        print(
            f"bytes rewritten: {result['bytes_written'] / 1e6:.1f} MB "
            f"({result['bytes_written'] / max(store_bytes, 1):.2%} of the store); "
            f"bytes read for rewrites: {result['bytes_read'] / 1e6:.1f} MB"
        )
        ok = touched == holding and rewritten == len(holding) and result["rows_removed"] == len(picked) == plan.rows
        print("RESULT", "OK" if ok else "MISMATCH")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
