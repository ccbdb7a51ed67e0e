"""Summarise ``py-spy record --format raw`` output (collapsed stacks): where the samples go.

    uv run python -m benchmarks.profile_summary benchmarks/out/throughput-.../urls-0.pyspy.txt [--top 30]

Prints the share of samples per *self* function (the leaf) and per *inclusive* function (anywhere on the
stack), per coarse bucket (reactor/network, image probe, metadata, hashing, Parquet, ledger, ...), and
first of all per *innermost project frame*: each sample is charged to the deepest ``imagecrawl/`` or
``spiders/`` function on its stack (what of ours is running, or what of ours called the library code that
is), so a downloader middleware of ours is charged to itself, not to "Scrapy downloader". Samples with no
project frame below the ``scrapy crawl`` command are charged to the library at the leaf.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

#: first match wins: (bucket, substring of a frame "function (file:line)")
BUCKETS: tuple[tuple[str, str], ...] = (
    ("idle: threads waiting for work", "_worker (concurrent/futures/thread.py:81)"),
    ("idle: threads waiting for work", "Condition.wait (threading.py"),
    ("start-up: imports", "_find_and_load"),
    ("pHash: decode + resize (media.phash_of)", "phash_of"),
    ("sha256", "sha256"),
    ("image header (PIL open)", "probe_image"),
    ("metadata extraction", "extract_metadata"),
    ("spool: Arrow batch + fsync", "flush (imagecrawl/storage/shards.py"),
    ("Parquet shard (spool_to_parquet)", "spool_to_parquet"),
    ("dedupe ledger (sqlite)", "imagecrawl/dedupe/sqlite.py"),
    ("gallery page parsing", "imagecrawl/pages/gallery.py"),
    ("item pipelines (other)", "scrapy/pipelines"),
    ("spider middlewares / scraper", "scrapy/core/scraper.py"),
    ("downloader + HTTP/1.1 client", "scrapy/core/downloader"),
    ("engine/scheduler", "scrapy/core/"),
    ("twisted (reactor, protocols)", "twisted/"),
    ("asyncio event loop", "asyncio/"),
)


#: project frames that sit at the root of every stack (the command): never the innermost of interest
ROOT_FRAMES = ("imagecrawl/commands/",)
#: the library a leaf frame belongs to, for samples with no project frame (first match wins)
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("idle: threads waiting", "threading.py"),
    ("idle: threads waiting", "concurrent/futures/thread.py"),
    ("start-up: imports", "<frozen importlib"),
    ("scrapy", "scrapy/"),
    ("twisted", "twisted/"),
    ("asyncio", "asyncio/"),
    ("pyarrow", "pyarrow/"),
    ("PIL", "PIL/"),
)


def frames_of(stack: str) -> list[str]:
    return [frame.strip() for frame in stack.split(";")]


def frame_file(frame: str) -> str:
    """``"func (path:line)"`` -> ``path``."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    return inside.rpartition(":")[0] or inside


def frame_key(frame: str) -> str:
    """``"Class.func (imagecrawl/x.py:12)"`` -> ``"imagecrawl/x.py Class.func"`` (no line number)."""
    func = frame.rpartition(" (")[0]
    return f"{frame_file(frame)} {func}"


def innermost_project_bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        path = frame_file(frame)
        if path.startswith(("imagecrawl/", "spiders/")) and not path.startswith(ROOT_FRAMES):
            return frame_key(frame)
    leaf = frames[-1] if frames else ""
    for name, needle in LIBRARIES:
        if needle in leaf:
            return f"[no project frame] {name}"
    return "[no project frame] other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for path in args.files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = frames_of(stack)
            total += count
            threads[frames[0]] += count
            ours[innermost_project_bucket(frames)] += count
            self_counts[frames[-1]] += count
            for frame in set(frames):
                incl[frame] += count
            joined = ";".join(frames)
            for name, needle in BUCKETS:
                if needle in joined:
                    buckets[name] += count
                    break
            else:
                buckets["other"] += count
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples")
    print("\nby thread:")
    for name, n in threads.most_common(8):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nby innermost imagecrawl/ or spiders/ frame:")
    for name, n in ours.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nby bucket (first match on the stack):")
    idle = sum(n for name, n in buckets.items() if name.startswith("idle"))
    print(f"  (percent of all samples; last column: of the {total - idle} busy samples)")
    for name, n in buckets.most_common():
        busy = "" if name.startswith("idle") else f"  {100 * n / max(total - idle, 1):5.1f}%"
        print(f"  {100 * n / total:5.1f}%{busy}  {name}")
    print(f"\ntop {args.top} self:")
    for name, n in self_counts.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ntop {args.top} inclusive:")
    for name, n in incl.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
