"""Near-duplicate index: exact against brute force, persistent, edge values, real images."""

from __future__ import annotations

import io
import multiprocessing
import random
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagecrawl.dedupe.near import (
    DEFAULT_MAX_DISTANCE,
    MemoryNearIndex,
    MihCore,
    NearIndex,
    SqliteNearIndex,
    band_layout,
    to_signed64,
)
from imagecrawl.media import hamming, probe_image

MIN64 = -(1 << 63)
MAX64 = (1 << 63) - 1
MASK = (1 << 64) - 1


def brute(stored: list[tuple[str, int]], q: int, k: int) -> tuple[str, int] | None:
    """The reference answer: closest within k, first stored on ties (keys are unique)."""
    best: tuple[str, int] | None = None
    for key, h in stored:
        d = hamming(h, q)
        if d <= k and (best is None or d < best[1]):
            best = (key, d)
    return best


def clustered_hashes(rng: random.Random, n: int) -> list[int]:
    """Random hashes plus near copies of them (1..12 flipped bits), signed int64, with repeats."""
    out: list[int] = []
    while len(out) < n:
        if out and rng.random() < 0.5:
            h = rng.choice(out) & MASK
            for bit in rng.sample(range(64), rng.randint(0, 12)):
                h ^= 1 << bit
            out.append(to_signed64(h))
        else:
            out.append(to_signed64(rng.getrandbits(64)))
    return out


def queries(rng: random.Random, stored: list[int], count: int) -> list[int]:
    qs = []
    for _ in range(count):
        if rng.random() < 0.7:
            h = rng.choice(stored) & MASK
            for bit in rng.sample(range(64), rng.randint(0, 16)):
                h ^= 1 << bit
            qs.append(to_signed64(h))
        else:
            qs.append(to_signed64(rng.getrandbits(64)))
    return qs


def test_band_layout_covers_64_bits() -> None:
    for bands in range(1, 65):
        layout = band_layout(bands)
        assert sum(w for _, w in layout) == 64
        mask = 0
        for shift, width in layout:
            band = ((1 << width) - 1) << shift
            assert mask & band == 0
            mask |= band
        assert mask == (1 << 64) - 1
    with pytest.raises(ValueError):
        band_layout(0)


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("n", [50, 3000, 30000])
def test_core_matches_brute_force(bands: int, n: int) -> None:
    rng = random.Random(bands * 1000 + n)
    hashes = clustered_hashes(rng, n)
    core = MihCore(bands)
    half = n // 2  # first half bulk-merged into the bands, second half through the delta
    core.add_arrays(np.arange(half), np.array(hashes[:half], dtype=np.int64).view(np.uint64))
    for i in range(half, n):
        core.add(i, hashes[i])
    assert len(core) == n
    arr = np.array(hashes, dtype=np.int64).view(np.uint64)
    for k in (0, 1, 3, 6, 8, 10, 12, 15, 20, 40, 64):
        for q in queries(rng, hashes, 25):
            dist = np.bitwise_count(arr ^ np.uint64(q & ((1 << 64) - 1)))
            within = np.flatnonzero(dist <= k)
            expected = None if len(within) == 0 else (int(within[np.argmin(dist[within])]), int(dist[within].min()))
            assert core.query(q, k) == expected, (bands, n, k, q)


@pytest.mark.parametrize("bands", [2, 4, 6])
def test_memory_index_matches_brute_force_while_streaming(bands: int) -> None:
    """Interleaved adds and queries (the dedupe policy), across several delta merges."""
    rng = random.Random(bands)
    index = MemoryNearIndex(bands=bands)
    stored = np.zeros(6000, dtype=np.uint64)
    n = 0
    hashes = clustered_hashes(rng, 6000)
    for h in hashes:
        k = rng.choice((0, 4, 8, 10, 13))
        dist = np.bitwise_count(stored[:n] ^ np.uint64(h & MASK))
        within = np.flatnonzero(dist <= k)
        expected = None
        if len(within):
            j = int(within[np.argmin(dist[within])])  # first stored among the closest
            expected = (f"id{j}", int(dist[j]))
        assert index.query(h, k) == expected
        if rng.random() < 0.8:
            index.add(f"id{n}", h)
            stored[n] = h & MASK
            n += 1
    assert len(index) == n


