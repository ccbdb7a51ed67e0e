"""What the pipelines, the outbox and the known-image check need from an exact-dedupe ledger.

Implemented by :class:`imagecrawl.dedupe.sqlite.Ledger` (embedded, one process) and
:class:`imagecrawl.distributed.ledger.RedisLedger` (shared by many workers). No Scrapy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

Entry = tuple[str, str, int | None, str | None]  # (sha256, id, phash, image_url)


class LedgerLike(Protocol):
    #: this run's name: its claims, and its files in a shared outbox
    owner: str
    #: the near-duplicate index of committed rows, once :meth:`enable_near` was called
    near: Any

    def enable_near(self, index: Any) -> None: ...

    def near_duplicate(self, phash: int | None, max_distance: int) -> tuple[str, int] | None:
        """(id, distance) of the closest committed or claimed image within ``max_distance``, else None."""
        ...

    def duplicate_reason(self, sha256: str, item_id: str) -> str | None: ...

    def reserve(self, sha256: str, item_id: str, url: str | None = None, phash: int | None = None) -> bool:
        """Claim a pending image for this owner; False when another owner (or a committed row) holds it."""
        ...

    def heartbeat(self, *, force: bool = False) -> None:
        """Keep this owner's claims alive (called about every second)."""
        ...

    def owner_alive(self, owner: str) -> bool:
        """Whether the run ``owner`` still goes on (same rule as for its claims)."""
        ...

    def release(self, sha256: str, item_id: str, url: str | None = None) -> None: ...

    def has_id(self, item_id: str) -> bool: ...

    def has_url(self, url: str) -> bool: ...

    def known_shards(self) -> set[str]: ...

    def commit_shard(self, key: str, entries: Iterable[Entry]) -> None: ...

    def reconcile(self, store: Any) -> int: ...

    def close(self) -> None: ...
