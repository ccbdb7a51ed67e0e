"""Peak memory of the perceptual hash on worst-case images (``imagecrawl.media.probe_image``).

    uv run python -m benchmarks.phash_memory [--side 7999] [--concurrent 4] [--kinds rgba,rgb,la,rgba16]

Writes huge, highly compressible PNGs (a few hundred KB each: 7999x7999 RGBA by default, the largest square
under the default 64-megapixel limit), then hashes them in fresh processes and prints each process's peak
RSS (``VmHWM``) next to its RSS after the imports: one image, then ``--concurrent`` images on as many
threads at once (as ``IMAGECRAWL_MEDIA_THREADS`` threads would). The budget: at most 300 MB peak for one
image, and concurrent images must not multiply it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.hugepng import measure, write_png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7999)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--kinds", default="rgba,rgb,la,rgba16")
    parser.add_argument("--budget-mb", type=float, default=300.0)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            paths = [Path(tmp) / f"{kind}-{n}.png" for n in range(max(1, args.concurrent))]
            sizes = [write_png(p, args.side, kind, seed=n) for n, p in enumerate(paths)]
            one = measure(paths[:1])
            many = measure(paths)
            print(
                f"{kind:7} {args.side}x{args.side} ({sizes[0] / 1024:.0f} KB): one image peak {one['peak_mb']:.0f} MB "
                f"(after imports {one['base_mb']:.0f} MB, {one['seconds']:.2f} s, hashed {one['hashed']:.0f}); "
                f"{len(paths)} at once peak {many['peak_mb']:.0f} MB "
                f"({many['seconds']:.2f} s, hashed {many['hashed']:.0f})"
            )
            ok = ok and one["peak_mb"] <= args.budget_mb and many["peak_mb"] <= args.budget_mb
    print("WITHIN BUDGET" if ok else f"OVER BUDGET ({args.budget_mb:g} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"{time.perf_counter() - started:.1f} s in all")
    sys.exit(code)
