"""Broad-crawl benchmark: a URL list over many sites, each at its own hidden pace, some of them dead.

    uv run python -m benchmarks.broad                          # 40 sites, 3000 images
    uv run python -m benchmarks.broad --sites 1000 --images 20000
    uv run python -m benchmarks.broad --sites 8 --images 200 --silent 1 --refused 1 --only imagecrawl  # smoke
    uv run python -m benchmarks.broad --only imagecrawl-redis --workers 2   # the distributed crawl

N sites listen on loopback aliases (127.<a>.<b>.<c>, one asyncio process: ``broad_sites.py``); each has
a hidden capacity (a strict token bucket: 429 + ``Retry-After`` past it, burst = capacity) drawn from
``--capacity`` and a latency drawn from ``--latency``. The list (CSV ``url,caption``) is grouped by site,
as real lists are; its images are spread over the sites by capacity, so that the ideal time (every site
busy at its own pace: the most ``images / capacity`` over the sites) is about the same for all sites.
``--refused`` sites refuse connections, ``--silent`` sites accept them and never answer; their URLs sit
in the list among the live ones.

Crawlers, one after the other, each against fresh sites (``--only`` picks):

* ``imagecrawl``: ``scrapy crawl urls`` with the caps of issue 21 (``IMAGECRAWL_MAX_RATE_PER_SITE=10``,
  ``IMAGECRAWL_MAX_CONCURRENCY_PER_SITE=4``, ``CONCURRENT_REQUESTS=128``), writing a store;
* ``scrapy``: bare Scrapy (``bare_spider.py``) with AutoThrottle and ``DownloaderAwarePriorityQueue``,
  ``CONCURRENT_REQUESTS=128``, ``CONCURRENT_REQUESTS_PER_DOMAIN=4``;
* ``imagecrawl-redis`` (only when named): ``--workers`` such crawls at once, one shared Redis frontier
  (Debian's ``redis-server`` on loopback); peak RSS of the largest worker, CPU summed over them;
* ``img2dataset``: from a venv of its own (``--img2dataset-venv``, made with ``uv venv`` and
  ``uv pip install img2dataset`` when missing); skipped with a note when it cannot be installed.

Per run, from the sites' own request log: ideal time; live time (first request to the last image a live
site served); efficiency = ideal time of the images it fetched / live time; the share of 429s; requests
inside a Retry-After window (arrived after the 429 that announced it left); the time the dead sites add
(the end of the crawl process after the last live image); images stored (imagecrawl: rows in the store;
Scrapy: images fetched; img2dataset: successes); the crawl process's peak RSS and CPU seconds per image
(``wait4``). Goals of issue 21: efficiency >= 0.8, <= 3 % 429s, 0 inside Retry-After, every live image
stored, dead sites <= 30 s. The machine should be quiet (the load average is printed); loopback only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, check_load
from tests.crawlers import setting_text
from tests.sandbox.misbehave import requests_inside_windows

HERE = Path(__file__).resolve().parent

#: the caps of issue 21, for every crawler that has them
ISSUE_CAPS = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": "10",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "4",
    "CONCURRENT_REQUESTS": "128",
}
CRAWLERS = ("imagecrawl", "scrapy", "img2dataset", "imagecrawl-redis")
#: run when --only is not given (imagecrawl-redis: the distributed crawl, asked for by name)
DEFAULT_CRAWLERS = ("imagecrawl", "scrapy", "img2dataset")
EFFICIENCY_GOAL, SHARE_429_GOAL, DEAD_GOAL = 0.8, 0.03, 30.0
#: what an exit status says in the table (4: imagecrawl stored nothing new)
NOTES = {0: "", 4: "", -9: "killed at --limit (images: served to it)"}


@dataclass(frozen=True)
class SiteSpec:
    host: str
    port: int
    kind: str  # live, silent, refused
    capacity: float
    latency: float
    images: int
    #: seconds, stated in robots.txt (``--crawl-delay``: 1 / capacity, rounded up to the millisecond)
    crawl_delay: float | None = None

    def url(self, n: int) -> str:
        return f"http://{self.host}:{self.port}/img/{n}.png"

    def as_json(self, retry_after: int) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "kind": self.kind,
            "capacity": self.capacity,
            "burst": self.capacity,
            "latency": self.latency,
            "retry_after": retry_after,
            "crawl_delay": self.crawl_delay,
        }


def free_port(hosts: list[str]) -> int:
    """A port free on every host of ``hosts`` (checked by binding each)."""
    for _ in range(50):
        port = random.randrange(20000, 60000)
        socks = []
        try:
            for host in hosts:
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise SystemExit("no port free on every loopback alias")


def plan(args: argparse.Namespace) -> list[SiteSpec]:
    """The sites: live ones with their capacity, latency and images, then the dead ones, shuffled."""
    rng = random.Random(args.seed)
    n_dead = args.silent + args.refused
    total = args.sites + n_dead
    prefix = rng.randrange(64, 250)
    hosts = [f"127.{prefix}.{i // 250}.{i % 250 + 1}" for i in range(total)]
    port = free_port(hosts)
    lo, hi = args.capacity
    # tenths of a request per second, or thousandths for sites slower than one a second
    caps = [max(0.001, round(rng.uniform(lo, hi), 1 if lo >= 1 else 3)) for _ in range(args.sites)]
    weights = [c * rng.uniform(0.3, 1.0) for c in caps]
    scale = args.images / sum(weights)
    images = [max(1, round(w * scale)) for w in weights]
    sites = [
        SiteSpec(
            hosts[i],
            port,
            "live",
            caps[i],
            round(rng.uniform(*args.latency), 3),
            images[i],
            math.ceil(1000 / caps[i]) / 1000 if args.crawl_delay else None,
        )
        for i in range(args.sites)
    ]
    kinds = ["silent"] * args.silent + ["refused"] * args.refused
    sites += [SiteSpec(hosts[args.sites + i], port, k, 0, 0, args.dead_images) for i, k in enumerate(kinds)]
    rng.shuffle(sites)
    return sites


def write_list(sites: list[SiteSpec], path: Path) -> int:
    """The URL list, grouped by site; returns its rows."""
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        for site in sites:
            for n in range(site.images):
                writer.writerow([site.url(n), f"image {n} of {site.host}"])
                rows += 1
    return rows


def start_sites(sites: list[SiteSpec], args: argparse.Namespace, workdir: Path, name: str) -> tuple[Any, Path]:
    spec_path, log_path = workdir / "sites.json", workdir / f"{name}.requests.jsonl"
    spec_path.write_text(json.dumps([s.as_json(args.retry_after) for s in sites]))
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "broad_sites.py"), str(spec_path), str(log_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("the sites did not start")
    return proc, log_path


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Run:
    exit: int
    started: float  # unix time
    ended: float
    rss_mb: float
    cpu: float
    stored: int
    note: str = ""


def run_process(cmd: list[str], env: dict[str, str] | None, limit: float, log: Path) -> tuple[int, float, float, Any]:
    """Run ``cmd`` (killed after ``limit`` s); exit status, start and end (unix time) and its rusage."""
    started = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + limit
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(proc.pid, 9)
            pid, status, usage = os.wait4(proc.pid, 0)
            print(f"  killed after {limit:g} s (--limit)", file=sys.stderr)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, started, time.time(), usage


def run_imagecrawl(list_path: Path, workdir: Path, args: argparse.Namespace) -> Run:
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={list_path}"]
    settings = {
        **ISSUE_CAPS,
        "IMAGECRAWL_STORE": str(store),
        "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_LEVEL": "INFO",
        **dict(s.split("=", 1) for s in args.set),
    }
    for key, value in settings.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
    code, started, ended, usage = run_process(cmd, None, args.limit, workdir / "imagecrawl.log")
    import pyarrow.parquet as pq

    stored = sum(pq.read_metadata(p).num_rows for p in store.glob("*/date=*/*.parquet"))
    return Run(code, started, ended, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stored)


def run_imagecrawl_redis(list_path: Path, workdir: Path, args: argparse.Namespace) -> Run:
    """``--workers`` ``scrapy crawl urls`` processes at once, sharing one frontier in a redis-server of
    their own (Debian's, on a free loopback port): peak RSS is the largest worker's, CPU their sum."""
    exe = shutil.which("redis-server")
    if exe is None:
        return Run(-1, time.time(), time.time(), 0.0, 0.0, 0, "redis-server is not installed")
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    redis_dir = workdir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(["127.0.0.1"])
    server = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    return Run(-1, time.time(), time.time(), 0.0, 0.0, 0, "redis-server did not start")
                time.sleep(0.05)
        settings = {
            **ISSUE_CAPS,
            "IMAGECRAWL_STORE": str(store),
            "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
            "IMAGECRAWL_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "IMAGECRAWL_REDIS_PREFIX": f"broad{os.getpid()}",
            "LOG_LEVEL": "INFO",
            **dict(s.split("=", 1) for s in args.set),
        }
        procs = []
        started = time.time()
        for n in range(args.workers):
            cmd = [sys.executable, "-m", "scrapy", "crawl", "urls", "-a", f"input={list_path}"]
            # the contact is in the User-Agent: the sites' request log says which worker sent what
            worker = {"IMAGECRAWL_WORKER_ID": f"w{n}", "IMAGECRAWL_CONTACT": f"benchmark-worker-w{n}"}
            for key, value in {**settings, **worker}.items():
                cmd += ["-s", f"{key}={value}"]
            with open(workdir / f"imagecrawl-redis-w{n}.log", "w") as err:
                procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT))
        limit_at = time.monotonic() + args.limit
        codes: dict[int, int] = {}
        rss = cpu = 0.0
        while len(codes) < len(procs):
            for proc in procs:
                if proc.pid in codes:
                    continue
                if time.monotonic() > limit_at:
                    os.kill(proc.pid, 9)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    codes[pid] = os.waitstatus_to_exitcode(status)
                    rss = max(rss, usage.ru_maxrss / 1024)
                    cpu += usage.ru_utime + usage.ru_stime
            time.sleep(0.1)
        ended = time.time()
    finally:
        stop(server)
    import pyarrow.parquet as pq

    stored = sum(pq.read_metadata(p).num_rows for p in store.glob("*/date=*/*.parquet"))
    worst = next((c for c in codes.values() if c not in (0, 4)), 0)
    return Run(worst, started, ended, rss, cpu, stored, f"{args.workers} workers, one Redis")


def run_scrapy(list_path: Path, workdir: Path, args: argparse.Namespace) -> Run:
    urls = workdir / "urls.txt"
    with open(list_path, encoding="utf-8") as fh:
        urls.write_text("".join(row["url"] + "\n" for row in csv.DictReader(fh)))
    stats = workdir / "scrapy.stats.json"
    cmd = [sys.executable, str(HERE / "bare_spider.py"), "--urls", str(urls), "--concurrency", "128"]
    cmd += ["--stats-file", str(stats), "--log-level", "INFO"]
    for setting in (
        "CONCURRENT_REQUESTS_PER_DOMAIN=4",
        "AUTOTHROTTLE_ENABLED=True",
        "SCHEDULER_PRIORITY_QUEUE=scrapy.pqueues.DownloaderAwarePriorityQueue",
    ):
        cmd += ["-s", setting]
    code, started, ended, usage = run_process(cmd, None, args.limit, workdir / "scrapy.log")
    data = json.loads(stats.read_text()) if stats.exists() else {}
    return Run(
        code, started, ended, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, data.get("bare/images", 0)
    )


def img2dataset_python(venv: Path) -> Path | None:
    """The venv's python with img2dataset installed (made when missing), or None (a note is printed)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import img2dataset"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv")
    if uv is None:
        print("NOTE: img2dataset skipped: uv is not on PATH", file=sys.stderr)
        return None
    made = subprocess.run([uv, "venv", "-q", str(venv)], capture_output=True, text=True)
    install = made.returncode == 0 and subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "img2dataset"], capture_output=True, text=True
    )
    if not install or install.returncode != 0:
        detail = (made.stderr or (install.stderr if install else "")).strip().splitlines()[-1:]
        print(f"NOTE: img2dataset skipped: cannot install it ({' '.join(detail)})", file=sys.stderr)
        return None
    return python


