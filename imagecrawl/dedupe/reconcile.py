"""Ledger and store agree again: index the shards a ledger does not know (a crash between a store
commit and the ledger commit leaves such a shard; a deleted or corrupt ledger is rebuilt this way).
Works for any ledger with ``known_shards()`` and ``commit_shard()``. No Scrapy."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.parquet as pq

from imagecrawl.dedupe.base import Entry

logger = logging.getLogger(__name__)

ENTRY_COLUMNS = ("image_sha256", "id", "image_phash", "image_url")


def entries_of(table: Any) -> list[Entry]:
    """Ledger entries from a pyarrow Table holding :data:`ENTRY_COLUMNS`."""
    cols = table.to_pydict()
    return list(zip(*(cols[name] for name in ENTRY_COLUMNS), strict=True))


def reconcile(ledger: Any, store: Any) -> int:
    """Record in ``ledger`` every shard of ``store`` it does not know yet; returns how many."""
    known = ledger.known_shards()
    added = 0
    for shard in store.list_shards():
        if shard.key in known:
            continue
        try:
            with store.open(shard.key) as fh:
                table = pq.read_table(fh, columns=list(ENTRY_COLUMNS))
        except Exception as exc:
            logger.error("Cannot read shard %s while reconciling the dedupe ledger: %s", shard.key, exc)
            continue
        ledger.commit_shard(shard.key, entries_of(table))
        added += 1
        logger.info("Dedupe ledger: indexed shard %s (%d rows) found in the store", shard.key, table.num_rows)
    return added
