"""Schema v3's analytics columns: one safety scale (``nsfw_level``), the source's own time
(``created_at``) and the shared generation parameters, typed; and a crawl of the sandbox's Civitai
stores them as its catalog says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagecrawl.normalise import created_at, nsfw_level, shared_params
from imagecrawl.schema import ADDED_IN, SCHEMA, SCHEMA_VERSION
from tests.sandbox.catalog import build_catalog


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("None", "none"),
        ("Soft", "soft"),
        ("Mature", "mature"),
        ("X", "x"),
        ("true", "mature"),
        ("false", "none"),
        (True, "mature"),
        ("PG-13", "soft"),
        ("1", "none"),
        ("2", "soft"),
        (4, "mature"),
        (8, "x"),
        (16, "x"),
        (6, "mature"),  # a mask with R and PG-13: the highest
        (None, "unknown"),
        ("", "unknown"),
        ("spicy", "unknown"),
        (0, "unknown"),
        (1 << 20, "unknown"),
    ],
)
def test_nsfw_level(raw: Any, level: str) -> None:
    assert nsfw_level(raw) == level


def test_created_at() -> None:
    assert created_at("2023-04-11T15:33:12.500Z") == datetime(2023, 4, 11, 15, 33, 12, 500000, tzinfo=UTC)
    assert created_at("2023-04-11T17:33:12+02:00") == datetime(2023, 4, 11, 15, 33, 12, tzinfo=UTC)
    assert created_at("2023-04-11 15:33:12") == datetime(2023, 4, 11, 15, 33, 12, tzinfo=UTC)
    for bad in (None, "", "yesterday", 1681227192, "0001-01-01T00:00:00Z"):
        assert created_at(bad) is None


def test_shared_params_from_every_generator_name() -> None:
    a1111 = {"Clip skip": "2", "Denoising strength": "0.45", "Schedule type": "Karras"}
    assert shared_params(a1111) == {"clip_skip": 2, "denoising_strength": 0.45, "scheduler": "Karras"}
    comfy = {"denoise": 1.0, "scheduler": "normal"}
    assert shared_params(comfy) == {"denoising_strength": 1.0, "scheduler": "normal"}
    assert shared_params({"clipSkip": 1}) == {"clip_skip": 1}
    # values that do not fit are left to params
    assert shared_params({"Clip skip": "-1", "denoise": 3.5, "scheduler": ""}) == {}
    assert shared_params({"Clip skip": True, "denoise": float("nan")}) == {}


def test_schema_v3_is_additive() -> None:
    assert SCHEMA_VERSION == "3"
    added = ADDED_IN["3"]
    names = SCHEMA.names
    assert names[-1] == "image" and all(n in names for n in added)
    assert all(SCHEMA.field(n).nullable for n in added)
    assert str(SCHEMA.field("created_at").type) == "timestamp[us, tz=UTC]"


def test_a_civitai_crawl_stores_the_catalogs_levels_and_times(
    tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any
) -> None:
    from tests.conftest import read_store
    from tests.stores_util import local_store

    store = local_store(tmp_path_factory, sandbox_site).store
    rows = read_store(store, columns=["source_id", "nsfw", "nsfw_level", "created_at"]).to_pylist()
    catalog = {e.id: e for e in build_catalog(40, 7).entries("civitai")}  # the session sandbox_site
    assert len(rows) > 5
    levels = set()
    for row in rows:
        entry = catalog[row["source_id"]]
        assert row["nsfw_level"] == nsfw_level(entry.nsfw_level) != "unknown"
        assert row["created_at"] == created_at(entry.created_at) is not None
        levels.add(row["nsfw_level"])
    assert len(levels) > 1  # the crawl asked for every level (nsfw=X)