def run_img2dataset(python: Path, list_path: Path, workdir: Path, args: argparse.Namespace) -> Run:
    out = workdir / "img2dataset"
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import sys; from img2dataset import download; download("
        f"url_list={str(list_path)!r}, input_format='csv', url_col='url', caption_col='caption', "
        f"output_folder={str(out)!r}, output_format='parquet', processes_count=2, thread_count=64, "
        "resize_mode='no', retries=2, disallowed_header_directives=[], timeout=10, enable_wandb=False)"
    )
    started_run = run_process([str(python), "-c", code], None, args.limit, workdir / "img2dataset.log")
    rc, started, ended, usage = started_run
    stored = 0
    for stats_file in out.glob("*_stats.json"):
        stored += int(json.loads(stats_file.read_text()).get("successes", 0))
    return Run(rc, started, ended, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stored)


@dataclass
class Row:
    name: str
    ideal: float
    live: float
    efficiency: float
    share_429: float
    inside: int
    dead_added: float
    stored: int
    expected: int
    rss_mb: float
    cpu_ms_per_image: float
    wall: float
    note: str


def by_worker(log_path: Path) -> str:
    """For a distributed crawl: each worker's requests and 429s, and how many 429s answered a request
    sent within a second after another worker's request to the site (the workers' pacing not being one)."""
    records = sorted(
        (json.loads(line) for line in log_path.read_text().splitlines() if line.strip()), key=lambda r: r["t"]
    )
    worker = {r["ua"]: r["ua"].rsplit("benchmark-worker-", 1)[-1].rstrip(")") for r in records if r.get("ua")}
    sent: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    after_other = 0
    last: dict[str, tuple[float, str]] = {}
    for r in records:
        w = worker.get(r.get("ua", ""), "?")
        sent[w] += 1
        if r["status"] == 429:
            throttled[w] += 1
            prev = last.get(r["host"])
            if prev is not None and prev[1] != w and r["t"] - prev[0] < 1.0:
                after_other += 1
        last[r["host"]] = (r["t"], w)
    per = ", ".join(f"{w}: {sent[w]} requests, {throttled[w]} 429s" for w in sorted(sent))
    return f"{per}; 429s within 1 s after another worker's request to the site: {after_other}"


