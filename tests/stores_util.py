"""Crawled stores shared by the inspect and downstream tests: one civitai crawl of the sandbox into a
local folder and one into moto's S3 server per test session (crawls are the slow part)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import CrawlResult, MotoS3, run_crawl

_CACHE: dict[str, Any] = {}


@dataclass
class Crawled:
    store: str
    result: CrawlResult
    env: dict[str, str]


def local_store(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any) -> Crawled:
    if "local" not in _CACHE:
        store = tmp_path_factory.mktemp("shared-local") / "store"
        api = sandbox_site.base_url.rstrip("/")
        result = run_crawl("civitai", store=store, args={"api_url": api, "limit": 20, "nsfw": "X"})
        _CACHE["local"] = Crawled(str(store), result, {})
    crawled: Crawled = _CACHE["local"]
    return crawled


def s3_store(tmp_path_factory: pytest.TempPathFactory, sandbox_site: Any, moto_s3: MotoS3) -> Crawled:
    if "s3" not in _CACHE:
        bucket = moto_s3.create_bucket("shared-observe")
        store = f"s3://{bucket}/datasets/v1"
        state = tmp_path_factory.mktemp("shared-s3-state")
        api = sandbox_site.base_url.rstrip("/")
        result = run_crawl(
            "civitai",
            store=store,
            args={"api_url": api, "limit": 20, "nsfw": "X"},
            settings={**moto_s3.settings, "IMAGECRAWL_STATE_DIR": str(state)},
        )
        _CACHE["s3"] = Crawled(store, result, moto_s3.env)
    crawled: Crawled = _CACHE["s3"]
    return crawled


def rows_of(path: Path | str) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(str(path)).num_rows)
