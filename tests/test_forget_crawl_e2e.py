"""Forgotten is forgotten, through real crawls of the sandbox: rows forgotten from a gallery crawl are not
brought back by the same crawl again nor by a ``urls`` list of their image URLs (the skips counted and in
the report); ``imagecrawl recheck`` forgets the site once its robots.txt says ``ai-train=no`` (changed
between runs with ``POST /_sandbox/robots``), and not while it allows; distributed crawls get the
tombstones of a forget run through Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from imagecrawl import __version__
from imagecrawl.forget.tombstones import key_of
from imagecrawl.state import state_dir_for
from tests.conftest import LOOPBACK, REPO, run_crawl
from tests.crawlers import make_crawler, merge_settings, setting_text, stop_engine
from tests.forget_util import SALT, build_store, sha_of
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMAGECRAWL_FAILPOINTS"}
    return subprocess.run(
        [sys.executable, "-m", "imagecrawl.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=240, env=env
    )


def rows(store: Path) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path in sorted(store.glob("*/date=*/*.parquet")):
        out += pq.read_table(path, columns=["id", "page_url", "image_url", "image_sha256"]).to_pylist()
    return out


def setting_args(settings: dict[str, str]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("-s", f"{key}={setting_text(value)}")]


def set_robots(site: SandboxProcess, **query: str) -> None:
    from urllib.parse import urlencode

    url = f"{site.base_url.rstrip('/')}/_sandbox/robots?{urlencode(query)}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=16, seed=5, name="forget-sandbox")


def test_forgotten_rows_stay_gone_and_recheck_follows_robots(tmp_path: Path, site: SandboxProcess) -> None:
    store = tmp_path / "store"
    base = site.base_url.rstrip("/")
    gallery = {"profile": "sandbox", "start_url": f"{base}/gallery/"}
    run_crawl("gallery", store=store, args=gallery)
    first = rows(store)
    assert len(first) >= 8
    gone = first[:3]

    # a takedown by page URL
    args = ["forget", str(store), "--reason", "takedown #7"]
    for row in gone:
        args += ["--url-prefix", row["page_url"]]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "removed 3 of" in done.stdout
    kept = {r["id"] for r in rows(store)}
    assert kept == {r["id"] for r in first} - {r["id"] for r in gone}

    # the same crawl again: nothing comes back, the refusals are counted and reported
    again = run_crawl("gallery", store=store, args=gallery)
    assert {r["id"] for r in rows(store)} == kept
    refused = {k: v for k, v in again.stats.items() if k.startswith("imagecrawl/forget/refused/")}
    assert sum(refused.values()) >= 3, again.stats
    reports = sorted((store / ".imagecrawl" / "reports").glob("*.json"))
    assert json.loads(reports[-1].read_text())["totals"]["forgotten_refused"] == sum(refused.values())

    # a urls list of the forgotten images: not fetched
    listing = tmp_path / "list.csv"
    listing.write_text("url,caption\n" + "".join(f"{r['image_url']},forgotten\n" for r in gone))
    listed = run_crawl("urls", store=store, args={"input": str(listing)}, check=False)
    assert listed.stats.get("imagecrawl/forget/refused/url", 0) == 3, listed.stats
    assert {r["id"] for r in rows(store)} == kept

    # recheck while the site allows: nothing changes
    before = len(site.requests())
    contact = "-s", "IMAGECRAWL_CONTACT=recheck@example.org"
    checked = cli(
        "recheck", str(store), *contact, "-s", "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8", "-s", "LOG_LEVEL=WARNING"
    )
    assert checked.returncode == 0, checked.stderr
    assert f"allows        {base}" in checked.stdout and "nothing forgotten" in checked.stdout
    assert {r["id"] for r in rows(store)} == kept
    # it asked as a crawl asks: robots.txt first, the root and a bounded sample of pages, with the crawl's identity
    visit = site.requests()[before:]
    paths = [r["path"] for r in visit]
    assert paths[0] == "/robots.txt" and "/" in paths
    assert len([p for p in paths if p.startswith("/gallery/")]) == 3  # IMAGECRAWL_TUNING["recheck_sample_pages"]
    assert {r["ua"] for r in visit} == {f"imagecrawl/{__version__} (+recheck@example.org)"}

    # the site withdraws consent: the next recheck forgets every row of it
    set_robots(site, content_signal="search=yes, ai-train=no")
    try:
        dry = cli("recheck", str(store), "--dry-run", "--json", "-s", "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8")
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["sites"][0]["verdict"] == "refuses" and plan["forget"]["rows"] == len(kept)
        assert {r["id"] for r in rows(store)} == kept
        # the spider Scrapyd schedules, in its dry-run mode: the same verdict in its log, nothing forgotten
        spider = run_crawl("recheck", store=store, args={"dry_run": 1})
        assert f"Recheck:   refuses       {base}" in spider.stderr
        assert f"Recheck: would remove {len(kept)} of {len(kept)} rows" in spider.stderr
        assert {r["id"] for r in rows(store)} == kept
        checked = cli("recheck", str(store), "-s", "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8", "-s", "LOG_LEVEL=WARNING")
        assert checked.returncode == 0, checked.stderr
        assert f"refuses       {base}" in checked.stdout and "content_signal" in checked.stdout
    finally:
        set_robots(site)
    assert rows(store) == []
    audit = [json.loads(p.read_text()) for p in sorted((store / ".imagecrawl" / "audit" / "forget").glob("*.json"))]
    assert [a["reason"] for a in audit] == ["takedown #7", "opt-out withdrawn"]
    assert audit[1]["rows_removed"] == len(kept) and audit[1]["finished_at"]
    inspected = cli("inspect", str(store), "--samples", "0")
    assert "forget log: 2 removals" in inspected.stdout

    # the site allows again: its forgotten rows still do not come back
    run_crawl("gallery", store=store, args=gallery)
    assert {r["id"] for r in rows(store)}.isdisjoint({r["id"] for r in first})


def test_a_crawl_running_on_the_store_makes_forget_refuse(tmp_path: Path, site: SandboxProcess) -> None:
    store = tmp_path / "store"
    base = site.base_url.rstrip("/")
    run_crawl("gallery", store=store, args={"profile": "sandbox", "start_url": f"{base}/gallery/", "max_items": 2})
    crawl = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "gallery",
            "-a",
            "profile=sandbox",
            "-a",
            f"start_url={base}/gallery/",
            *setting_args(
                merge_settings(
                    LOOPBACK,
                    {
                        "IMAGECRAWL_STORE": str(store),
                        "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "1",
                        "IMAGECRAWL_MAX_RATE_PER_SITE": "1",
                        "IMAGECRAWL_TUNING": {"pacing_min_rate_per_second": "0.5"},
                    },
                )
            ),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = state_dir_for(str(store)) / "store.lock"
        import fcntl
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the crawl holds the store
            if lock.exists():
                with open(lock) as fh:
                    try:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                    except BlockingIOError:
                        break
            time.sleep(0.1)
        done = cli("forget", str(store), "--site", "127.0.0.1", "--reason", "r")
        assert done.returncode == 3
        assert "is writing into this store now" in done.stderr and done.stderr.strip().count("\n") == 0
    finally:
        crawl.terminate()
        crawl.wait(timeout=60)


def test_distributed_workers_get_tombstones_through_redis(tmp_path: Path, redis_url: str) -> None:
    import redis

    from imagecrawl.distributed.tombstones import SharedTombstones, tombstones_key
    from imagecrawl.storage.stores import LocalStore

    store = LocalStore(tmp_path / "store")
    build_store(store, shards=2, rows_per_shard=10)
    settings = {
        "IMAGECRAWL_STORE": str(store.root),
        "IMAGECRAWL_REDIS_URL": redis_url,
        "IMAGECRAWL_REDIS_PREFIX": "forgettest",
        "IMAGECRAWL_AUTHOR_SALT": SALT.decode(),
    }
    # a worker that started before the forget run (on another machine: its own state); it has stopped
    # writing into the store (while it writes, forget refuses: test_a_distributed_crawl_and_forget_take_turns),
    # and its tombstones keep being refreshed from Redis
    worker = make_crawler(**settings, IMAGECRAWL_STATE_DIR=str(tmp_path / "worker-state"))
    index = SharedTombstones.from_crawler(worker)
    stop_engine(worker)
    assert len(index) == 0
    done = cli(
        "forget",
        str(store.root),
        "--sha256",
        sha_of(4),
        "--url-prefix",
        "https://art.example.net/post/1",
        "--reason",
        "takedown",
        *setting_args(settings),
    )
    assert done.returncode == 0, done.stderr
    client = redis.Redis.from_url(redis_url)
    key = tombstones_key("forgettest", str(store.root))
    assert client.hlen(key) == 1 + 3  # row 4; rows 1, 13, 17 of art.example.net under /post/1
    index.refresh(force=True)
    assert index.refused(sha_of(4), None, None, None) == "sha256"
    assert index.before_fetch("synth:13", None) == "id"
    assert index.before_fetch(None, "https://art.example.net/img/17.png") == "url"
    assert index.before_fetch(None, "https://art.example.net/img/5.png") is None
    # a fresh Redis is filled again from the store by the next worker
    client.delete(key, f"{key}:version")
    second = make_crawler(**settings, IMAGECRAWL_STATE_DIR=str(tmp_path / "w2"))
    later = SharedTombstones.from_crawler(second)
    stop_engine(second)
    assert len(later) == 4 and client.hlen(key) == 4
    assert key_of("synth:1") in {t.id_key for t in later.stones()}
    # --account on a distributed store: the salt the workers share in Redis
    client.set("forgettest:author_salt", SALT.decode())
    no_salt = {k: v for k, v in settings.items() if k != "IMAGECRAWL_AUTHOR_SALT"}
    state = tmp_path / "forget-state"
    by_account = cli(
        "forget",
        str(store.root),
        "--account",
        "user2",
        "--reason",
        "artist",
        "--json",
        *setting_args({**no_salt, "IMAGECRAWL_STATE_DIR": str(state)}),
    )
    assert by_account.returncode == 0, by_account.stderr
    assert json.loads(by_account.stdout)["rows_removed"] == 3  # rows 2, 9 and 16


def test_forget_commits_what_a_killed_crawl_left_in_the_outbox_first(tmp_path: Path, site: SandboxProcess) -> None:
    store = tmp_path / "store"
    base = site.base_url.rstrip("/")
    killed = run_crawl(
        "gallery",
        store=store,
        args={"profile": "sandbox", "start_url": f"{base}/gallery/"},
        env={"IMAGECRAWL_FAILPOINTS": "shard.commit.before:1"},
        check=False,
    )
    assert killed.returncode == -9
    outbox = state_dir_for(str(store)) / "outbox"
    assert list(outbox.glob("*.ready")) and rows(store) == []
    waiting = [
        r for path in sorted(outbox.glob("*.ready")) for r in pq.read_table(path, columns=["page_url"]).to_pylist()
    ]
    chosen = sorted(r["page_url"] for r in waiting)[:2]
    done = cli("forget", str(store), "--url-prefix", chosen[0], "--url-prefix", chosen[1], "--reason", "takedown #9")
    assert done.returncode == 0, done.stderr
    assert "Committed the shards an interrupted crawl left" in done.stderr
    assert "removed 2 of" in done.stdout
    left = rows(store)
    assert len(left) == len(waiting) - 2 and not {r["page_url"] for r in left} & set(chosen)
    assert not list(outbox.glob("*.ready"))
    # the next crawl commits nothing of the forgotten ones again
    run_crawl("gallery", store=store, args={"profile": "sandbox", "start_url": f"{base}/gallery/"})
    assert not {r["page_url"] for r in rows(store)} & set(chosen)


def test_recheck_of_other_peoples_sites_needs_a_contact(tmp_path: Path) -> None:
    from imagecrawl.storage.stores import LocalStore

    store = LocalStore(tmp_path / "store")
    build_store(store, shards=1, rows_per_shard=8)  # rows on *.example.org and others: not loopback
    done = cli("recheck", str(store.root), "-s", "LOG_LEVEL=ERROR")
    assert done.returncode == 2, done.stderr
    assert "imagecrawl recheck: error: the recheck visits sites that are not yours" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(list(store.list_shards())) == 1 and not (state_dir_for(str(store.root)) / "forget").exists()


def _stopped(process: subprocess.Popen[Any]) -> bool:
    """Whether ``process`` stopped itself at a failpoint (``name:1:stop``: SIGSTOP)."""
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(") ", 1)[1].startswith("T")


def _forget_paused(store: Path, prefixes: list[str], *settings: str) -> subprocess.Popen[str]:
    """``imagecrawl forget`` on ``store`` stopped in the middle of its run (tombstones kept, no shard
    rewritten yet), holding the store."""
    env = {**os.environ, "IMAGECRAWL_FAILPOINTS": "forget.tombstoned:1:stop"}
    selectors = [arg for prefix in prefixes for arg in ("--url-prefix", prefix)]
    cmd = [sys.executable, "-m", "imagecrawl.cli", "forget", str(store), *selectors, "--reason", "takedown", *settings]
    forget = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not _stopped(forget):
        assert forget.poll() is None, forget.communicate()
        assert time.monotonic() < deadline, "the forget run never reached its stop"
        time.sleep(0.1)
    return forget


def _wait_for(text: str, log: Path, process: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def _finish_forget(forget: subprocess.Popen[str]) -> str:
    os.kill(forget.pid, signal.SIGCONT)
    out, err = forget.communicate(timeout=120)
    assert forget.returncode == 0, err
    return out


def test_a_crawl_started_while_forget_runs_waits_for_it(tmp_path: Path, site: SandboxProcess) -> None:
    store = tmp_path / "store"
    gallery = {"profile": "sandbox", "start_url": site.url("gallery/")}
    run_crawl("gallery", store=store, args=gallery)
    first = rows(store)
    chosen = sorted(r["page_url"] for r in first)[:2]
    gone = {r["id"] for r in first if r["page_url"].startswith(tuple(chosen))}
    forget = _forget_paused(store, chosen)
    log = tmp_path / "crawl.log"
    crawl: subprocess.Popen[bytes] | None = None
    try:
        before = len(site.requests())
        with log.open("w") as fh:
            args = [arg for key, value in gallery.items() for arg in ("-a", f"{key}={value}")]
            crawl_settings = {**LOOPBACK, "IMAGECRAWL_STORE": str(store)}
            crawl = subprocess.Popen(
                [sys.executable, "-m", "scrapy", "crawl", "gallery", *args, *setting_args(crawl_settings)],
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        _wait_for("A forget run is rewriting this store", log, crawl)
        time.sleep(2)
        assert crawl.poll() is None and len(site.requests()) == before  # it waits, and fetches nothing meanwhile
        assert f"removed {len(gone)} of {len(first)} rows" in _finish_forget(forget)
        assert crawl.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        for process in (forget, crawl):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()
    assert "the crawl starts" in log.read_text()
    after = rows(store)
    assert {r["id"] for r in after} == {r["id"] for r in first} - gone  # the forgotten rows stay gone
    assert len(after) == len({r["image_sha256"] for r in after})  # nothing twice


@pytest.mark.parametrize("machine", ["same", "other"])
def test_a_distributed_crawl_and_forget_take_turns_on_the_store(
    tmp_path: Path, site: SandboxProcess, redis_url: str, machine: str
) -> None:
    """On the same machine the state folder's lock makes them take turns; a worker on another machine
    (its own state folder) meets the forget run in Redis."""
    import redis

    from imagecrawl.distributed.ratelimit import RateConfig, RedisRateLimiter
    from imagecrawl.pacing.sitekey import site_of_url
    from tests.distributed_util import start_worker

    store = tmp_path / "store"
    gallery = {"profile": "sandbox", "start_url": site.url("gallery/")}
    run_crawl("gallery", store=store, args=gallery)
    first = rows(store)
    chosen = sorted(r["page_url"] for r in first)[-2:]
    gone = {r["id"] for r in first if r["page_url"].startswith(tuple(chosen))}
    prefix = f"forget{os.getpid()}{machine}"
    settings = {"IMAGECRAWL_REDIS_URL": redis_url, "IMAGECRAWL_REDIS_PREFIX": prefix, "IMAGECRAWL_STORE": str(store)}
    worker_settings = dict(settings)
    if machine == "other":
        worker_settings["IMAGECRAWL_STATE_DIR"] = str(tmp_path / "other-machine-state")
    limiter = RedisRateLimiter(redis.Redis.from_url(redis_url), prefix, RateConfig(cap=5))
    host = site_of_url(site.base_url)

    # a distributed worker writing into the store: a forget run refuses, one line, exit 3
    limiter.pause(host, 120)  # the worker stays at work (held by the shared gate) until resumed
    worker = start_worker("w1", "gallery", tmp_path / "workers", args=gallery, settings=worker_settings)
    try:
        _wait_for("Shared frontier", worker.log, worker.process)
        done = cli("forget", str(store), "--url-prefix", chosen[0], "--reason", "r", *setting_args(settings))
        assert done.returncode == 3, done.stderr
        assert "is writing into this store now" in done.stderr and done.stderr.strip().count("\n") == 0
        if machine == "other":
            assert "distributed crawl worker " in done.stderr and "-w1-" in done.stderr
    finally:
        worker.process.terminate()
        worker.process.wait(timeout=120)
    limiter.resume(host)

    # a forget run holding the store (with Redis: the workers get its tombstones): a worker waits for it
    forget = _forget_paused(store, chosen, *setting_args(settings))
    try:
        worker = start_worker("w2", "gallery", tmp_path / "workers", args=gallery, settings=worker_settings)
        _wait_for("A forget run is rewriting this store", worker.log, worker.process)
        _finish_forget(forget)
        assert worker.process.wait(timeout=240) == 0, worker.log_text()[-3000:]
    finally:
        for process in (forget, worker.process):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()
    after = rows(store)
    assert {r["id"] for r in after} == {r["id"] for r in first} - gone
    assert len(after) == len({r["image_sha256"] for r in after})


@pytest.mark.parametrize("distributed", [False, True])
def test_the_recheck_spider_forgets_at_close(
    tmp_path: Path, sandbox_factory: SandboxFactory, request: pytest.FixtureRequest, distributed: bool
) -> None:
    """``scrapy crawl recheck``, as Scrapyd runs it: the sites from IMAGECRAWL_STORE, the verdicts and the
    forget run at close, in its log; also as a worker of a distributed crawl (whose frontier opens the
    store: the crawl's own hold on it goes before the forget run takes it)."""
    site = sandbox_factory.start(items=6, seed=11, name=f"recheck-spider-sandbox-{distributed}")
    shared = {}
    if distributed:
        redis_url = request.getfixturevalue("redis_url")
        shared = {"IMAGECRAWL_REDIS_URL": redis_url, "IMAGECRAWL_REDIS_PREFIX": f"recheck{os.getpid()}"}
    store = tmp_path / "store"
    run_crawl("gallery", store=store, args={"profile": "sandbox", "start_url": site.url("gallery/")})
    first = rows(store)
    assert first
    set_robots(site, content_signal="search=yes, ai-train=no")
    try:
        spider = run_crawl("recheck", store=store, settings=shared)
    finally:
        set_robots(site)
    base = site.base_url.rstrip("/")
    assert f"Recheck:   refuses       {base}" in spider.stderr
    assert f"Recheck: removed {len(first)} of {len(first)} rows" in spider.stderr
    assert rows(store) == []
    audit = [json.loads(p.read_text()) for p in (store / ".imagecrawl" / "audit" / "forget").glob("*.json")]
    assert [(a["reason"], a["rows_removed"]) for a in audit] == [("opt-out withdrawn", len(first))]