def measure(name: str, sites: list[SiteSpec], log_path: Path, run: Run) -> Row:
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    live_sites = [s for s in sites if s.kind == "live"]
    ideal = max(s.images / s.capacity for s in live_sites)
    images_ok = [r for r in records if r["status"] == 200 and r["path"].startswith("/img/")]
    first = min((r["t"] for r in records), default=run.started)
    last_live = max((r["t"] + r["dur"] for r in images_ok), default=first)
    live = max(1e-9, last_live - first)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_host.setdefault(r["host"], []).append(r)
    inside = sum(requests_inside_windows(rs) for rs in by_host.values())
    # the efficiency of what was fetched: a crawler that gave up on images is not faster for it
    served = {s.host: len({r["path"] for r in images_ok if r["host"] == s.host}) for s in live_sites}
    ideal_served = max(served[s.host] / s.capacity for s in live_sites)
    return Row(
        name=name,
        ideal=ideal,
        live=live,
        efficiency=ideal_served / live,
        share_429=sum(r["status"] == 429 for r in records) / max(1, len(records)),
        inside=inside,
        dead_added=max(0.0, run.ended - last_live),
        # a crawl killed at --limit may not have written what it stored: count what the sites served it
        stored=run.stored if run.exit != -9 else max(run.stored, len({(r["host"], r["path"]) for r in images_ok})),
        expected=sum(s.images for s in live_sites),
        rss_mb=run.rss_mb,
        cpu_ms_per_image=1000 * run.cpu / max(1, run.stored),
        wall=run.ended - run.started,
        note=run.note or NOTES.get(run.exit, f"exit {run.exit}"),
    )


