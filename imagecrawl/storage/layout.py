"""Where everything lives in a store (local folder or S3 prefix), and moving stores of the first layout.
No Scrapy imports.

The store is a dataset that folder readers open as it is (``pandas.read_parquet(store)``,
``pyarrow.dataset.dataset(store, partitioning="hive")``, ``datasets.load_dataset("parquet",
data_dir=store)``, ``polars.read_parquet(f"{store}/**/*.parquet")``, DuckDB)::

    <store>/<source>/date=<YYYY-MM-DD>/part-<run>-<seq>.parquet   the data
    <store>/.imagecrawl/state/                                    crawl state of a local store (ledger, outbox, ...)
    <store>/.imagecrawl/reports/<run>.json, .html                  one report per crawl
    <store>/.imagecrawl/staging/                                  local commits in progress (``*.tmp``)
    <store>/.imagecrawl/audit/                                    what ``imagecrawl forget`` removed, and its tombstones
    <store>/.imagecrawl/failures/<run>.jsonl                      the ``urls`` spider's input rows that gave no image
    <store>/.imagecrawl/shards/<source>/date=<day>/part-<run>-<seq>.json   one stats JSON per shard

* ``<source>`` is a plain folder, not ``source=<source>``: ``source`` is a column of every file, and a
  Hive key of the same name makes pyarrow (and so pandas) fail to merge the two. ``date`` is not a
  column, so it stays a Hive key: hive readers add it as a column, others ignore it.
* Everything that is not data sits under ``.imagecrawl/``: pyarrow and pandas skip ``.``-prefixed
  names, ``datasets`` skips hidden folders, and nothing there ends in ``.parquet``.

Stores written by the first layout (``source=<source>/date=...``, ``_state/``, ``_reports/``) are moved
on open (:func:`migrate`): every step is one rename (or, on S3, a copy then a delete), so a migration
that dies half way is finished by the next open, and readers never see a shard twice locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Final, Protocol

logger = logging.getLogger(__name__)

SHARD_SUFFIX: Final = ".parquet"
#: the one folder of a store that is not data
META_DIR: Final = ".imagecrawl"
STATE_DIR: Final = f"{META_DIR}/state"
REPORTS_DIR: Final = f"{META_DIR}/reports"
STAGING_DIR: Final = f"{META_DIR}/staging"
PROBE_DIR: Final = f"{META_DIR}/probe"
#: what ``imagecrawl forget`` keeps in the store: ``forget/<run>.json`` (the audit log) and
#: ``tombstones/<run>.jsonl`` (docs/forget.md)
AUDIT_DIR: Final = f"{META_DIR}/audit"
#: the ``urls`` spider's failure records: ``failures/<run>.jsonl``, one line per input row that gave no image
FAILURES_DIR: Final = f"{META_DIR}/failures"
#: one stats JSON per committed shard: ``shards/<source>/date=<day>/part-<run>-<seq>.json``
SHARD_STATS_DIR: Final = f"{META_DIR}/shards"
#: the local state of S3 stores: one folder per bucket and prefix under the default local store
S3_STATE_ROOT: Final = Path("data") / META_DIR / "s3"

#: the first layout's names
LEGACY_SOURCE_PREFIX: Final = "source="
LEGACY_STATE_DIR: Final = "_state"
LEGACY_REPORTS_DIR: Final = "_reports"
LEGACY_STAGING_DIR: Final = "_staging"
LEGACY_S3_STATE_ROOT: Final = Path("data") / "_state" / "s3"

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def source_folder(source: str) -> str:
    """A source name as a folder name: ``[A-Za-z0-9_.-]``, not starting with ``.`` or ``_`` (which
    readers skip), never empty."""
    name = re.sub("_+", "_", _SAFE.sub("_", source)).strip("_").lstrip("._-")
    return name or "unknown"


def shard_key(source: str, date: str, run_id: str, seq: int) -> str:
    """``<source>/date=<date>/part-<run>-<seq>.parquet``, relative to the store root."""
    return f"{source_folder(source)}/date={date}/part-{run_id}-{seq:05d}{SHARD_SUFFIX}"


def shard_stats_key(key: str) -> str:
    """Where the stats JSON of the shard ``key`` lives: ``.imagecrawl/shards/<key without .parquet>.json``."""
    return f"{SHARD_STATS_DIR}/{key.removesuffix(SHARD_SUFFIX)}.json"


def is_shard_key(key: str) -> bool:
    """A data file: ends in ``.parquet`` and no folder or file on its way starts with ``.`` or ``_``."""
    return key.endswith(SHARD_SUFFIX) and not any(part.startswith((".", "_")) for part in key.split("/"))


def key_source_date(key: str) -> tuple[str, str]:
    """``(source, date)`` of a shard key of either layout (``""`` where the key does not say)."""
    parts = key.split("/")[:-1]
    source = parts[0].removeprefix(LEGACY_SOURCE_PREFIX) if parts else ""
    date = next((p.removeprefix("date=") for p in parts if p.startswith("date=")), "")
    return source, date


def current_key(key: str) -> str:
    """A key of the first layout in the current one (others unchanged): ``source=a/date=d/f`` → ``a/date=d/f``;
    ``_reports/x`` → ``.imagecrawl/reports/x``; ``_state/x`` → ``.imagecrawl/state/x``."""
    if key.startswith(LEGACY_SOURCE_PREFIX):
        return key.removeprefix(LEGACY_SOURCE_PREFIX)
    for old, new in ((LEGACY_REPORTS_DIR, REPORTS_DIR), (LEGACY_STATE_DIR, STATE_DIR)):
        if key.startswith(old + "/"):
            return new + key[len(old) :]
    return key


def is_legacy_key(key: str) -> bool:
    """A key the first layout wrote that :func:`migrate` moves."""
    first = key.split("/", 1)[0]
    if first.startswith(LEGACY_SOURCE_PREFIX):
        return key.endswith(SHARD_SUFFIX)
    return first == LEGACY_REPORTS_DIR or key == f"{LEGACY_STATE_DIR}/watermarks.json"


def local_state_dir(store: str) -> Path:
    """``<store>/.imagecrawl/state``, moved there first from the first layout's ``<store>/_state``."""
    new = Path(store) / STATE_DIR
    migrate_folder(Path(store) / LEGACY_STATE_DIR, new)
    return new


