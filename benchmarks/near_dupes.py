"""Benchmark of the near-duplicate policy and index.

    uv run python -m benchmarks.near_dupes            # full: 10k distinct images, 1M stored hashes
    uv run python -m benchmarks.near_dupes --quick    # small: 1.5k images, 100k stored hashes

1. Generates distinct synthetic pictures deterministically (gradients, fractal noise, shapes, text,
   blur, grain, various sizes and aspect ratios, JPEG or PNG), and for a subset four transformed copies:
   ``resize50`` (half size), ``jpeg70`` (JPEG quality 70 re-encode), ``crop3`` (3 % cut off the width and
   height, at a random offset), ``text`` (a small caption/watermark in a corner). Hashes come from
   ``imagecrawl.media.probe_image`` on the encoded bytes, as in the crawler; they are cached under
   ``benchmarks/out/`` keyed by the generator version and the source of ``imagecrawl/media.py``.
2. Distance profile: per transform, the distance between each copy and its original; per original, the
   distance to the nearest *other* picture; recall/precision of a pairwise threshold for k in a range.
3. The streaming policy ("drop if within k of anything stored, else store it") over originals and
   copies interleaved (random order, each original before its own copies), with the SQLite index:
   recall and precision per transform and overall.
4. Index speed with N stored hashes (random 64-bit plus the real ones): inserts/s (add_many in batches
   and single add), load time on reopen, query p50/p99 at k, for SQLite and for Redis when a
   ``redis-server`` binary and the ``redis`` client are present (started on a free loopback port).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import math
import multiprocessing
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from imagecrawl import media
from imagecrawl.dedupe.near import DEFAULT_BANDS, DEFAULT_MAX_DISTANCE, SqliteNearIndex

GENERATOR_VERSION = 3
OUT = Path(__file__).resolve().parent / "out"
TRANSFORMS = ("resize50", "jpeg70", "crop3", "text")
WORDS = [
    "sunset",
    "portrait",
    "castle",
    "forest",
    "neon",
    "city",
    "dragon",
    "ocean",
    "robot",
    "garden",
    "winter",
    "desert",
    "cyberpunk",
    "watercolor",
    "mountain",
    "river",
    "cat",
    "astronaut",
    "galaxy",
    "temple",
    "samurai",
    "flower",
    "market",
    "rain",
    "lantern",
    "portrait",
    "of",
    "a",
    "knight,",
    "highly",
    "detailed,",
    "8k,",
    "trending",
    "on",
    "artstation",
]

# -- picture generator ------------------------------------------------------------------------------


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _background(rng: random.Random, nrng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = rng.choice(("linear", "radial", "noise", "noise", "solid", "stripes"))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "solid":
        return Image.new("RGB", (w, h), _colour(rng))
    if kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(w, h)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    elif kind == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy) / math.hypot(w, h)
        t = np.clip(t * rng.uniform(1, 3), 0, 1)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(8, max(w, h) / 2)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    else:  # fractal noise: octaves of upsampled random grids
        t = np.zeros((h, w), dtype=np.float32)
        amp = 1.0
        for cells in (2, 4, 8, 16, 32)[: rng.randint(2, 5)]:
            grid = Image.fromarray((nrng.random((cells, cells)) * 255).astype(np.uint8))
            t += amp * np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255
            amp *= rng.uniform(0.35, 0.65)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    stops = np.array([_colour(rng) for _ in range(rng.randint(2, 4))], dtype=np.float32)
    pos = t * (len(stops) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def make_picture(seed: int) -> tuple[Image.Image, str]:
    """A distinct picture and the format it is published in."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    base = rng.randint(256, 512)
    aspect = rng.choice((1.0, 1.0, 4 / 3, 3 / 4, 16 / 9, 2 / 3, 3 / 2))
    w, h = (base, int(base / aspect)) if aspect >= 1 else (int(base * aspect), base)
    img = _background(rng, nrng, w, h).convert("RGBA")
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(2, 30)):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        sw, sh = rng.uniform(0.03, 0.6) * w, rng.uniform(0.03, 0.6) * h
        fill = (*_colour(rng), rng.choice((255, 255, rng.randint(60, 230))))
        kind = rng.choice(("ellipse", "rect", "polygon", "line", "arc"))
        if kind == "ellipse":
            draw.ellipse((x0, y0, x0 + sw, y0 + sh), fill=fill)
        elif kind == "rect":
            draw.rectangle((x0, y0, x0 + sw, y0 + sh), fill=fill)
        elif kind == "polygon":
            pts = [(x0 + rng.uniform(0, sw), y0 + rng.uniform(0, sh)) for _ in range(rng.randint(3, 7))]
            draw.polygon(pts, fill=fill)
        elif kind == "line":
            draw.line((x0, y0, x0 + sw, y0 + sh), fill=fill, width=rng.randint(1, max(2, w // 30)))
        else:
            draw.arc((x0, y0, x0 + sw, y0 + sh), rng.uniform(0, 360), rng.uniform(0, 360), fill=fill, width=4)
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 3)):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
            size = int(h * rng.uniform(0.04, 0.15))
            draw.text(
                (rng.uniform(0, 0.7) * w, rng.uniform(0, 0.9) * h),
                text,
                font=_font(size),
                fill=(*_colour(rng), 255),
            )
    img = Image.alpha_composite(img, layer).convert("RGB")
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
    if rng.random() < 0.4:
        arr = np.asarray(img, dtype=np.float32) + nrng.normal(0, rng.uniform(2, 14), (h, w, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img, ("PNG" if rng.random() < 0.15 else "JPEG")


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def transform(name: str, img: Image.Image, fmt: str, rng: random.Random) -> bytes:
    w, h = img.size
    if name == "resize50":
        return encode(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), fmt)
    if name == "jpeg70":
        return encode(img, "JPEG", quality=70)
    if name == "crop3":
        cw, ch = round(w * 0.03), round(h * 0.03)
        x, y = rng.randint(0, cw), rng.randint(0, ch)
        return encode(img.crop((x, y, x + w - cw, y + h - ch)), fmt)
    if name == "text":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        size = max(10, h // 25)
        label = rng.choice(("@", "(c) ", "via ")) + rng.choice(WORDS) + str(rng.randint(1, 999))
        x = rng.choice((int(w * 0.02), int(w * 0.6)))
        y = rng.choice((int(h * 0.02), int(h * 0.93) - size))
        draw.text((x, y), label, font=_font(size), fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        return encode(out, fmt)
    raise ValueError(name)


def _hash(data: bytes) -> int:
    phash = media.probe_image(data).phash
    assert phash is not None
    return phash


def _work(args: tuple[int, bool]) -> list[tuple[int, str, int]]:
    """Hashes of picture ``seed`` (group ``seed``) and, if ``copies``, of its four transformed copies."""
    seed, copies = args
    img, fmt = make_picture(seed)
    out = [(seed, "orig", _hash(encode(img, fmt)))]
    if copies:
        rng = random.Random(seed ^ 0x5EED)
        out += [(seed, name, _hash(transform(name, img, fmt, rng))) for name in TRANSFORMS]
    return out


def dataset(n_images: int, copy_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group, transform index (0 = original), phash) arrays, cached under benchmarks/out/."""
    # The cache is valid while the hashing code and the picture generator are unchanged.
    sources = Path(media.__file__).read_text() + "".join(
        inspect.getsource(f) for f in (_colour, _font, _background, make_picture, encode, transform, _work)
    )
    key = f"{sources}{GENERATOR_VERSION}:{n_images}:{copy_fraction}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = OUT / f"hashes-{n_images}-{tag}.npz"
    if cache.exists():
        z = np.load(cache)
        print(f"images: cached {cache.relative_to(OUT.parent.parent)}")
        return z["group"], z["kind"], z["phash"]
    n_copies = int(n_images * copy_fraction)
    jobs = [(seed, seed < n_copies) for seed in range(n_images)]
    t0 = time.perf_counter()
    rows: list[tuple[int, str, int]] = []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for part in pool.imap_unordered(_work, jobs, chunksize=16):
            rows += part
    kinds = ("orig", *TRANSFORMS)
    rows.sort(key=lambda r: (r[0], kinds.index(r[1])))
    group = np.array([r[0] for r in rows], dtype=np.int64)
    kind = np.array([kinds.index(r[1]) for r in rows], dtype=np.int8)
    phash = np.array([r[2] for r in rows], dtype=np.int64)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, group=group, kind=kind, phash=phash)
    print(
        f"images: generated {n_images} pictures + {n_copies * len(TRANSFORMS)} copies "
        f"and hashed them in {time.perf_counter() - t0:.0f} s (2 processes)"
    )
    return group, kind, phash


# -- distance profile -------------------------------------------------------------------------------


def popcount_to(hashes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """len(q) x len(hashes) Hamming distances (uint8)."""
    return np.bitwise_count(hashes.view(np.uint64)[None, :] ^ q.view(np.uint64)[:, None])


def profile(group: np.ndarray, kind: np.ndarray, phash: np.ndarray) -> None:
    orig = kind == 0
    orig_hash, orig_group = phash[orig], group[orig]
    by_group = dict(zip(orig_group.tolist(), orig_hash.tolist(), strict=True))
    print("\nDistance copy -> its original (percentiles):")
    print(f"  {'transform':<10} {'n':>6} {'p50':>4} {'p90':>4} {'p95':>4} {'p99':>4} {'max':>4}")
    for t, name in enumerate(TRANSFORMS, start=1):
        sel = kind == t
        d = np.array(
            [media.hamming(h, by_group[g]) for h, g in zip(phash[sel].tolist(), group[sel].tolist(), strict=True)]
        )
        p = np.percentile(d, [50, 90, 95, 99]).round().astype(int)
        print(f"  {name:<10} {len(d):>6} {p[0]:>4} {p[1]:>4} {p[2]:>4} {p[3]:>4} {d.max():>4}")
    # nearest other picture, for every original
    nearest = np.full(len(orig_hash), 64, dtype=np.int64)
    for i in range(0, len(orig_hash), 1024):
        d = popcount_to(orig_hash, orig_hash[i : i + 1024]).astype(np.int64)
        d[np.arange(d.shape[0]), np.arange(i, i + d.shape[0])] = 64
        nearest[i : i + 1024] = d.min(axis=1)
    p = np.percentile(nearest, [0.1, 1, 5, 50]).round().astype(int)
    print(
        f"Distance original -> nearest other original: min {nearest.min()}, p0.1 {p[0]}, p1 {p[1]}, "
        f"p5 {p[2]}, p50 {p[3]}"
    )
    print("\nPairwise threshold (copy within k of its original; original within k of another original):")
    print(f"  {'k':>3} {'recall':>7} " + " ".join(f"{n:>8}" for n in TRANSFORMS) + f" {'FP orig':>8}")
    copies = kind > 0
    dcopy = np.array(
        [media.hamming(h, by_group[g]) for h, g in zip(phash[copies].tolist(), group[copies].tolist(), strict=True)]
    )
    for k in range(4, 19, 2):
        per = [float((dcopy[kind[copies] == t] <= k).mean()) for t in range(1, len(TRANSFORMS) + 1)]
        print(
            f"  {k:>3} {float((dcopy <= k).mean()):>7.4f} "
            + " ".join(f"{r:>8.4f}" for r in per)
            + f" {float((nearest <= k).mean()):>8.4f}"
        )
    # How the false-positive side grows with the number of stored pictures.
    print("Originals with another original within k, by collection size (first n pictures):")
    for k in (8, 10):
        shares = []
        for n in (len(orig_hash) // 4, len(orig_hash) // 2, len(orig_hash)):
            sub = orig_hash[:n]
            close = 0
            for i in range(0, n, 1024):
                d = popcount_to(sub, sub[i : i + 1024]).astype(np.int64)
                d[np.arange(d.shape[0]), np.arange(i, i + d.shape[0])] = 64
                close += int((d.min(axis=1) <= k).sum())
            shares.append(f"n={n}: {close / n:.4f}")
        print(f"  k={k:<3} " + "   ".join(shares))


# -- streaming policy -------------------------------------------------------------------------------


def stream_order(group: np.ndarray, kind: np.ndarray, seed: int = 1) -> np.ndarray:
    """A random interleaving of all items in which every original precedes its own copies."""
    order = np.random.default_rng(seed).permutation(len(group))
    first_slot: dict[int, int] = {}
    for slot, i in enumerate(order.tolist()):
        first_slot.setdefault(int(group[i]), slot)
    orig_index = {int(g): i for i, (g, k) in enumerate(zip(group, kind, strict=True)) if k == 0}
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    for g, slot in first_slot.items():
        where = int(pos[orig_index[g]])
        a, b = order[slot], order[where]
        order[slot], order[where] = b, a
        pos[a], pos[b] = where, slot
    return order


def policy(group: np.ndarray, kind: np.ndarray, phash: np.ndarray, k: int, bands: int, tmp: Path) -> None:
    index = SqliteNearIndex(tmp / f"policy-{k}.sqlite", bands=bands)
    names = ("orig", *TRANSFORMS)
    dropped = {n: 0 for n in names}
    right = {n: 0 for n in names}
    total = {n: 0 for n in names}
    for i in stream_order(group, kind).tolist():
        name, g, h = names[kind[i]], int(group[i]), int(phash[i])
        total[name] += 1
        hit = index.query(h, k)
        if hit is None:
            index.add(f"{g}:{name}", h)
            continue
        dropped[name] += 1
        right[name] += int(hit[0].split(":")[0] == str(g))
    index.close()
    print(f"\nStreaming policy, k={k}, {bands} bands, SQLite index ({sum(total.values())} items):")
    print(f"  {'transform':<10} {'copies':>7} {'dropped':>8} {'recall':>7} {'precision':>9}")
    for name in TRANSFORMS:
        rec = right[name] / total[name]
        prec = right[name] / dropped[name] if dropped[name] else float("nan")
        print(f"  {name:<10} {total[name]:>7} {dropped[name]:>8} {rec:>7.4f} {prec:>9.4f}")
    n_copies = sum(total[n] for n in TRANSFORMS)
    n_right = sum(right[n] for n in TRANSFORMS)
    n_dropped = sum(dropped.values())
    print(
        f"  {'all copies':<10} {n_copies:>7} {n_dropped:>8} {n_right / n_copies:>7.4f} "
        f"{n_right / max(1, n_dropped):>9.4f}"
    )
    print(f"  originals wrongly dropped: {dropped['orig']} of {total['orig']}")


# -- index speed ------------------------------------------------------------------------------------


def speed(name: str, make: Callable[[], object], real: np.ndarray, n: int, k: int) -> None:
    rng = np.random.default_rng(42)
    hashes = np.concatenate([real, rng.integers(-(2**63), 2**63 - 1, size=n - len(real), dtype=np.int64)])
    rng.shuffle(hashes)
    items = [(f"r{i}", h) for i, h in enumerate(hashes.tolist())]
    index = make()
    t0 = time.perf_counter()
    for s in range(0, n, 10_000):
        index.add_many(items[s : s + 10_000])  # type: ignore[attr-defined]
    bulk = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    singles = [(f"s{i}", int(h)) for i, h in enumerate(rng.integers(-(2**63), 2**63 - 1, 2000, np.int64))]
    for key, h in singles:
        index.add(key, h)  # type: ignore[attr-defined]
    single = len(singles) / (time.perf_counter() - t0)
    index.close()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    index = make()
    load = time.perf_counter() - t0
    stored = len(index)  # type: ignore[arg-type]
    qs: list[int] = []
    for h in rng.choice(real, 3000).tolist():  # real hashes, some perturbed (hits and near misses)
        for bit in rng.choice(64, int(rng.integers(0, 16)), replace=False).tolist():
            h ^= 1 << bit
        qs.append(media.to_signed64(h & (2**64 - 1)))
    qs += rng.integers(-(2**63), 2**63 - 1, 1000, np.int64).tolist()
    lat = np.empty(len(qs))
    cpu = np.empty(len(qs))
    hits = 0
    for j, q in enumerate(qs):
        c, t = time.thread_time(), time.perf_counter()
        hits += index.query(q, k) is not None  # type: ignore[attr-defined]
        lat[j], cpu[j] = time.perf_counter() - t, time.thread_time() - c
    index.close()  # type: ignore[attr-defined]
    p50, p99 = np.percentile(lat, [50, 99]) * 1e3
    c50, c99 = np.percentile(cpu, [50, 99]) * 1e3
    print(
        f"  {name:<7} {stored:>9} {bulk:>12,.0f} {single:>10,.0f} {load:>7.1f} s {p50:>8.3f} {p99:>8.3f}"
        f" {lat.max() * 1e3:>8.2f} {c50:>8.3f} {c99:>8.3f}  ({hits} hits / {len(qs)})"
    )


def redis_server(tmp: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        print("  redis   skipped: the redis client is not installed (uv sync --extra redis)")
        return None
    if binary is None:
        print("  redis   skipped: no redis-server binary")
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            client.ping()
            client.close()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.terminate()
    proc.wait(10)
    print("  redis   skipped: redis-server did not start")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1.5k images, 100k stored hashes")
    parser.add_argument("-k", type=int, default=DEFAULT_MAX_DISTANCE, help="max Hamming distance")
    parser.add_argument("--bands", type=int, default=DEFAULT_BANDS)
    parser.add_argument("--images", type=int, help="distinct pictures (default 10000, quick 1500)")
    parser.add_argument("--stored", type=int, help="hashes stored for the speed test (default 1M, quick 100k)")
    parser.add_argument("--no-speed", action="store_true", help="skip the index speed test")
    args = parser.parse_args()
    n_images = args.images or (1500 if args.quick else 10_000)
    n_stored = args.stored or (100_000 if args.quick else 1_000_000)
    t_start = time.perf_counter()
    group, kind, phash = dataset(n_images, copy_fraction=0.25)
    profile(group, kind, phash)
    with tempfile.TemporaryDirectory(prefix="near-bench-") as tmpdir:
        tmp = Path(tmpdir)
        policy(group, kind, phash, args.k, args.bands, tmp)
        if not args.no_speed:
            print(
                f"\nIndex speed, k={args.k}, {args.bands} bands, {n_stored:,} stored hashes "
                f"({len(phash)} real + random):"
            )
            print(
                f"  {'backend':<7} {'stored':>9} {'add_many/s':>12} {'add/s':>10} {'reopen':>9} "
                f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cpu p50':>8} {'cpu p99':>8}"
            )
            path = tmp / "speed.sqlite"
            speed("sqlite", lambda: SqliteNearIndex(path, bands=args.bands), phash, n_stored, args.k)
            server = redis_server(tmp)
            if server is not None:
                import redis

                from imagecrawl.distributed.near_index import RedisNearIndex

                proc, port = server
                try:
                    client = redis.Redis(host="127.0.0.1", port=port)
                    speed("redis", lambda: RedisNearIndex(client, bands=args.bands), phash, n_stored, args.k)
                    used = client.info("memory")["used_memory"]
                    print(f"  redis used_memory: {used / 2**20:.0f} MiB")
                finally:
                    proc.terminate()
                    proc.wait(10)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
