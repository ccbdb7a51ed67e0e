"""Hostile input: mutated / truncated real files and hand-made bombs never raise, stay fast and small."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imagecrawl.metadata import ERROR_KINDS, ImageMetadata, Limits, extract_metadata
from tests.test_metadata_realworld import CORPUS, FULL

# per-call bound; the machine is shared (CI runs beside other jobs), so it can be relaxed by env var
MAX_SECONDS = float(os.environ.get("IMAGECRAWL_FUZZ_MAX_SECONDS", "2.0"))
MAX_PEAK_BYTES = 200 * 1024 * 1024


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _png(width: int, height: int, color_type: int = 6, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _synthetic_seeds() -> list[bytes]:
    """Used on top of (or instead of) the real corpus."""
    from tests.test_metadata_parsers import (
        INFOTEXT,
        jpeg_bytes,
        png_bytes,
        save_png,
        stealth_image,
        tiff,
        webp_bytes,
    )

    uc = b"UNICODE\0" + INFOTEXT.encode("utf-16-be")
    return [
        png_bytes([("zTXt", "parameters", INFOTEXT)]),
        jpeg_bytes(tiff([], [(0x9286, 7, uc)])),
        webp_bytes(tiff([], [(0x9286, 7, uc)])),
        save_png(stealth_image(INFOTEXT, size=(96, 64), compressed=True)),
    ]


def _seed_files() -> list[bytes]:
    seeds = _synthetic_seeds()
    if CORPUS is not None:
        for path in sorted(CORPUS.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and path.stat().st_size > 0:
                seeds.append(path.read_bytes())
    return seeds


SEEDS = _seed_files()


class _UnexpectedFailures(logging.Handler):
    """Collects the catch-all's DEBUG records (they carry exc_info): each one is a parser bug."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def run_bounded(data: bytes, **kwargs: object) -> ImageMetadata:
    """extract_metadata under time and memory bounds; asserts the result shape and no internal crash.

    Timed on a plain call (tracemalloc slows allocation-heavy code several times), then measured
    for peak memory on a second, traced call.
    """
    logger = logging.getLogger("imagecrawl.metadata")
    handler = _UnexpectedFailures()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        t0 = time.perf_counter()
        meta = extract_metadata(data, **kwargs)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        tracemalloc.start()
        try:
            extract_metadata(data, **kwargs)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert not handler.records, f"internal failure: {handler.records[0].exc_info!r}"
    assert isinstance(meta, ImageMetadata)
    assert meta.error is None or meta.error in ERROR_KINDS
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f}s"
    assert peak < MAX_PEAK_BYTES, f"peak memory {peak / 1e6:.0f} MB"
    json.dumps(meta.to_dict())
    return meta


FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


# flip positions: mostly in the first 8 KiB (headers, text chunks, EXIF), sometimes anywhere
POSITIONS = st.one_of(st.integers(0, 8191), st.floats(0, 1))


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.tuples(POSITIONS, st.integers(0, 255)), max_size=40))
def test_byte_flips(index: int, flips: list[tuple[int | float, int]]) -> None:
    data = bytearray(SEEDS[index])
    for where, value in flips:
        pos = int(where * len(data)) if isinstance(where, float) else where
        data[min(pos, len(data) - 1)] = value
    run_bounded(bytes(data))


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.floats(0, 1))
def test_truncation(index: int, where: float) -> None:
    data = SEEDS[index]
    run_bounded(data[: int(where * len(data))])


def _length_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, byte order) of the container's length fields."""
    out: list[tuple[int, int, str]] = []
    if data.startswith(b"\x89PNG"):
        pos = 8
        while pos + 8 <= len(data) and len(out) < 200:
            out.append((pos, 4, ">"))
            (length,) = struct.unpack_from(">I", data, pos)
            pos += 12 + length
    elif data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9) and len(out) < 200:
            out.append((pos + 2, 2, ">"))
            pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
        exif = data.find(b"Exif\0\0")
        if exif != -1:  # IFD entry counts and value counts
            for k in range(exif + 6, min(len(data) - 4, exif + 600), 2):
                out.append((k, 2, "<"))
    elif data[:4] == b"RIFF":
        pos = 12
        while pos + 8 <= len(data) and len(out) < 200:
            out.append((pos + 4, 4, "<"))
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
            pos += pos & 1
    return out or [(0, 1, ">")]


@FUZZ
@given(
    st.sampled_from(range(len(SEEDS))),
    st.integers(0, 10_000),
    st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 50_000_000, -1, +1, 2]),
)
def test_length_field_corruption(index: int, pick: int, value: int) -> None:
    data = bytearray(SEEDS[index])
    fields = _length_fields(bytes(data))
    off, width, bo = fields[pick % len(fields)]
    old = int.from_bytes(data[off : off + width], "big" if bo == ">" else "little")
    new = old + value if value in (-1, 1, 2) else value  # small off-by-one or inflated length
    new &= (1 << (8 * width)) - 1
    data[off : off + width] = new.to_bytes(width, "big" if bo == ">" else "little")
    run_bounded(bytes(data))


