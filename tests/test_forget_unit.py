"""``imagecrawl forget`` on real stores in temporary folders (no process, no server): selectors and their
errors, exact removal that rewrites only the shards holding selected rows, dry runs that change nothing,
the audit log, tombstones in the ledger and in the store, a run resumed after an interruption, the lock
between crawls and forget runs, and the crawl refusing forgotten rows (dedupe pipeline, known-image
middleware) built with Scrapy's crawler."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from scrapy import Request
from scrapy.exceptions import IgnoreRequest

from imagecrawl import meta
from imagecrawl.dedupe.downloadermiddlewares import KnownImageMiddleware
from imagecrawl.dedupe.pipelines import DedupePipeline, DuplicateItem
from imagecrawl.errors import ConfigError, StoreError
from imagecrawl.forget import cli, engine, lock
from imagecrawl.forget.selectors import Selection, parse_selector, read_selector_file
from imagecrawl.forget.tombstones import TombstoneIndex, TombstoneTable, key_of, load_index, sync_from_store
from imagecrawl.media import probe_image
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore
from tests.crawlers import make_crawler, stop_engine
from tests.forget_util import SALT, build_store, put_shard, rows_table, sha_of, shard_key_of, store_rows
from tests.test_unit_pipeline_dedupe import FOX, FOX_JPEG, OWL, record


def make(tmp_path: Path, shards: int = 4, rows: int = 30) -> tuple[LocalStore, Path]:
    store = LocalStore(tmp_path / "store")
    build_store(store, shards=shards, rows_per_shard=rows)
    state = state_dir_for(str(tmp_path / "store"))
    state.mkdir(parents=True, exist_ok=True)
    (state / "author_salt").write_text(SALT.hex())
    return store, state


def forget(
    store: LocalStore, state: Path, *selectors: tuple[str, str], reason: str = "request", dry_run: bool = False
) -> dict[str, Any]:
    selection = Selection.resolve([parse_selector(k, v) for k, v in selectors], salt=SALT, near_distance=8)
    return cli.run(store, state, selection, reason, dry_run=dry_run)


def ids(store: LocalStore) -> set[str]:
    return set(store_rows(store).column("id").to_pylist())


def replace(table: pa.Table, **columns: list[Any]) -> pa.Table:
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return table


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


# -- selectors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "value", "error"),
    [
        ("sha256", "abc", "64 hexadecimal"),
        ("site", "", "needs a value"),
        ("url-prefix", "example.org/x", "is not a URL"),
        ("colour", "red", "unknown selector"),
        ("site", "has space.example", "not a host"),
    ],
)
def test_bad_selectors_are_one_line_usage_errors(kind: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_selector(kind, value)


def test_site_selector_takes_urls_and_hosts() -> None:
    assert parse_selector("site", "https://Art.Example.NET/x").value == "art.example.net"
    assert parse_selector("--site", "art.example.net:8080").value == "art.example.net"


def test_selector_file(tmp_path: Path) -> None:
    path = tmp_path / "takedown.txt"
    path.write_text(
        "# takedown 2026-12-01\n"
        f"{sha_of(3)}\n"
        "https://art.example.net/post/\n"
        "site=gallery.example.org\n"
        "--account user2   # by mail\n"
        "like: images/x.png\n"
    )
    chosen = read_selector_file(str(path))
    assert [(s.kind, s.value) for s in chosen] == [
        ("sha256", sha_of(3)),
        ("url-prefix", "https://art.example.net/post/"),
        ("site", "gallery.example.org"),
        ("account", "user2"),
        ("like", str(tmp_path / "images" / "x.png")),
    ]
    path.write_text("site ok.example\nsha256 nothex\n")
    with pytest.raises(ConfigError, match=r"takedown.txt:2: --sha256"):
        read_selector_file(str(path))


def test_nothing_selected_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="nothing selected"):
        Selection.resolve([], salt=SALT, near_distance=8)


def test_mask_by_each_kind() -> None:
    table = rows_table(0, 28)  # row n: site SITES[n % 4], account user{n % 7}

    def chosen(*selectors: tuple[str, str]) -> list[int]:
        selection = Selection.resolve([parse_selector(k, v) for k, v in selectors], salt=SALT, near_distance=8)
        return [i for i, hit in enumerate(selection.mask(table)) if hit]

    assert chosen(("site", "example.org")) == list(range(0, 28, 4))  # registered domain: its subdomains
    assert chosen(("site", "pics.example.com")) == list(range(2, 28, 4))
    assert chosen(("site", "example.com")) == list(range(2, 28, 4))
    assert chosen(("site", "ample.com")) == []  # not a suffix match on text
    assert chosen(("url-prefix", "https://other.test/post/1")) == [11, 15, 19]  # 1x on other.test (n % 4 == 3)
    assert chosen(("url-prefix", "https://*/img/2?.png")) == list(range(20, 28))
    assert chosen(("sha256", sha_of(5)), ("sha256", sha_of(6))) == [5, 6]
    assert chosen(("account", "user3")) == [3, 10, 17, 24]
    assert chosen(("account", "nobody")) == []


# -- removal ---------------------------------------------------------------------------------------
def test_forget_removes_exactly_the_selected_rows_and_rewrites_only_their_shards(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=4, rows=30)
    before_ids = ids(store)
    before = mtimes(store.root)
    # rows 35 and 40 are in shard 1, row 100 in shard 3; shards 0 and 2 hold none
    result = forget(store, state, ("sha256", sha_of(35)), ("sha256", sha_of(40)), ("sha256", sha_of(100)))
    assert result["rows_removed"] == 3
    assert sorted(result["shards_rewritten"]) == [shard_key_of(1), shard_key_of(3)]
    assert ids(store) == before_ids - {"synth:35", "synth:40", "synth:100"}
    after = mtimes(store.root)
    assert after[shard_key_of(0)] == before[shard_key_of(0)]
    assert after[shard_key_of(2)] == before[shard_key_of(2)]
    assert after[shard_key_of(1)] != before[shard_key_of(1)]
    # the rewritten shard keeps its images and its schema metadata
    with store.open(shard_key_of(1)) as fh:
        import pyarrow.parquet as pq

        table = pq.read_table(fh)
    assert table.num_rows == 28
    assert table.schema.metadata and b"imagecrawl.schema_version" in table.schema.metadata
    assert all(len(v["bytes"]) == 64 for v in table.column("image").to_pylist())
    # audit record: selectors, reason, rows, shards; no content (no prompt, no URL of a row)
    (record_key,) = list(store.list_keys(".imagecrawl/audit/forget/"))
    audit = json.loads((store.root / record_key).read_text())
    assert audit["rows_removed"] == 3 and audit["reason"] == "request"
    assert sorted(audit["shards_rewritten"]) == [shard_key_of(1), shard_key_of(3)]
    assert "prompt" not in json.dumps(audit) and "/post/35" not in json.dumps(audit)
    assert next(iter(engine.read_audit(store)))["op"] == result["op"]


def test_a_shard_left_empty_is_deleted(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=2, rows=10)
    result = forget(store, state, *[("sha256", sha_of(n)) for n in range(10, 20)])
    assert result["shards_deleted"] == [shard_key_of(1)]
    assert [s.key for s in store.list_shards()] == [shard_key_of(0)]


def test_dry_run_changes_nothing_and_counts_per_shard_and_site(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=3, rows=20)
    before = mtimes(store.root)
    result = forget(store, state, ("site", "art.example.net"), ("account", "user0"), dry_run=True)
    assert mtimes(store.root) == before
    assert not (store.root / ".imagecrawl" / "audit").exists()
    assert result["rows"] == sum(result["shards"].values()) == sum(result["by_site"].values())
    # art.example.net: n % 4 == 1 (15 of 60); user0 adds n % 7 == 0 not on that site (7 of the 9)
    assert result["by_site"]["art.example.net"] == 15
    assert result["rows"] == 15 + 7
    assert len(result["sample"]) == 5
    text = cli.format_result(result)
    assert "would remove 22 of 60 rows in 3 of 3 shards" in text and "dry run: nothing changed" in text


def test_account_selector_needs_the_store_salt(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=1, rows=14)
    selection = Selection.resolve([parse_selector("account", "user1")], salt=b"another salt", near_distance=8)
    assert cli.run(store, state, selection, "r", dry_run=True)["rows"] == 0
    assert forget(store, state, ("account", "user1"), dry_run=True)["rows"] == 2


def test_tombstones_go_to_the_ledger_and_the_store(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=2, rows=10)
    forget(store, state, ("url-prefix", "https://other.test/"), reason="site owner asked")
    table = TombstoneTable.at(state / "ledger.sqlite3")
    stones = list(table)
    table.close()
    assert sorted(t.sha256 for t in stones) == sorted(sha_of(n) for n in (3, 7, 11, 15, 19))
    assert {t.reason for t in stones} == {"site owner asked"}
    gone = (3, 7, 11, 15, 19)
    assert {t.url_key for t in stones} == {key_of(f"https://other.test/img/{n}.png") for n in gone}
    assert {t.id_key for t in stones} == {key_of(f"synth:{n}") for n in gone}
    assert all(t.phash is None for t in stones)  # no content, and no pHash unless selected by image
    assert not any(t.near for t in stones)  # not selected by image: no near-duplicate refusal
    # a new ledger (deleted state) gets them back from the store
    fresh = TombstoneTable.at(tmp_path / "other-state" / "ledger.sqlite3")
    assert sync_from_store(store, fresh) == 1 and fresh.count() == 5
    assert sync_from_store(store, fresh) == 0
    fresh.close()
    index = load_index(tmp_path / "third" / "ledger.sqlite3", store)
    assert index.refused(sha_of(3), None, None, None) == "sha256"
    assert index.before_fetch(None, "https://other.test/img/7.png") == "url"
    assert index.before_fetch("synth:11", None) == "id"
    assert index.before_fetch("synth:12", "https://gallery.example.org/img/12.png") is None


def test_like_takes_the_image_and_its_near_duplicates(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=1, rows=6)
    fox, fox_jpeg, owl = (probe_image(b) for b in (FOX, FOX_JPEG, OWL))
    table = rows_table(100, 4)
    shas = [fox.sha256, fox_jpeg.sha256, owl.sha256, sha_of(103)]
    phashes = [fox.phash, fox_jpeg.phash, owl.phash, None]
    signed = [None if p is None else (p - (1 << 64) if p >= 1 << 63 else p) for p in phashes]
    table = replace(table, image_sha256=shas, image_phash=signed)
    put_shard(store, "synth/date=2026-11-24/part-x-00001.parquet", table)
    like = tmp_path / "fox.png"
    like.write_bytes(FOX)
    result = forget(store, state, ("like", str(like)))
    assert result["rows_removed"] == 2  # the file itself and its JPEG re-encoding; not the owl
    assert ids(store) >= {"synth:102", "synth:103"} and not ids(store) & {"synth:100", "synth:101"}
    table_ = TombstoneTable.at(state / "ledger.sqlite3")
    index = TombstoneIndex(table_)
    table_.close()
    assert index.refused("0" * 64, "civitai:9", "https://x.example/new.jpg", fox_jpeg.phash) == "near"
    assert index.refused("0" * 64, "civitai:9", "https://x.example/new.jpg", owl.phash) is None
    assert "like fox.png sha256:" in result["selectors"][0] and str(tmp_path) not in result["selectors"][0]


def test_an_interrupted_run_is_completed_exactly_by_the_same_command(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=3, rows=10)
    selectors = [("sha256", sha_of(n)) for n in (1, 12, 13, 25)]
    selection = Selection.resolve([parse_selector(k, v) for k, v in selectors], salt=SALT, near_distance=8)
    # the run planned, journaled and rewrote its first shard, then died
    plan, stones = engine.scan(store, selection, reason="r")
    journal = engine.Journal(state)
    journal.write(plan, stones)
    engine.rewrite_shard(store, plan.shards[0].key, pa.array(plan.sha256s), journal.scratch(plan, 0))
    assert ids(store) == {f"synth:{n}" for n in range(30)} - {"synth:1"}
    result = forget(store, state, *selectors, reason="r")
    assert result["resumed"] and result["op"] == plan.op
    assert sorted(result["shards_rewritten"]) == [shard_key_of(0), shard_key_of(1), shard_key_of(2)]
    assert ids(store) == {f"synth:{n}" for n in range(30)} - {"synth:1", "synth:12", "synth:13", "synth:25"}
    assert journal.pending() == []
    assert len(list(engine.read_audit(store))) == 1


def test_a_forget_run_refuses_while_a_crawl_holds_the_store(tmp_path: Path) -> None:
    store, state = make(tmp_path, shards=1, rows=5)
    held = lock.hold_for_crawl(state)
    assert held is not None
    try:
        with pytest.raises(StoreError, match=r"a crawl .* is writing into this store"):
            forget(store, state, ("sha256", sha_of(1)))
    finally:
        held.close()
    assert forget(store, state, ("sha256", sha_of(1)))["rows_removed"] == 1


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _state = make(tmp_path, shards=1, rows=5)
    root = str(store.root)
    assert cli.main([root, "--sha256", "xyz", "--reason", "r"]) == 2
    assert "imagecrawl forget: error: --sha256 'xyz'" in capsys.readouterr().err
    assert cli.main([root, "--site", "other.test", "--reason", " "]) == 2
    assert cli.main([str(tmp_path / "no-such-store"), "--site", "other.test", "--reason", "r"]) == 3
    assert "no store at" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main([str(tmp_path / "file"), "--site", "other.test", "--reason", "r"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err and "Traceback" not in err
    assert cli.main([root, "--site", "other.test", "--reason", "r", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows_removed"] == 1


# -- the crawl refuses forgotten rows --------------------------------------------------------------
def test_dedupe_pipeline_and_known_middleware_refuse_forgotten_rows(tmp_path: Path) -> None:
    store_dir = tmp_path / "crawlstore"
    fox = record("7", FOX)
    owl = record("8", OWL)
    # forget the fox: a row with its hashes, id and URL in the store, selected by image
    store = LocalStore(store_dir)
    table = replace(
        rows_table(0, 1),
        image_sha256=[fox.image_sha256],
        id=[fox.id],
        image_url=[fox.image_url],
        image_phash=[fox.image_phash],
    )
    put_shard(store, shard_key_of(0), table)
    like = tmp_path / "fox.png"
    like.write_bytes(FOX)
    state = state_dir_for(str(store_dir))
    selection = Selection.resolve([parse_selector("like", str(like))], salt=SALT, near_distance=8)
    assert cli.run(store, state, selection, "takedown", dry_run=False)["rows_removed"] == 1

    crawler = make_crawler(IMAGECRAWL_STORE=str(store_dir))
    crawler.stats.open_spider()
    pipeline = DedupePipeline.from_crawler(crawler)
    asyncio.run(pipeline.open_spider())
    with pytest.raises(DuplicateItem, match="forgotten"):
        asyncio.run(pipeline.process_item(record("7", FOX)))
    with pytest.raises(DuplicateItem, match=r"forgotten \(near\)"):
        asyncio.run(pipeline.process_item(record("99", FOX_JPEG)))
    assert asyncio.run(pipeline.process_item(owl)) is owl
    middleware = KnownImageMiddleware.from_crawler(crawler)
    request = Request(fox.image_url, meta={meta.KIND: "image", meta.RECORD_ID: "civitai:other"})
    with pytest.raises(IgnoreRequest, match="forgotten"):
        asyncio.run(middleware.process_request(request))
    stats = {k: v for k, v in crawler.stats.get_stats().items() if k.startswith("imagecrawl/forget")}
    assert stats == {
        "imagecrawl/forget/refused/sha256": 1,
        "imagecrawl/forget/refused/near": 1,
        "imagecrawl/forget/refused/url": 1,
    }
    stop_engine(crawler)


def test_inspect_shows_the_forget_log(tmp_path: Path) -> None:
    from imagecrawl.inspect import format_report, inspect_store

    store, state = make(tmp_path, shards=2, rows=10)
    forget(store, state, ("site", "other.test"), reason="owner request")
    forget(store, state, ("sha256", sha_of(0)), reason="artist takedown")
    report = inspect_store(str(store.root), samples=0)
    assert [r["reason"] for r in report["forget_log"]] == ["owner request", "artist takedown"]
    assert [r["rows_removed"] for r in report["forget_log"]] == [5, 1]
    assert report["rows"] == 14
    text = format_report(report)
    assert "forget log: 2 removals, 6 rows removed" in text
    assert "reason 'artist takedown'" in text and f"sha256 {sha_of(0)}" in text


def test_a_crawl_waits_while_a_forget_run_holds_the_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import threading
    import time

    state = tmp_path / "_state"
    got: list[float] = []
    with lock.exclusive(state):
        waiter = threading.Thread(
            target=lambda: got.append(time.monotonic()) if lock.hold_for_crawl(state, poll_seconds=0.05) else None
        )
        waiter.start()
        time.sleep(0.5)
        assert got == []  # still waiting
        released = time.monotonic()
    waiter.join(timeout=10)
    assert got and got[0] >= released
    assert "A forget run is rewriting this store" in caplog.text


def test_help_spells_the_commands_as_the_docs_do(capsys: pytest.CaptureFixture[str]) -> None:
    from imagecrawl.forget import recheck

    forget_usage = (
        "imagecrawl forget STORE [--site HOST]... [--url-prefix PREFIX]... [--sha256 HASH]... "
        "[--like IMAGE_FILE]... [--from FILE] --reason TEXT [--dry-run]"
    )
    recheck_usage = "imagecrawl recheck STORE [--dry-run] [-s NAME=VALUE]..."
    for parser, usage in ((cli.build_parser(), forget_usage), (recheck.build_parser(), recheck_usage)):
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {usage}")
    docs = (Path(__file__).parent.parent / "docs" / "forget.md").read_text().replace("\\\n    ", "")
    assert forget_usage.replace("imagecrawl", "uv run imagecrawl", 1) in docs
    assert recheck_usage.replace("imagecrawl", "uv run imagecrawl", 1) in docs


def test_recheck_samples_each_site_apart_bounded_and_spread(tmp_path: Path) -> None:
    from imagecrawl.forget.recheck import sample_key, sites_in_store
    from tests.forget_util import SITES, site_of_row

    store, _state = make(tmp_path, shards=5, rows=40)  # 200 rows: 50 pages on each of 4 sites
    sites = sites_in_store(store, 3)
    assert sorted(sites) == sorted(f"https://{host}" for host in SITES)
    for host in SITES:
        site = sites[f"https://{host}"]
        pages = sorted((f"https://{host}/post/{n}" for n in range(200) if site_of_row(n) == host), key=sample_key)
        assert site.rows == len(pages) == 50
        assert site.pages == pages[:3]  # the same 3 of its 50 pages, wherever they sit in the store
    # spread over the store: not only pages of the first shard (rows 0-39)
    assert any(int(page.rsplit("/", 1)[1]) >= 40 for site in sites.values() for page in site.pages)
    # bounded: never more than asked, none when 0
    assert [len(site.pages) for site in sites_in_store(store, 7).values()] == [7] * 4
    assert all(site.pages == [] and site.rows == 50 for site in sites_in_store(store, 0).values())
