"""The sandbox catalog: determinism, proportions, infotext and rendered files (no server)."""

from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image

from tests.sandbox.catalog import SOURCES, build_catalog, render_image


def _infotext_in_file(data: bytes) -> str | None:
    img = Image.open(io.BytesIO(data))
    if img.format == "PNG":
        value = img.info.get("parameters")
        return value if isinstance(value, str) else None
    comment = img.getexif().get_ifd(0x8769).get(0x9286)
    if comment is None:
        return None
    assert isinstance(comment, bytes)
    assert comment.startswith(b"UNICODE\0")
    return comment[8:].decode("utf-16-be")


def test_two_builds_are_equal() -> None:
    a, b = build_catalog(80, seed=3), build_catalog(80, seed=3)
    for source in SOURCES:
        assert a.entries(source) == b.entries(source)
    assert build_catalog(80, seed=4).entries("civitai") != a.entries("civitai")


def test_smaller_catalog_is_a_prefix() -> None:
    small, big = build_catalog(30), build_catalog(90)
    for source in SOURCES:
        assert big.entries(source)[:30] == small.entries(source)


def test_render_is_deterministic() -> None:
    cat = build_catalog(20, seed=1)
    other = build_catalog(20, seed=1)
    for source in SOURCES:
        for entry in cat.entries(source)[:6]:
            assert render_image(cat, entry) == render_image(cat, entry) == render_image(other, entry)


def test_entries_are_well_formed() -> None:
    cat = build_catalog(200)
    for source in SOURCES:
        entries = cat.entries(source)
        assert len(entries) == 200
        assert [e.index for e in entries] == list(range(200))
        assert len({e.id for e in entries}) == 200
        assert len({e.image_path for e in entries}) == 200
        for e in entries:
            assert e.source == source
            assert cat.get(source, e.id) is e
            assert 48 <= e.width <= 256 and 48 <= e.height <= 256
            assert e.image_format in ("PNG", "JPEG", "WEBP")
            assert e.nsfw_level in ("None", "Soft", "Mature", "X")
            assert e.image_path == f"/images/{source}/{e.id}.{e.ext}"
            assert e.created_at.endswith("Z")
            assert e.same_bytes_as is None or e.copy_of is None
            if source == "civitai":
                assert e.id.isdigit()
            if source == "lexica":
                assert e.show_meta
        assert entries == sorted(entries, key=lambda e: e.created_at, reverse=True)


def test_proportions() -> None:
    cat = build_catalog(200)
    entries = [e for s in SOURCES for e in cat.entries(s)]
    n = len(entries)
    same = sum(e.same_bytes_as is not None for e in entries) / n
    copies = sum(e.copy_of is not None for e in entries) / n
    no_embed = sum(not e.embed_metadata for e in entries) / n
    assert 0.04 <= same <= 0.12
    assert 0.03 <= copies <= 0.09
    assert 0.15 <= no_embed <= 0.35
    site = [e for e in entries if e.source != "lexica"]
    hidden = [e for e in site if not e.show_meta]
    assert 0.12 <= len(hidden) / len(site) <= 0.28
    assert sum(e.embed_metadata for e in hidden) > len(hidden) / 2
    assert any(not e.embed_metadata for e in hidden)  # no prompt anywhere
    formats = {e.image_format for e in entries}
    assert formats == {"PNG", "JPEG", "WEBP"}
    assert sum(e.image_format == "PNG" for e in entries) > n / 2
    assert any("\n" in e.prompt for e in entries)
    assert any(not e.prompt.isascii() for e in entries)
    assert any(e.negative_prompt is None for e in entries)


def test_duplicates_point_backwards_to_originals() -> None:
    cat = build_catalog(200)
    for source in SOURCES:
        for e in cat.entries(source):
            ref = e.same_bytes_as or e.copy_of
            if ref is None:
                continue
            orig = cat.get(source, ref)
            assert orig.index < e.index
            assert orig.same_bytes_as is None and orig.copy_of is None
            assert orig.prompt == e.prompt and orig.seed == e.seed
            if e.same_bytes_as:
                assert (e.width, e.height, e.image_format) == (orig.width, orig.height, orig.image_format)
                assert e.infotext() == orig.infotext()
            else:
                assert not e.embed_metadata


def test_infotext_format() -> None:
    e = build_catalog(5).entries("civitai")[0]
    e = dataclasses.replace(
        e,
        prompt="a cat, (masterpiece:1.2)",
        negative_prompt="blurry",
        steps=20,
        sampler="DPM++ 2M Karras",
        cfg_scale=7.0,
        seed=12345,
        width=512,
        height=768,
        model="sd_xl_base_1.0",
    )
    lines = e.infotext().split("\n")
    assert lines[0] == "a cat, (masterpiece:1.2)"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 12345, Size: 512x768, ")
    assert lines[2].endswith(", Model: sd_xl_base_1.0, Version: v1.10.1")
    assert "Negative prompt" not in dataclasses.replace(e, negative_prompt=None).infotext()


@pytest.mark.parametrize("source", SOURCES)
def test_rendered_files_match_entries(source: str) -> None:
    cat = build_catalog(60)
    for e in cat.entries(source):
        data = render_image(cat, e)
        img = Image.open(io.BytesIO(data))
        assert img.format == e.image_format
        assert img.size == (e.width, e.height)
        text = _infotext_in_file(data)
        if e.embed_metadata:
            assert text == e.infotext()
        else:
            assert text is None
        if e.same_bytes_as:
            assert data == render_image(cat, cat.get(source, e.same_bytes_as))
        if e.copy_of:
            assert data != render_image(cat, cat.get(source, e.copy_of))


def test_distinct_pictures_differ_and_copies_look_alike() -> None:
    """A crude average-hash check: originals are far apart, copies are close to their original."""
    cat = build_catalog(60)

    def ahash(data: bytes) -> int:
        img = Image.open(io.BytesIO(data)).convert("L").resize((8, 8), Image.Resampling.BOX)
        px = list(img.tobytes())
        mean = sum(px) / len(px)
        return sum(1 << i for i, p in enumerate(px) if p > mean)

    for source in SOURCES:
        entries = cat.entries(source)
        originals = [e for e in entries if not e.same_bytes_as and not e.copy_of]
        hashes = {e.id: ahash(render_image(cat, e)) for e in originals}
        values = list(hashes.values())
        close = sum(1 for i in range(len(values)) for j in range(i) if bin(values[i] ^ values[j]).count("1") <= 4)
        assert close <= 2, f"{close} near-identical original pairs in {source}"
        for e in entries:
            if e.copy_of:
                d = bin(ahash(render_image(cat, e)) ^ hashes[e.copy_of]).count("1")
                assert d <= 10


def test_lexica_search() -> None:
    cat = build_catalog(200)
    lexica = cat.entries("lexica")
    for word in ("portrait", "landscape", "cat"):
        hits = cat.lexica_search(word, limit=1000)
        assert len(hits) >= 20, word
        assert all(word in e.prompt.lower() for e in hits)
    both = cat.lexica_search("Cat  OIL", limit=1000)
    assert both == [e for e in lexica if "cat" in e.prompt.lower() and "oil" in e.prompt.lower()]
    assert len(cat.lexica_search("portrait")) == 50
    assert cat.lexica_search("") == []
    assert cat.lexica_search("zzzznotaword") == []
