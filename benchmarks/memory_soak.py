"""Memory soak: one long ``urls`` crawl of a static site on loopback; the crawl process's RSS is sampled
every few seconds. Prints the series and the growth from 25% to 100% of the crawl (goal: <= 10%, and
RSS <= 400 MB).

    uv run python -m benchmarks.memory_soak --items 200000          # the full soak (about 40 min here)
    uv run python -m benchmarks.memory_soak --items 40000           # what fits in ~10 min on 2 busy cores

The site: ``--items`` distinct small PNGs (64x64, unique pixels, an A1111 ``parameters`` text chunk with
prompt, negative prompt and settings), written directly as PNG chunks so that building 200k files
takes about a minute (``render_image`` would take over an hour), served by nginx on loopback. Every
record goes the whole way: sha256, pHash decode, metadata, dedupe ledger, spool, Parquet shards
(``IMAGECRAWL_SHARD_MAX_ROWS`` 10 000, so shards roll during the soak).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import REPO
from tests.crawlers import setting_text
from tests.static_site import start_nginx

OUT = REPO / "benchmarks" / "out"
SITE_VERSION = 1
_PROMPTS = ("portrait of an old fisherman", "misty forest landscape at dawn", "cat astronaut floating in space")
_STYLES = ("oil painting", "watercolor", "digital art", "35mm film photo")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def soak_png(index: int, side: int = 64) -> bytes:
    """A distinct PNG: an 8x8 random colour grid scaled up (distinct pHash), with A1111 parameters."""
    rng = np.random.default_rng(index)
    grid = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(grid, side // 8, axis=0), side // 8, axis=1)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(side))
    infotext = (
        f"{_PROMPTS[index % 3]}, {_STYLES[index % 4]}, item {index}\n"
        f"Negative prompt: blurry, watermark\n"
        f"Steps: {20 + index % 20}, Sampler: Euler a, CFG scale: 7.0, Seed: {index}, Size: {side}x{side}, "
        f"Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Version: v1.10.1"
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        + _chunk(b"tEXt", b"parameters\x00" + infotext.encode("latin-1"))
        + _chunk(b"IDAT", zlib.compress(raw, 1))
        + _chunk(b"IEND", b"")
    )


def build_soak_site(root: Path, items: int) -> Path:
    marker = root / ".complete"
    want = {"version": SITE_VERSION, "items": items}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return root
    started = time.monotonic()
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for i in range(items):
        sub = images / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        path = sub / f"{i}.png"
        if not path.exists():
            path.write_bytes(soak_png(i))
        if i and i % 50_000 == 0:
            print(f"  site: {i}/{items} images ({time.monotonic() - started:.0f} s)", flush=True)
    marker.write_text(json.dumps(want))
    print(f"  site: {items} images in {time.monotonic() - started:.0f} s under {root}", flush=True)
    return root


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


_CRAWLED = re.compile(r"Crawled (\d+) pages .* scraped (\d+) items")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("-s", "--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = (args.workdir or Path(tempfile.mkdtemp(prefix=f"soak-{stamp}-", dir=OUT))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    site = build_soak_site(OUT / f"soak-site-{args.items}", args.items)
    nginx = start_nginx(site, work / "nginx")
    try:
        urls = work / "urls.txt"
        with urls.open("w") as fh:
            for i in range(args.items):
                fh.write(f"{nginx.base_url}/images/{i // 1000:04d}/{i}.png\n")
        stats_file = work / "stats.json"
        settings = {
            "DOWNLOAD_DELAY": "0",
            "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
            # the caps lifted as for a site one owns; the pacing gate stays on (its state is soaked too)
            "IMAGECRAWL_MAX_RATE_PER_SITE": "100000",
            "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": str(args.concurrency),
            "ROBOTSTXT_OBEY": "False",
            "CONCURRENT_REQUESTS": str(args.concurrency),
            "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
            "LOGSTATS_INTERVAL": "5",
            "IMAGECRAWL_STORE": str(work / "store"),
            "IMAGECRAWL_STATS_FILE": str(stats_file),
            **dict(item.split("=", 1) for item in args.set),
        }
        cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={urls}"]
        for key, value in settings.items():
            cmd += ["-s", f"{key}={setting_text(value)}"]
        log_path = work / "crawl.log"
        print(f"soak: {args.items} items, sampling RSS every {args.interval:.0f} s; log {log_path}", flush=True)
        series: list[tuple[float, float, int]] = []  # (seconds, RSS MB, responses so far)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            t0 = time.monotonic()
            crawled = 0
            with log_path.open("rb") as reader:
                while proc.poll() is None:
                    time.sleep(args.interval)
                    for line in reader.read().decode(errors="replace").splitlines():
                        m = _CRAWLED.search(line)
                        if m:
                            crawled = int(m.group(1))
                    rss = rss_mb(proc.pid)
                    if rss:
                        series.append((time.monotonic() - t0, rss, crawled))
                        print(f"  t={series[-1][0]:6.0f} s  RSS {rss:6.1f} MB  crawled {crawled}", flush=True)
            wall = time.monotonic() - t0
    finally:
        nginx.stop()
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    rows = stats.get("imagecrawl/parquet/rows", 0)
    if not series:
        print("no samples")
        return 1
    # 25% .. 100% of the crawl by progress (responses), not by time: start-up is excluded either way
    total = max(series[-1][2], 1)
    quarter = next((s for s in series if s[2] >= 0.25 * total), series[0])
    later = [s for s in series if s[0] >= quarter[0]]
    peak_later = max(rss for _, rss, _ in later)
    growth = (peak_later - quarter[1]) / quarter[1]
    peak = max(rss for _, rss, _ in series)
    # steady state, without the short peaks while a finished shard is converted to Parquet:
    # the median RSS around 25% of the crawl vs the median over its last quarter
    early = [rss for _, rss, c in series if 0.2 * total <= c <= 0.3 * total] or [quarter[1]]
    late = [rss for _, rss, c in series if c >= 0.75 * total] or [series[-1][1]]
    median_growth = (statistics.median(late) - statistics.median(early)) / statistics.median(early)
    result = {
        "when": stamp,
        "items": args.items,
        "wall_s": wall,
        "rows": rows,
        "images": stats.get("imagecrawl/media/images", 0),
        "peak_rss_mb": peak,
        "rss_at_25pct_mb": quarter[1],
        "peak_rss_25_to_100pct_mb": peak_later,
        "final_rss_mb": series[-1][1],
        "growth_25_to_100pct": growth,
        "median_rss_20_30pct_mb": statistics.median(early),
        "median_rss_75_100pct_mb": statistics.median(late),
        "median_growth": median_growth,
        "series": series,
        "exit": proc.returncode,
    }
    (OUT / f"soak-{stamp}.json").write_text(json.dumps(result, indent=1))
    print(
        f"\nsoak: {args.items} items, {rows} rows, {wall:.0f} s, exit {proc.returncode}; peak RSS {peak:.0f} MB; "
        f"RSS at 25% {quarter[1]:.0f} MB, peak 25%..100% {peak_later:.0f} MB: growth {100 * growth:+.1f}%; "
        f"median RSS at 20-30% {statistics.median(early):.0f} MB, over the last quarter "
        f"{statistics.median(late):.0f} MB: growth {100 * median_growth:+.1f}%"
    )
    print(f"results: {OUT / f'soak-{stamp}.json'}; work dir: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