# ------------------------------------------------------------------------------------ explicit cases
@pytest.fixture(scope="module")
def zlib_bomb() -> bytes:
    """A valid zlib stream of 1 GiB of zeros (about 1 MB): one full-flushed 1 MiB block repeated."""
    comp = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)  # zlib header + block
    again = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)  # the same block, byte-aligned
    adler = 1
    for _ in range(1024):
        adler = zlib.adler32(block, adler)
    return first + again * 1023 + b"\x03\x00" + struct.pack(">I", adler)  # empty final block + checksum


def test_fifty_megabyte_text_chunk() -> None:
    data = _png(8, 8, extra=_chunk(b"tEXt", b"parameters\0" + b"a" * 50_000_000))
    meta = run_bounded(data)
    assert not meta.found() and meta.error == "too_large"


@pytest.mark.parametrize("kind", ["zTXt", "iTXt"])
def test_zip_bomb_text_chunk(zlib_bomb: bytes, kind: str) -> None:
    body = b"parameters\0\0" + zlib_bomb if kind == "zTXt" else b"parameters\0\x01\0\0\0" + zlib_bomb
    meta = run_bounded(_png(8, 8, extra=_chunk(kind.encode(), body)))
    assert not meta.found() and meta.error == "too_large"


def test_zip_bomb_as_image_data(zlib_bomb: bytes) -> None:
    meta = run_bounded(_png(30000, 30000, idat=zlib_bomb))
    assert not meta.found()


def test_huge_declared_dimensions_with_alpha() -> None:
    meta = run_bounded(_png(30000, 30000, color_type=6))
    assert not meta.found() and meta.image_format == "PNG"
    meta = run_bounded(_png(0x7FFFFFFF, 0x7FFFFFFF, color_type=6))
    assert not meta.found()


def test_empty_input() -> None:
    assert run_bounded(b"").error == "empty"


def test_jpeg_named_png() -> None:
    im = Image.new("RGB", (8, 8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", comment=b"Steps: not really")
    meta = run_bounded(buf.getvalue(), filename="looks_like.png")
    assert meta.image_format == "JPEG" and not meta.found()


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 100_000 + "]" * 100_000,  # deep JSON
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
        "Steps: " + "x, " * 200_000,  # huge params line
        'Lora hashes: "' + "a: b, " * 100_000,  # unterminated quote
        'Steps: 1, Lora hashes: "' + "a: b, " * 100_000,
        "Steps: 1, " + "k: v, " * 200_000,  # one key repeated: iteration cap, not key cap
        "a\n" * 300_000 + "Steps: 1",  # many lines
        "a" + " " * 30_000 + "b",  # whitespace run: was quadratic in the params-line counter
        "Steps: 1, Seed: " + "1" * 20_000 + "x, Size: " + "9" * 5000 + "x1",  # huge numbers
        "{"
        + ", ".join(
            f'"{i}": {{"class_type": "KSampler", "inputs": {{"positive": ["{i + 1}", 0]}}}}' for i in range(3000)
        )
        + "}",  # long sampler chain
    ],
)
def test_pathological_payloads(payload: str) -> None:
    data = _png(8, 8, color_type=2, extra=_chunk(b"zTXt", b"parameters\0\0" + zlib.compress(payload.encode())))
    run_bounded(data)
    data = _png(8, 8, color_type=2, extra=_chunk(b"zTXt", b"prompt\0\0" + zlib.compress(payload.encode())))
    run_bounded(data)


def test_wide_comfy_graph_stays_linear() -> None:
    """2000 samplers sharing a 2900-node conditioning chain: root detection must not be quadratic."""
    graph: dict[str, object] = {"c0": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}}}
    for i in range(1, 2900):
        graph[f"c{i}"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": [f"c{i - 1}", 0]}}
    for i in range(2000):
        graph[f"s{i}"] = {
            "class_type": "KSampler",
            "inputs": {"seed": i, "steps": 1, "positive": ["c2899", 0], "negative": ["c0", 0]},
        }
    payload = json.dumps(graph).encode()
    data = _png(8, 8, color_type=2, extra=_chunk(b"zTXt", b"prompt\0\0" + zlib.compress(payload)))
    meta = run_bounded(data, limits=Limits(max_decompressed_bytes=16 << 20))
    assert meta.seed == 0 and meta.negative_prompt == "x"  # the positive chain is deeper than max_graph_depth
    deep = run_bounded(data, limits=Limits(max_decompressed_bytes=16 << 20, max_graph_depth=4000))
    assert deep.seed == 0 and deep.error is None  # depth is capped below Python's recursion limit


def test_shared_concat_dag_is_not_exponential() -> None:
    """60 concatenation nodes each joining the previous one twice: 2**60 paths, must stay bounded."""
    graph: dict[str, object] = {"s0": {"class_type": "PrimitiveString", "inputs": {"value": "ab"}}}
    for i in range(1, 60):
        prev = [f"s{i - 1}", 0]
        graph[f"s{i}"] = {"class_type": "StringConcatenate", "inputs": {"string_a": prev, "string_b": prev}}
    graph["enc"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["s59", 0], "clip": ["x", 1]}}
    graph["k"] = {
        "class_type": "KSampler",
        "inputs": {"seed": 1, "steps": 2, "positive": ["enc", 0], "negative": ["enc", 0]},
    }
    payload = json.dumps(graph).encode()
    meta = run_bounded(_png(8, 8, color_type=2, extra=_chunk(b"tEXt", b"prompt\0" + payload)))
    assert meta.seed == 1 and (meta.prompt is None or len(meta.prompt) <= 200_000)


