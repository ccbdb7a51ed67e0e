"""The forget run: plan, tombstones, shard rewrites, ledger, audit; journaled so that a run killed at any
point completes exactly when started again. Pure: no Scrapy.

Steps (docs/forget.md#how-a-removal-is-made-safe):

1. *plan*: read the selection columns of every shard (never the images) and note the shards that hold
   selected rows, and those rows' SHA-256s. The plan is written to ``<state>/forget/<op>.json`` (with
   its tombstones beside it) before anything changes: from then on the run is bound to finish.
2. *tombstones* go into the ledger and into the store (``.imagecrawl/audit/tombstones/<op>.jsonl``): a crawl that
   starts after this point refuses the rows even before they are gone.
3. *rewrite*: each planned shard is read, written again without the planned rows to a local file, and
   committed **under its own key**: ``os.replace`` on a local store, a PUT of the same key on S3. A
   reader sees the old shard or the new one, never both or neither; a shard left empty is deleted. A
   shard that no longer holds any planned row (rewritten before a crash) is left alone.
4. *ledger*: the rows leave the dedupe ledger and the near-duplicate index; shard row counts follow.
5. *audit*: one record in ``.imagecrawl/audit/forget/<op>.json``; then the journal goes.

Every step is idempotent, so a run resumed after kill -9 does exactly what remains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imagecrawl import failpoints
from imagecrawl.dedupe.near import SqliteNearIndex
from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.forget import tombstones as tomb
from imagecrawl.forget.selectors import SELECT_COLUMNS, Selection
from imagecrawl.pacing.sitekey import site_of_url
from imagecrawl.storage import layout

logger = logging.getLogger(__name__)

JOURNAL_DIR = "forget"
AUDIT_LOG_DIR = f"{tomb.AUDIT_DIR}/forget"
SAMPLE_SIZE = 5


def new_op_id() -> str:
    """A forget run's id: its start time to the microsecond (ids sort as runs started), then a random tag."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ShardPlan:
    key: str
    rows: int
    remove: int
    size: int


