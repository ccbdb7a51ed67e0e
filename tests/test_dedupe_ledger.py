from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagecrawl.dedupe.sql import url_key
from imagecrawl.dedupe.sqlite import Ledger
from imagecrawl.schema import SCHEMA
from imagecrawl.storage.stores import LocalStore


def test_pending_and_committed_duplicates_survive_reopen(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.duplicate_reason("aa", "s:1") is None
    ledger.reserve("aa", "s:1")
    assert ledger.duplicate_reason("aa", "s:2") == "sha256"
    assert ledger.duplicate_reason("bb", "s:1") == "id"
    ledger.commit_shard("k1", [("aa", "s:1", 5, "http://h/a.png")])
    ledger.close()
    again = Ledger(tmp_path / "l.sqlite3")
    assert again.duplicate_reason("aa", "s:9") == "sha256"
    assert again.duplicate_reason("cc", "s:1") == "id"
    assert again.duplicate_reason("cc", "s:3") is None
    assert again.known_shards() == {"k1"}
    assert again.has_id("s:1") and not again.has_id("s:2")
    assert again.has_url("http://h/a.png") and not again.has_url("http://h/b.png")
    # a released reservation is free again
    again.reserve("dd", "s:4")
    again.release("dd", "s:4")
    assert again.duplicate_reason("dd", "s:4") is None


def test_reconcile_indexes_shards_the_ledger_missed(tmp_path: Path) -> None:
    """A crash between the store commit and the ledger commit leaves a shard the ledger doesn't know."""
    root = tmp_path / "store"
    key = "source=x/date=2026-01-01/part-r-00001.parquet"
    (root / "source=x" / "date=2026-01-01").mkdir(parents=True)
    row = {name: None for name in SCHEMA.names}
    row.update(
        id="x:1",
        source="x",
        image_url="http://h/1.png",
        image_sha256="ff" * 32,
        image_phash=-3,
        crawled_at=datetime(2026, 1, 1, tzinfo=UTC),
        image={"bytes": b"x", "path": "a.png"},
    )
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), root / key)
    ledger = Ledger(tmp_path / "state" / "l.sqlite3")
    assert ledger.reconcile(LocalStore(root)) == 1
    assert ledger.duplicate_reason("ff" * 32, "other") == "sha256"
    assert ledger.reconcile(LocalStore(root)) == 0


@pytest.mark.e2e
def test_claims_are_shared_between_processes_and_die_with_their_owner(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "l.sqlite3"
    a = Ledger(db, owner="run-a")
    assert a.reserve("s1", "x:1", "http://h/1.png")
    b = Ledger(db, owner="run-b")  # opened later, in the same process: a's claim stays
    # b sees a's claim whichever key it asks about, and cannot take it; but a's row is not stored yet (it
    # could still be lost with a), so it is "claimed", not known
    assert b.duplicate_reason("s1", "x:9") == "claimed"  # these bytes, under another record: a duplicate
    assert b.duplicate_reason("s9", "x:1") == "claimed"  # this id, from an unknown URL
    assert b.duplicate_reason("s1", "x:1", "http://h/1.png") == "pending"  # this very item, on its way under a's claim
    assert b.duplicate_reason("s1", "x:1", "http://h/other.png") == "claimed"
    assert not b.has_id("x:1") and not b.has_url("http://h/1.png")
    assert a.has_id("x:1") and a.has_url("http://h/1.png")  # a's own claim is known to a
    assert not b.reserve("s1", "x:2")
    assert b.claimed_elsewhere(b.db, url_hash=url_key("http://h/1.png")) == "claimed"
    assert a.claimed_elsewhere(a.db, url_hash=url_key("http://h/1.png")) is None
    # once a commits, the claim becomes a committed row, still a duplicate for b
    a.commit_shard("k", [("s1", "x:1", None, "http://h/1.png")])
    assert b.duplicate_reason("s1", "x:2") == "sha256"
    assert b.has_id("x:1") and b.has_url("http://h/1.png")
    a.close()
    b.close()

    # a process that claims and dies without closing: its claims are void for the next ledger
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from pathlib import Path\n"
        "from imagecrawl.dedupe.sqlite import Ledger\n"
        f"led = Ledger(Path({str(db)!r}), owner='doomed')\n"
        "assert led.reserve('s2', 'x:2')\n"
        "import os; os._exit(0)\n"
    )
    # a ledger opened before that process died (it purges ended runs only when it opens) still finds the
    # dead run's claim in its way (that row may be in the dead run's outbox), and notes the run as an orphan;
    # once its outbox was adopted, release_dead lets the claim go (but not of a run named in ``keep``)
    early = Ledger(db, owner="run-early")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert early.duplicate_reason("s2", "x:2") == "orphaned" and not early.reserve("s2", "x:2")
    assert early.take_orphans() == {"doomed"} and early.take_orphans() == set()
    assert early.release_dead(keep={"doomed"}) == 0 and early.duplicate_reason("s2", "x:2") == "orphaned"
    assert early.release_dead() == 1
    assert early.duplicate_reason("s2", "x:2") is None and not early.claimed_elsewhere(early.db, item_id="x:2")
    assert early.reserve("s2", "x:2") and early.has_id("x:2")
    early.close()
    subprocess.run([sys.executable, "-c", code.replace("'s2'", "'s3'").replace("'x:2'", "'x:3'")], check=True)
    c = Ledger(db, owner="run-c")
    assert c.duplicate_reason("s3", "x:3") is None
    assert c.reserve("s3", "x:3")
    c.close()