def test_invokeai_graph_shared_sources_bounded() -> None:
    nodes: dict[str, object] = {"c0": {"type": "compel", "prompt": "x"}}
    edges = []
    for i in range(1, 60):
        nodes[f"c{i}"] = {"type": "collect"}
        for field in ("item", "collection"):
            edges.append({"source": {"node_id": f"c{i - 1}", "field": "collection"},
                          "destination": {"node_id": f"c{i}", "field": field}})  # fmt: skip
    nodes["d"] = {"type": "denoise_latents", "steps": 3}
    edges.append({"source": {"node_id": "c59", "field": "collection"},
                  "destination": {"node_id": "d", "field": "positive_conditioning"}})  # fmt: skip
    payload = json.dumps({"nodes": nodes, "edges": edges}).encode()
    meta = run_bounded(_png(8, 8, color_type=2, extra=_chunk(b"tEXt", b"invokeai_graph\0" + payload)))
    assert meta.steps == 3


@pytest.mark.parametrize(
    "xmp",
    [
        "<exif:UserComment>" + "<rdf:li>" * 50_000 + "</exif:UserComment>",  # was quadratic with a regex
        "<exif:UserComment>" + "<a" * 100_000 + "</exif:UserComment>",
        "<exif:UserCommentX" * 60_000 + ">",
        'exif:UserComment="' * 50_000,
    ],
)
def test_hostile_xmp(xmp: str) -> None:
    body = b"XML:com.adobe.xmp\0\0\0\0\0" + xmp.encode()
    run_bounded(_png(8, 8, color_type=2, extra=_chunk(b"iTXt", body)))


def test_exif_ifd_loop_and_bad_offsets() -> None:
    from tests.test_metadata_parsers import jpeg_bytes

    # IFD0 whose Exif pointer points back to IFD0, and a value offset far out of range
    tiff = b"II*\0\x08\0\0\0" + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x8769, 4, 1, 8)
    tiff += struct.pack("<HHII", 0x9286, 7, 5000, 0xFFFFFF00)
    tiff += b"\0\0\0\0"
    run_bounded(jpeg_bytes(tiff))


def _all_mutators() -> list[Callable[[bytes], bytes]]:
    return [lambda d: d[:-1], lambda d: d + b"\0" * 100, lambda d: d[: len(d) // 2] + d[len(d) // 2 + 7 :]]


@pytest.mark.parametrize("mutate", _all_mutators())
def test_every_seed_mutated_deterministically(mutate: Callable[[bytes], bytes]) -> None:
    for seed in SEEDS:
        run_bounded(mutate(seed))


def test_corpus_path_exists_or_skipped() -> None:
    if CORPUS is None:
        pytest.skip("real-world corpus not found; fuzzing synthetic seeds only")
    assert isinstance(CORPUS, Path) and len(SEEDS) > (30 if FULL else 12)


# ------------------------------------------------------------------- structure-aware payload fuzzing
_KEYS = st.sampled_from(
    [
        "prompt", "workflow", "class_type", "inputs", "positive", "negative", "seed", "noise_seed", "steps",
        "cfg", "text", "text_g", "conditioning_1", "model", "ckpt_name", "latent_image", "width", "height",
        "nodes", "links", "edges", "Comment", "uc", "v4_prompt", "caption", "base_caption",
        "sui_image_params",
        "extraMetadata", "image", "c", "scale", "sampler", "resolution", "1", "2", "3",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["KSampler", "CLIPTextEncode", "EmptyLatentImage", "ConditioningCombine", "1", "2"]),
)  # fmt: skip
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(st.sampled_from(["1", "2", "3", 1, 2]), st.integers(0, 3)).map(list),  # link-like
        st.dictionaries(_KEYS, children, max_size=6),
    ),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None, database=None)
@given(_JSON)
def test_payload_parsers_never_raise(obj: object) -> None:
    from imagecrawl.metadata.comfyui import parse_comfy, workflow_to_api
    from imagecrawl.metadata.formats import parse_json_payload
    from imagecrawl.metadata.invokeai_graph import parse_invokeai_graph

    parse_json_payload(obj)
    parse_comfy(obj, obj)
    workflow_to_api(obj)
    parse_invokeai_graph(obj)
    text = json.dumps(obj)
    run_bounded(_png(8, 8, color_type=2, extra=_chunk(b"tEXt", b"parameters\0" + text.encode())))
    run_bounded(_png(8, 8, color_type=2, extra=_chunk(b"tEXt", b"prompt\0" + text.encode())))