@dataclass
class Plan:
    op: str
    fingerprint: str
    reason: str
    selectors: list[str]
    started_at: str
    shards: list[ShardPlan] = field(default_factory=list)
    sha256s: list[str] = field(default_factory=list)
    by_site: dict[str, int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    rows_scanned: int = 0
    shards_scanned: int = 0

    @property
    def rows(self) -> int:
        return sum(s.remove for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "selectors": self.selectors,
            "started_at": self.started_at,
            "shards": [vars(s) for s in self.shards],
            "sha256s": self.sha256s,
            "by_site": self.by_site,
            "rows_scanned": self.rows_scanned,
            "shards_scanned": self.shards_scanned,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        plan = cls(data["op"], data["fingerprint"], data["reason"], list(data["selectors"]), data["started_at"])
        plan.shards = [ShardPlan(**s) for s in data["shards"]]
        plan.sha256s = list(data["sha256s"])
        plan.by_site = dict(data.get("by_site", {}))
        plan.rows_scanned = int(data.get("rows_scanned", 0))
        plan.shards_scanned = int(data.get("shards_scanned", 0))
        return plan


def described(selection: Selection) -> list[str]:
    """The selectors as the journal and the audit log keep them: no account name (its salted HMAC,
    as the rows hold it) and no image (the file name and its hashes)."""
    out = []
    for s in selection.selectors:
        if s.kind == "account":
            out.append(f"account hmac:{selection.accounts.get(s.value) or 'none (the store has no author salt)'}")
        elif s.kind == "like":
            like = next(x for x in selection.likes if x.path == s.value)
            near = f" phash:{like.phash & 0xFFFFFFFFFFFFFFFF:016x}" if like.phash is not None else ""
            out.append(f"like {Path(s.value).name} sha256:{like.sha256}{near} within {selection.near_distance}")
        else:
            out.append(str(s))
    return out


def fingerprint(selectors: list[str], reason: str) -> str:
    return hashlib.sha256(json.dumps([sorted(selectors), reason]).encode()).hexdigest()[:16]


def _read_selected(store: Any, key: str) -> pa.Table:
    with store.open(key) as fh:
        pf = pq.ParquetFile(fh)
        names = [c for c in SELECT_COLUMNS if c in pf.schema_arrow.names]
        return pf.read(columns=names)


def scan(store: Any, selection: Selection, *, reason: str, op: str | None = None) -> tuple[Plan, list[tomb.Tombstone]]:
    """Which shards hold selected rows, which rows, and their tombstones (only the selection columns are
    read). A row's perceptual hash goes into its tombstone when an image given with ``--like`` took it."""
    selectors = described(selection)
    plan = Plan(op or new_op_id(), fingerprint(selectors, reason), reason, selectors, now_iso())
    sites: Counter[str] = Counter()
    stones: list[tomb.Tombstone] = []
    for shard in store.list_shards():
        table = _read_selected(store, shard.key)
        plan.shards_scanned += 1
        plan.rows_scanned += table.num_rows
        mask = selection.mask(table)
        hits = sum(mask)
        if not hits:
            continue
        chosen = table.filter(pa.array(mask, pa.bool_())).to_pylist()
        plan.shards.append(ShardPlan(shard.key, table.num_rows, hits, shard.size))
        for row in chosen:
            plan.sha256s.append(row["image_sha256"])
            by_image = selection.by_image(row)
            stones.append(tomb.tombstone_for(row, near=by_image, reason=reason, when=plan.started_at, op=plan.op))
            sites[site_of_url(row.get("page_url") or row.get("image_url") or "") or "(no url)"] += 1
            if len(plan.sample) < SAMPLE_SIZE:
                plan.sample.append({"shard": shard.key, **{k: row.get(k) for k in ("id", "page_url", "image_url")}})
    plan.by_site = dict(sites.most_common())
    return plan, stones


# -- the journal ---------------------------------------------------------------------------------
class Journal:
    """``<state>/forget/``: the plan of every run not finished yet, and its tombstones."""

    def __init__(self, state: Path) -> None:
        self.dir = state / JOURNAL_DIR

    def pending(self) -> list[Plan]:
        if not self.dir.is_dir():
            return []
        plans = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                plans.append(Plan.from_json(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("Forget journal %s is unreadable (%s): set aside", path, exc)
                path.rename(path.with_suffix(".corrupt"))
        return plans

    def write(self, plan: Plan, stones: list[tomb.Tombstone]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.dir / f"{plan.op}.tombstones.jsonl", "".join(t.to_json() + "\n" for t in stones))
        _atomic_write(self.dir / f"{plan.op}.json", json.dumps(plan.to_json()))

    def tombstones(self, plan: Plan) -> list[tomb.Tombstone]:
        path = self.dir / f"{plan.op}.tombstones.jsonl"
        return [tomb.Tombstone.from_json(line) for line in path.read_text().splitlines() if line.strip()]

    def done(self, plan: Plan) -> None:
        (self.dir / f"{plan.op}.json").unlink(missing_ok=True)
        (self.dir / f"{plan.op}.tombstones.jsonl").unlink(missing_ok=True)
        for tmp in self.dir.glob(f"{plan.op}-*.parquet.tmp"):
            tmp.unlink(missing_ok=True)

    def scratch(self, plan: Plan, n: int) -> Path:
        return self.dir / f"{plan.op}-{n:05d}.parquet.tmp"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- carrying a plan out ---------------------------------------------------------------------------
@dataclass
class Outcome:
    plan: Plan
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rows_removed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    resumed: bool = False


def rewrite_shard(store: Any, key: str, sha256s: pa.Array, scratch: Path) -> tuple[int, int, int, bool]:
    """Write shard ``key`` again without the rows whose ``image_sha256`` is in ``sha256s``, under the same
    key. Returns (rows removed, bytes read, bytes written, deleted); (0, n, 0, False) if it holds none."""
    with store.open(key) as fh:
        pf = pq.ParquetFile(fh)
        table = pf.read()
        size = fh.seek(0, os.SEEK_END)  # the shard's bytes, all read
    drop = pc.is_in(table.column("image_sha256"), value_set=sha256s)
    removed = int(pc.sum(drop).as_py() or 0)
    if not removed:
        return 0, size, 0, False
    kept = table.filter(pc.invert(drop))
    if kept.num_rows == 0:
        failpoints.hit("forget.shard.before_delete")
        store.delete(key)
        return removed, size, 0, True
    rows_per_group = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 512
    scratch.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(kept, scratch, row_group_size=max(1, rows_per_group), compression="zstd")
    with open(scratch, "rb") as out:
        os.fsync(out.fileno())
    failpoints.hit("forget.shard.written")
    store.commit(scratch, key)  # same key: readers see the old shard or the new one
    failpoints.hit("forget.shard.committed")
    written = scratch.stat().st_size
    scratch.unlink(missing_ok=True)
    return removed, size, written, False


def forget_in_ledger(ledger: Ledger, state: Path, plan: Plan, stones: list[tomb.Tombstone], outcome: Outcome) -> None:
    """Take the rows out of the near-duplicate index, then out of the dedupe ledger (both idempotent; in
    this order, so that a run resumed between the two still finds the rows' ids in the ledger)."""
    ids = ledger.ids_of(plan.sha256s)
    SqliteNearIndex.remove_keys(state / "near.sqlite3", ids)
    shards = {s.key: None if s.key in outcome.deleted else s.rows - s.remove for s in plan.shards}
    ledger.forget_rows(plan.sha256s, [bytes.fromhex(t.url_key) for t in stones if t.url_key], shards)


def carry_out(
    store: Any,
    state: Path,
    plan: Plan,
    journal: Journal,
    ledger: Ledger,
    *,
    resumed: bool = False,
    publish: Callable[[list[tomb.Tombstone]], Any] | None = None,
) -> Outcome:
    """Steps 2 to 5 of the module docstring, for a plan already in the journal. ``publish`` shares the
    tombstones with running crawls too (distributed crawls: Redis)."""
    started = time.monotonic()
    outcome = Outcome(plan, resumed=resumed)
    stones = journal.tombstones(plan)
    tomb.TombstoneTable(ledger).add(plan.op, stones)
    tomb.put_in_store(store, plan.op, stones)
    if publish is not None:
        publish(stones)
    failpoints.hit("forget.tombstoned")
    values = pa.array(plan.sha256s, pa.string())
    present = {s.key for s in store.list_shards()}
    for n, shard in enumerate(plan.shards):
        key = shard.key
        if key not in present and layout.current_key(key) in present:
            key = layout.current_key(key)  # a store of the first layout, moved since the plan was made
        if key not in present:
            outcome.deleted.append(shard.key)  # emptied and deleted before a crash (or gone since)
            continue
        removed, read, written, deleted = rewrite_shard(store, key, values, journal.scratch(plan, n))
        outcome.bytes_read += read
        outcome.rows_removed += removed
        if deleted:
            outcome.deleted.append(shard.key)
        else:
            # no planned row left without removing one now: this run rewrote it before it was interrupted
            outcome.rewritten.append(shard.key)
            outcome.bytes_written += written
        logger.info("Forget %s: shard %s, %d of %d rows removed", plan.op, key, removed, shard.rows)
    forget_in_ledger(ledger, state, plan, stones, outcome)
    failpoints.hit("forget.ledger.done")
    outcome.seconds = time.monotonic() - started
    write_audit(store, plan, outcome)
    failpoints.hit("forget.audited")
    journal.done(plan)
    return outcome


# -- the audit log -------------------------------------------------------------------------------
def write_audit(store: Any, plan: Plan, outcome: Outcome) -> None:
    """One record a run, under its own key (append-only: a run never rewrites another's record)."""
    record = {
        "op": plan.op,
        "started_at": plan.started_at,
        "finished_at": now_iso(),
        "reason": plan.reason,
        "selectors": plan.selectors,
        "rows_removed": plan.rows,
        "shards_rewritten": sorted(outcome.rewritten),
        "shards_deleted": sorted(outcome.deleted),
        "rows_by_site": plan.by_site,
        "tombstones": len(plan.sha256s),
        "resumed_after_interruption": outcome.resumed,
    }
    store.put_bytes(f"{AUDIT_LOG_DIR}/{plan.op}.json", json.dumps(record, indent=1).encode(), "application/json")


def read_audit(store: Any) -> Iterator[dict[str, Any]]:
    """Every audit record of a store, oldest first."""
    for key in store.list_keys(AUDIT_LOG_DIR + "/"):
        if key.endswith(".json"):
            with store.open(key) as fh:
                yield json.loads(fh.read())
