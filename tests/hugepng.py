"""Huge, highly compressible PNGs written row by row (never held whole), and the peak memory of hashing
them in a fresh process: shared by tests/test_media_budget.py and benchmarks/phash_memory.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

#: PNG colour type, bit depth and channels of each kind
KINDS = {"rgba": (6, 8, 4), "rgb": (2, 8, 3), "la": (4, 8, 2), "grey": (0, 8, 1), "rgba16": (6, 16, 4)}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png(path: Path, side: int, kind: str, seed: int) -> int:
    """A ``side`` x ``side`` PNG of big soft blocks (a picture for the hash, tiny once compressed),
    written row by row without ever holding the image."""
    colour, depth, channels = KINDS[kind]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, channels), dtype=np.uint8)
    xs = np.minimum(np.arange(side) * 8 // side, 7)
    pack = zlib.compressobj(9)
    with path.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, depth, colour, 0, 0, 0)))
        data = bytearray()
        for y in range(side):
            row = blocks[min(y * 8 // side, 7)][xs]
            if depth == 16:
                row = np.repeat(row, 2, axis=1)
            data += b"\x00" + row.tobytes()
            if len(data) > 1 << 22:
                fh.write(_chunk(b"IDAT", pack.compress(bytes(data))))
                data.clear()
        fh.write(_chunk(b"IDAT", pack.compress(bytes(data)) + pack.flush()))
        fh.write(_chunk(b"IEND", b""))
    return path.stat().st_size


CHILD = """
import json, sys, threading, time
from pathlib import Path
from imagecrawl.media import probe_image
def high_water_kib():
    # VmHWM belongs to this process's own address space: unlike ru_maxrss, which Linux carries over from the
    # parent's size at fork through exec, it starts fresh, so a big test runner does not inflate the figure
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")
paths = [Path(p) for p in sys.argv[1:]]
bodies = [p.read_bytes() for p in paths]
base = high_water_kib()
out = [None] * len(bodies)
def run(i):
    out[i] = probe_image(bodies[i]).phash
started = time.perf_counter()
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
for t in threads: t.start()
for t in threads: t.join()
peak = high_water_kib()
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "seconds": time.perf_counter() - started,
                  "hashed": sum(h is not None for h in out)}))
"""


def measure(paths: list[Path]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