def migrate_folder(old: Path, new: Path) -> bool:
    """Rename ``old`` to ``new`` if ``old`` exists and ``new`` does not (one atomic rename); True if moved."""
    if not old.is_dir() or new.exists():
        return False
    new.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(old, new)
    except FileNotFoundError:  # another process moved it first
        return False
    logger.info("Moved %s to %s (the store layout of this version)", old, new)
    return True


class MovableStore(Protocol):
    url: str

    def list_keys(self, prefix: str = "") -> list[str]: ...
    def move(self, old: str, new: str) -> None: ...


def migrate(store: MovableStore) -> int:
    """Move what the first layout wrote into this layout; returns how many files moved. Idempotent: safe to
    run again after a crash, and by several processes at once (a file another one moved is skipped)."""
    moved = 0
    for key in store.list_keys():
        if not is_legacy_key(key):
            continue
        try:
            store.move(key, current_key(key))
        except FileNotFoundError:
            continue
        moved += 1
    if moved:
        logger.warning(
            "Moved %d files of %s into the current store layout (<source>/date=<day>/ for shards, "
            ".imagecrawl/ for reports and state; docs/downstream.md)",
            moved,
            store.url,
        )
    return moved


def remove_empty_dirs(root: Path, names: list[str]) -> None:
    """Remove the first layout's folders under ``root`` once empty (deepest first)."""
    for name in names:
        top = root / name
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
