"""CPU and wall time per image of building a record, step by step, inline and on threads.

    uv run python -m benchmarks.record_cost --images 2000      # needs the throughput site (built once)

Reads the images of ``benchmarks/out/site-<N>-1`` (``benchmarks/throughput.py`` builds it) and times
sha256, the header probe, the full probe (pHash), metadata extraction and ``build_record``; then
``build_record`` inline vs on a 2-thread pool (what ``IMAGECRAWL_MEDIA_THREADS`` does).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import REPO
from imagecrawl.media import probe_image
from imagecrawl.metadata import extract_metadata
from imagecrawl.records import SourceHints, build_record


def timed(name: str, fn: Callable[[bytes], object], blobs: list[bytes], threads: int = 0) -> None:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if threads:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, blobs))
    else:
        for blob in blobs:
            fn(blob)
    wall = 1000 * (time.perf_counter() - wall0) / len(blobs)
    cpu = 1000 * (time.process_time() - cpu0) / len(blobs)
    print(f"{name:34s} wall {wall:6.3f} ms/image   CPU {cpu:6.3f} ms/image", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    sites = sorted((REPO / "benchmarks" / "out").glob("site-*-1/images/gallery"))
    if not sites:
        raise SystemExit("no site: run benchmarks/throughput.py once (it builds benchmarks/out/site-N-1)")
    blobs = [path.read_bytes() for path in sorted(sites[-1].iterdir())[: args.images]]
    hints = SourceHints(source="urls")

    def record(blob: bytes) -> object:
        return build_record(hints=hints, image_url="http://127.0.0.1/x.png", body=blob, salt=b"salt")

    print(f"{len(blobs)} images from {sites[-1]}")
    timed("sha256", lambda b: hashlib.sha256(b).hexdigest(), blobs)
    timed("probe_image without pHash", lambda b: probe_image(b, want_phash=False), blobs)
    timed("probe_image (with pHash)", lambda b: probe_image(b), blobs)
    timed("extract_metadata", lambda b: extract_metadata(b), blobs)
    for _ in range(args.rounds):
        timed("build_record inline", record, blobs)
        timed("build_record on 2 threads", record, blobs, threads=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
