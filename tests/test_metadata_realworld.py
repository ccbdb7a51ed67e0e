"""Every file of the shared real-world corpus: every expected field, negatives find nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.metadata import extract_metadata


def corpus_dir() -> Path | None:
    env = os.environ.get("IMAGECRAWL_REALWORLD_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "realworld")
    candidates.append(Path(__file__).resolve().parent / "fixtures" / "realworld")  # the small files only
    for cand in candidates:
        if (cand / "images" / "MANIFEST.json").is_file():
            return cand / "images"
        if (cand / "MANIFEST.json").is_file():
            return cand
    return None


CORPUS = corpus_dir()
MANIFEST: list[dict[str, Any]] = (
    json.loads((CORPUS / "MANIFEST.json").read_text(encoding="utf-8")) if CORPUS is not None else []
)
FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "cfg_scale", "model", "width", "height")


def same(got: Any, want: Any) -> bool:
    """The corpus comparison rules: strings after strip(), ints exactly, other numbers numerically."""
    if isinstance(got, str) or isinstance(want, str):
        return isinstance(got, str) and isinstance(want, str) and got.strip() == want.strip()
    if got is None or want is None:
        return got is want
    if isinstance(got, bool) or isinstance(want, bool):
        return False
    if isinstance(got, int) and isinstance(want, int):
        return got == want
    return float(got) == float(want)


def _skip_if_absent() -> None:
    if CORPUS is None:
        pytest.skip("real-world corpus not found: set IMAGECRAWL_REALWORLD_DIR or place it at ../shared/realworld")


ENTRIES: list[dict[str, Any] | None] = list(MANIFEST) or [None]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["file"] if e else "corpus-missing")
def test_realworld_file(entry: dict[str, Any] | None) -> None:
    _skip_if_absent()
    assert entry is not None and CORPUS is not None
    data = (CORPUS / entry["file"]).read_bytes()
    meta = extract_metadata(data, filename=entry["file"])
    expected = entry.get("expected") or {}
    if entry.get("actual_format") not in (None, "EMPTY"):
        assert meta.image_format == entry["actual_format"]
    if not expected:
        assert not meta.found(), f"negative sample yielded {meta.metadata_source}: {meta.prompt!r}"
        assert meta.prompt is None and meta.metadata_source is None
        return
    assert meta.found() and meta.error is None
    problems = []
    for field in FIELDS:
        if field not in expected:
            continue
        want = expected[field]
        got = getattr(meta, field)
        alternatives = [alt["value"] for alt in entry.get("alternatives", {}).get(field, [])]
        if not (same(got, want) or any(same(got, alt) for alt in alternatives)):
            problems.append(f"{field}: expected {want!r} (or {alternatives!r}), got {got!r}")
    assert not problems, "\n".join(problems)
    json.dumps(meta.to_dict())  # params stay JSON-serialisable


#: the whole corpus (38 files), not the small-file subset kept in tests/fixtures/realworld
FULL = CORPUS is not None and (CORPUS / "sd-metadata__forge.png").is_file()


def _skip_unless_full() -> None:
    _skip_if_absent()
    if not FULL:
        pytest.skip("needs the full real-world corpus (IMAGECRAWL_REALWORLD_DIR or ../shared/realworld)")


def test_corpus_is_complete() -> None:
    _skip_if_absent()
    assert CORPUS is not None
    assert all((CORPUS / e["file"]).is_file() for e in MANIFEST)
    if FULL:
        assert len(MANIFEST) == 38
        assert sum(1 for e in MANIFEST if not e.get("expected")) == 6
    else:
        assert len(MANIFEST) == 13


def test_duplicates_not_reported_twice() -> None:
    """Forge writes the infotext in iTXt *and* the alpha channel: the chunk wins, once."""
    _skip_unless_full()
    assert CORPUS is not None
    meta = extract_metadata((CORPUS / "sd-metadata__forge.png").read_bytes())
    assert meta.metadata_source == "png:parameters"
    novel = extract_metadata((CORPUS / "sd-metadata__novelai-curated.png").read_bytes())
    assert novel.metadata_source == "png:Comment" and novel.generator == "novelai"


def test_tensorart_real_seed_from_graph() -> None:
    _skip_unless_full()
    assert CORPUS is not None
    meta = extract_metadata((CORPUS / "sd-metadata__tensorart.png").read_bytes())
    assert meta.seed == 3036459311
    assert meta.params.get("seed_placeholder") == -1


def _png_without(data: bytes, drop: set[str]) -> bytes:
    """The same PNG with the text chunks whose keyword is in ``drop`` removed."""
    import struct

    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        key = data[pos + 8 : pos + 8 + min(length, 80)].split(b"\0", 1)[0].decode("latin-1")
        if not (ctype in (b"tEXt", b"zTXt", b"iTXt") and key in drop):
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


@pytest.mark.parametrize(
    ("name", "drop", "source"),
    [
        ("sd-metadata__invokeai.png", {"invokeai_metadata"}, "png:invokeai_graph"),
        ("sd-metadata__comfyui.png", {"prompt"}, "png:comfyui"),  # UI workflow only
        ("sd-metadata__forge.png", {"parameters"}, "stealth-alpha"),  # only the alpha copy left
        ("sd-metadata__novelai-curated.png", {"Comment", "Description"}, "stealth-alpha"),
    ],
)
def test_fallback_carriers(name: str, drop: set[str], source: str) -> None:
    """Remove the primary carrier: the secondary copy must give the same values."""
    _skip_unless_full()
    assert CORPUS is not None
    entry = next(e for e in MANIFEST if e["file"] == name)
    meta = extract_metadata(_png_without((CORPUS / name).read_bytes(), drop))
    assert meta.metadata_source == source
    for field in ("prompt", "negative_prompt", "seed", "steps", "sampler", "cfg_scale", "width", "height"):
        want = entry["expected"].get(field)
        alternatives = [a["value"] for a in entry.get("alternatives", {}).get(field, [])]
        if want is not None and not (name.endswith("comfyui.png") and field == "prompt"):
            got = getattr(meta, field)
            assert same(got, want) or any(same(got, a) for a in alternatives), (field, got, want)