def test_forgotten_rows_leave_the_ledger_and_its_tombstones_stay(tmp_path: Path) -> None:
    from imagecrawl.dedupe.near import SqliteNearIndex
    from imagecrawl.dedupe.sql import url_key

    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, owner="forget-run")
    ledger.commit_shard("k1", [("aa", "s:1", 5, "http://h/a.png"), ("bb", "s:2", 6, "http://h/b.png")])
    ledger.commit_shard("k2", [("cc", "s:3", None, "http://h/c.png")])
    near = SqliteNearIndex(tmp_path / "near.sqlite3")
    near.add_many([("s:1", 5), ("s:2", 6)])
    near.close()

    assert sorted(ledger.ids_of(["aa", "cc", "zz"])) == ["s:1", "s:3"]
    assert SqliteNearIndex.remove_keys(tmp_path / "near.sqlite3", ["s:1", "s:3"]) == 1
    for _ in range(2):  # idempotent: a resumed forget run does it again
        ledger.forget_rows(["aa", "cc"], [url_key("http://h/a.png"), url_key("http://h/c.png")], {"k1": 1, "k2": None})
        assert ledger.duplicate_reason("aa", "s:9") is None and not ledger.has_id("s:3")
        assert not ledger.has_url("http://h/a.png") and ledger.has_url("http://h/b.png")
        assert ledger.duplicate_reason("bb", "s:9") == "sha256"
        assert ledger.known_shards() == {"k1"}
        assert ledger.db.execute("SELECT rows FROM shards WHERE key = 'k1'").fetchone()[0] == 1
    near = SqliteNearIndex(tmp_path / "near.sqlite3")
    assert near.query(5, 0) is None and near.query(6, 0) == ("s:2", 0)
    near.close()

    stone = ("aa", "u" * 32, "i" * 32, None, 0, "takedown", "2026-12-06T10:00:00+00:00", "op1")
    assert ledger.add_tombstones("op1", [stone]) == 1
    ledger.add_tombstones("op2", [(*stone[:5], "other", stone[6], "op2")])  # the first tombstone stays
    assert list(ledger.tombstone_rows()) == [stone] and ledger.tombstone_ops() == {"op1", "op2"}

    # live writers: another run that is still going (here: this process), not this one, not a dead one
    assert ledger.live_owners() == []
    crawl = Ledger(path, owner="crawl-a")
    assert [o for o, _host, _pid in ledger.live_owners()] == ["crawl-a"]
    crawl.close()
    assert ledger.live_owners() == []
    ledger.db.execute(  # a run on another host whose heartbeat stopped long ago, and one that beats now
        "INSERT INTO owners VALUES ('gone', 'elsewhere', 1, 0), ('there', 'elsewhere', 1, strftime('%s', 'now'))"
    )
    assert [o for o, _host, _pid in ledger.live_owners()] == ["there"]
    ledger.close()


def test_a_run_that_leaves_rows_in_the_outbox_keeps_their_claims_until_its_files_are_gone(tmp_path: Path) -> None:
    """A run that ends with its rows still in its outbox files (the store down, a full disk) keeps its claims,
    even after it closed: no run fetches those images again before the files are committed; once no file
    names it (as owner, or as the run a file was taken over from), its claims go."""
    import json

    state = tmp_path / "state"
    outbox = state / "outbox"
    outbox.mkdir(parents=True)
    a = Ledger(state / "ledger.sqlite3", owner="run-a")
    assert a.reserve("s1", "x:1", "http://h/1.png")
    sidecar = outbox / "shard-1.json"
    sidecar.write_text(json.dumps({"key": "k", "owner": "run-a"}))
    a.close()
    b = Ledger(state / "ledger.sqlite3", owner="run-b")  # opening purges ended runs, but not run-a
    assert b.duplicate_reason("s1", "x:1") == "orphaned" and not b.reserve("s1", "x:9")
    sidecar.write_text(json.dumps({"key": "k", "owner": "run-b", "from": ["run-a"]}))  # b took the file over
    assert b.release_dead(keep={"run-b", "run-a"}) == 0 and b.duplicate_reason("s1", "x:1") == "orphaned"
    sidecar.unlink()  # committed: the file is gone
    assert b.release_dead() == 1 and b.duplicate_reason("s1", "x:1") is None
    b.close()
    # without files left, a closing run gives its claims up at once
    c = Ledger(state / "ledger.sqlite3", owner="run-c")
    assert c.reserve("s2", "x:2")
    c.close()
    d = Ledger(state / "ledger.sqlite3", owner="run-d")
    assert d.reserve("s2", "x:2")
    d.close()