def table(rows: list[Row], sites: list[SiteSpec], args: argparse.Namespace) -> str:
    live = [s for s in sites if s.kind == "live"]
    load = os.getloadavg()[0]
    head = (
        f"{len(live)} live sites (capacity {args.capacity[0]:g}-{args.capacity[1]:g} req/s, burst = capacity, "
        f"{'stated as Crawl-delay, ' if args.crawl_delay else ''}Retry-After {args.retry_after} s; "
        f"latency {args.latency[0] * 1000:.0f}-{args.latency[1] * 1000:.0f} ms), "
        f"{args.silent} silent and {args.refused} refusing sites; {sum(s.images for s in live)} live images, "
        f"list grouped by site; seed {args.seed}; load average at the end {load:.2f}.\n\n"
    )
    lines = [
        "| crawler | ideal s | live work s | efficiency | 429s | inside Retry-After | dead sites add s "
        "| images stored | peak RSS MB | CPU ms / image | wall s | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.ideal:.1f} | {r.live:.1f} | {r.efficiency:.2f} | {100 * r.share_429:.1f}% | {r.inside} "
            f"| {r.dead_added:.1f} | {r.stored}/{r.expected} | {r.rss_mb:.0f} | {r.cpu_ms_per_image:.1f} "
            f"| {r.wall:.1f} | {r.note} |"
        )
    goals = [
        (f"efficiency >= {EFFICIENCY_GOAL:g}", lambda r: r.efficiency >= EFFICIENCY_GOAL),
        (f"429s <= {100 * SHARE_429_GOAL:g}%", lambda r: r.share_429 <= SHARE_429_GOAL),
        ("0 inside Retry-After", lambda r: r.inside == 0),
        ("every live image", lambda r: r.stored >= r.expected),
        (f"dead sites <= {DEAD_GOAL:g} s", lambda r: r.dead_added <= DEAD_GOAL),
    ]
    lines += ["", "| crawler | " + " | ".join(g for g, _ in goals) + " |", "|---|" + ":---:|" * len(goals)]
    for r in rows:
        lines.append(f"| {r.name} | " + " | ".join("PASS" if ok(r) else "FAIL" for _, ok in goals) + " |")
    return head + "\n".join(lines) + "\n"


def pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    a, b = float(lo), float(hi or lo)
    if not 0 < a <= b:
        raise argparse.ArgumentTypeError("need 0 < LOW <= HIGH")
    return a, b


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=40, help="live sites (default 40)")
    p.add_argument("--images", type=int, default=3000, help="live images in the list, over all sites")
    p.add_argument("--capacity", type=pair, default=(1.0, 8.0), metavar="LOW,HIGH", help="req/s (default 1,8)")
    p.add_argument("--latency", type=pair, default=(0.03, 0.3), metavar="LOW,HIGH", help="s (default 0.03,0.3)")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of every 429, s")
    p.add_argument(
        "--crawl-delay",
        action="store_true",
        help="live sites state their capacity in robots.txt (Crawl-delay: 1 / capacity), as slow sites do",
    )
    p.add_argument("--silent", type=int, default=2, help="sites that accept connections and never answer")
    p.add_argument("--refused", type=int, default=2, help="sites that refuse connections")
    p.add_argument("--dead-images", type=int, default=20, help="URLs of each dead site in the list")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--only", choices=CRAWLERS, action="append", help="run only these crawlers")
    p.add_argument("--limit", type=float, default=900.0, help="kill a crawl after this many seconds")
    p.add_argument("--workers", type=int, default=2, help="imagecrawl-redis: workers sharing one Redis frontier")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting for imagecrawl")
    p.add_argument("--img2dataset-venv", type=Path, default=Path(tempfile.gettempdir()) / "imagecrawl-img2dataset")
    p.add_argument("--keep", type=Path, default=None, help="keep the list, logs and request logs here")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.sites < 1 or args.images < args.sites or min(args.silent, args.refused, args.dead_images) < 0:
        p.error("need --sites >= 1, --images >= --sites and no negative counts")
    if args.sites + args.silent + args.refused > 250 * 250:
        p.error("at most 62500 sites")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if any("=" not in s for s in args.set):
        p.error("--set takes NAME=VALUE")
    sites = plan(args)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="imagecrawl-broad-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        list_path = workdir / "list.csv"
        n = write_list(sites, list_path)
        print(f"list: {n} rows over {len(sites)} sites ({list_path})", file=sys.stderr)
        for name in args.only or DEFAULT_CRAWLERS:
            python = None
            if name == "img2dataset":
                python = img2dataset_python(args.img2dataset_venv)
                if python is None:
                    continue
            check_load(name)
            server, log_path = start_sites(sites, args, workdir, name)
            try:
                if name == "imagecrawl":
                    run = run_imagecrawl(list_path, workdir, args)
                elif name == "imagecrawl-redis":
                    run = run_imagecrawl_redis(list_path, workdir, args)
                elif name == "scrapy":
                    run = run_scrapy(list_path, workdir, args)
                else:
                    assert python is not None
                    run = run_img2dataset(python, list_path, workdir, args)
            finally:
                stop(server)
            rows.append(measure(name, sites, log_path, run))
            r = rows[-1]
            print(
                f"  -> efficiency {r.efficiency:.2f}, 429s {100 * r.share_429:.1f}%, stored {r.stored}/{r.expected}, "
                f"wall {r.wall:.0f} s",
                file=sys.stderr,
            )
            if name == "imagecrawl-redis":
                print(f"  -> by worker: {by_worker(log_path)}", file=sys.stderr)
    print(table(rows, sites, args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