def test_edge_values() -> None:
    index = MemoryNearIndex()
    for key, h in (("zero", 0), ("minus1", -1), ("min", MIN64), ("max", MAX64)):
        index.add(key, h)
    assert index.query(0, 0) == ("zero", 0)
    assert index.query(-1, 0) == ("minus1", 0)
    assert index.query((1 << 64) - 1, 0) == ("minus1", 0)  # unsigned spelling of -1
    assert index.query(MIN64, 0) == ("min", 0)
    assert index.query(MAX64, 0) == ("max", 0)
    assert index.query(1, 1) == ("zero", 1)
    assert index.query(MIN64 | 1, 1) == ("min", 1)  # min is 0x8000..., one bit from 0: "min" is closer
    assert index.query(0x00FF00FF00FF00FF, 10) is None
    assert index.query(123, -1) is None
    index.add("numpy", np.int64(-5))
    assert index.query(np.uint64((1 << 64) - 5), 0) == ("numpy", 0)
    with pytest.raises(ValueError):
        index.add("big", 1 << 64)
    with pytest.raises(TypeError):
        index.add("float", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        index.query(MIN64 - 1, 3)


def test_ties_go_to_the_first_added_and_keys_are_idempotent() -> None:
    index = MemoryNearIndex()
    index.add_many([("a", 0b01), ("b", 0b10), ("a", 0b11)])
    assert len(index) == 2
    assert index.query(0b00, 3) == ("a", 1)
    assert index.query(0b11, 0) is None  # the second hash for "a" was ignored


def test_default_distance_is_sane() -> None:
    assert 0 < DEFAULT_MAX_DISTANCE < 32


# -- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_persists_and_matches_brute_force(tmp_path: Path) -> None:
    rng = random.Random(7)
    hashes = clustered_hashes(rng, 5000)
    items = [(f"rec-{i}", h) for i, h in enumerate(hashes)]
    path = tmp_path / "near.sqlite"
    index = SqliteNearIndex(path, bands=4)
    assert isinstance(index, NearIndex)
    index.add_many(items[:4000])
    for key, h in items[4000:4100]:
        index.add(key, h)
    index.add_many(items[:10])  # idempotent
    assert len(index) == 4100
    qs = queries(rng, hashes, 300)
    answers = [index.query(q, k) for q in qs for k in (4, 10)]
    assert answers == [brute(items[:4100], q, k) for q in qs for k in (4, 10)]
    index.close()

    reopened = SqliteNearIndex(path, bands=4)
    assert len(reopened) == 4100
    assert [reopened.query(q, k) for q in qs for k in (4, 10)] == answers
    reopened.close()
    other_bands = SqliteNearIndex(path, bands=3)  # bands are a runtime choice, not stored
    assert [other_bands.query(q, k) for q in qs for k in (4, 10)] == answers
    other_bands.close()


def test_sqlite_edge_values_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "near.sqlite"
    index = SqliteNearIndex(path)
    index.add_many([("zero", 0), ("minus1", -1), ("min", MIN64), ("max", MAX64)])
    index.close()
    index = SqliteNearIndex(path)
    assert [index.query(h, 0) for h in (0, -1, MIN64, MAX64)] == [
        ("zero", 0),
        ("minus1", 0),
        ("min", 0),
        ("max", 0),
    ]
    index.close()


def _add_in_child(path: str, start: int) -> None:
    index = SqliteNearIndex(Path(path))
    index.add_many((f"child-{i}", i * 0x0101010101) for i in range(start, start + 500))
    index.close()


@pytest.mark.e2e
def test_sqlite_sees_another_process_commits(tmp_path: Path) -> None:
    path = tmp_path / "near.sqlite"
    index = SqliteNearIndex(path)
    index.add("parent", -12345)
    assert index.query(7 * 0x0101010101, 0) is None
    proc = multiprocessing.get_context("spawn").Process(target=_add_in_child, args=(str(path), 1))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert index.query(7 * 0x0101010101, 0) == ("child-7", 0)
    assert len(index) == 501
    index.add("parent-2", 99)
    assert index.query(99, 0) == ("parent-2", 0)
    index.close()


# -- real images ----------------------------------------------------------------------------------


def _picture(seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(320), rng.randrange(240)
        box = (x, y, x + rng.randrange(20, 160), y + rng.randrange(20, 120))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_real_images_resized_and_jpeg_copies_found(tmp_path: Path) -> None:
    original = _picture(1)
    index = SqliteNearIndex(tmp_path / "near.sqlite")
    facts = probe_image(_encode(original, "PNG"))
    assert facts.phash is not None
    index.add("original", facts.phash)
    for seed in (2, 3, 4):
        other = probe_image(_encode(_picture(seed), "PNG")).phash
        assert other is not None
        assert index.query(other, DEFAULT_MAX_DISTANCE) is None
        index.add(f"other-{seed}", other)
    resized = probe_image(_encode(original.resize((160, 120), Image.Resampling.BILINEAR), "PNG")).phash
    jpeg = probe_image(_encode(original, "JPEG", quality=70)).phash
    assert resized is not None and jpeg is not None
    hit = index.query(resized, DEFAULT_MAX_DISTANCE)
    assert hit is not None and hit[0] == "original"
    hit = index.query(jpeg, DEFAULT_MAX_DISTANCE)
    assert hit is not None and hit[0] == "original"
    index.close()


def test_sqlite_looks_for_other_connections_commits_at_most_every_fresh_seconds(tmp_path: Path) -> None:
    path = tmp_path / "near.sqlite"
    reader = SqliteNearIndex(path, fresh_seconds=0.3)
    writer = SqliteNearIndex(path)
    assert reader.query(42, 0) is None  # looked now
    writer.add("other", 42)
    assert reader.query(42, 0) is None  # not looked again yet
    reader.add("own", 7)
    assert reader.query(7, 0) == ("own", 0)  # its own adds at once (and everything committed before)
    assert reader.query(42, 0) == ("other", 0)
    writer.add("later", 99)
    time.sleep(0.35)
    assert reader.query(99, 0) == ("later", 0)
    reader.close()
    writer.close()
