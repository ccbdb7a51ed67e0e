"""Throughput benchmark: imagecrawl vs img2dataset vs a bare Scrapy spider, on one static site served by
nginx on loopback, in one run (compare the ratios; the machine is shared and noisy).

    uv run python benchmarks/throughput.py --items 20000

Needs nginx (``apt-get install -y nginx``; a private config on a free loopback port, ``daemon off``)
and, for phase 1, img2dataset 1.47 in its own venv (its pins stay out of the project's lock)::

    uv venv benchmarks/out/i2d-venv && uv pip install --python benchmarks/out/i2d-venv img2dataset==1.47.0

Phases (``--phases`` picks some, default all):

1. ``i2d``: img2dataset on the URL list: Parquet output, resize off, no re-encoding, sha256,
   ``--processes`` processes x 64 threads.
2. ``urls``: ``scrapy crawl urls -a input=urls.parquet -a shard=I/N`` in N = ``--processes`` processes
   writing into one store (full record: bytes, sha256, size, metadata, pHash; dedupe; Parquet).
3. ``bare``: ``benchmarks/bare_spider.py``: plain Scrapy, fetches listing pages, detail pages and images.
4. ``gallery``: ``scrapy crawl gallery`` of the same site: the full pipeline, one process.

Prints images/s, CPU seconds per 1000 images (the crawler's processes and their children; nginx is
not counted), peak RSS (sum over the process tree, sampled every 0.2 s), the CPU the rest of the
machine used meanwhile, and the ratios urls/i2d and gallery/bare. Checks that i2d and urls stored the
same set of sha256s (and that imagecrawl's bytes hash to them). Results also go to
``benchmarks/out/throughput-<time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from static_site import Nginx, Site, build_site, start_nginx  # noqa: E402

OUT = REPO / "benchmarks" / "out"
I2D = OUT / "i2d-venv" / "bin" / "img2dataset"
PYSPY = OUT / "tools-venv" / "bin" / "py-spy"
PHASES = ("i2d", "urls", "bare", "gallery")
#: set by --profile: every phase runs under ``py-spy record`` (collapsed stacks, see profile_summary.py)
PROFILE_DIR: Path | None = None

#: imagecrawl settings for a loopback site we own: politeness caps lifted (the same idea as the tests'
#: LOOPBACK settings), everything else as shipped.
LOOPBACK: dict[str, str] = {
    "DOWNLOAD_DELAY": "0",
    "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
    # the per-site pacing gate (docs/pacing.md) is off: our own loopback server has no rate to find, and
    # with it off DOWNLOAD_DELAY=0 and CONCURRENT_REQUESTS_PER_DOMAIN apply; the caps are also lifted
    # for anyone who turns it back on with -s IMAGECRAWL_PACING_ENABLED=True
    "IMAGECRAWL_PACING_ENABLED": "False",
    "IMAGECRAWL_MAX_RATE_PER_SITE": "1000000",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "64",
    "IMAGECRAWL_PACING_START_RATE_PER_SECOND": "1000000",
    "IMAGECRAWL_PACING_LATENCY_MARGIN_SECONDS": "5",
    "LOG_LEVEL": "INFO",
}


# --- measuring ---------------------------------------------------------------------------------
def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss_bytes(roots: list[int]) -> int:
    tree = _children_of()
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(tree.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def cpu_seconds_of(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def machine_busy_seconds() -> float:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the summed RSS of the process trees under ``roots`` every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.roots: list[int] = []
        self.series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def start(self, roots: list[int]) -> None:
        self.roots = roots
        self._t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.series.append((time.monotonic() - self._t0, tree_rss_bytes(self.roots)))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.series), default=0)


@dataclass
class PhaseResult:
    name: str
    processes: int
    images: int
    pages: int = 0
    rows: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    nginx_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    load_before: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.images if self.images else 0.0

    @property
    def other_cores(self) -> float:
        """Cores the rest of the machine (teammates, not this benchmark) kept busy meanwhile."""
        return self.other_cpu_s / self.wall_s if self.wall_s else 0.0


def run_phase(
    name: str,
    cmds: list[list[str]],
    nginx: Nginx,
    cwd: Path,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> tuple[float, float, float, float, float, float, list[int]]:
    """Run ``cmds`` side by side; returns wall, cpu, peak rss (MB), nginx cpu, other cpu, load, exit codes."""
    nginx_pids = nginx.pids()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, ng0 = machine_busy_seconds(), cpu_seconds_of(nginx_pids)
    load = os.getloadavg()[0]
    sampler = RssSampler()
    logs = []
    t0 = time.monotonic()
    procs = []
    for i, cmd in enumerate(cmds):
        if PROFILE_DIR is not None:
            out = PROFILE_DIR / f"{name}-{i}.pyspy.txt"
            cmd = [str(PYSPY), "record", "--rate", "50", "--format", "raw", "--output", str(out), "--", *cmd]
        log = open((log_dir or cwd) / f"{name}-{i}.log", "wb")  # noqa: SIM115
        logs.append(log)
        procs.append(
            subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        )
    sampler.start([p.pid for p in procs])
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    sampler.stop()
    for log in logs:
        log.close()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ng = cpu_seconds_of(nginx_pids) - ng0
    other = machine_busy_seconds() - busy0 - cpu - ng
    return wall, cpu, sampler.peak / 2**20, ng, max(0.0, other), load, codes


# --- the phases ----------------------------------------------------------------------------------
def write_url_lists(site: Site, base_url: str, work: Path) -> tuple[Path, Path]:
    urls = [base_url + path for path in site.image_paths()]
    parquet = work / "urls.parquet"
    pq.write_table(pa.table({"url": urls}), parquet)
    text = work / "urls.txt"
    text.write_text("\n".join(urls) + "\n")
    return parquet, text


def scrapy_cmd(spider: str, args: dict[str, str], settings: dict[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in args.items():
        cmd += ["-a", f"{key}={value}"]
    for key, value in settings.items():
        cmd += ["-s", f"{key}={value}"]
    return cmd


def store_table(store: Path, columns: list[str]) -> pa.Table:
    from imagecrawl.inspect import dataset_for

    return dataset_for(str(store)).to_table(columns=columns)


def check_store(store: Path) -> dict[str, Any]:
    """Rows, distinct sha256s, and whether every stored image's bytes hash to its sha256 and size."""
    table = store_table(store, ["image_sha256", "image_size_bytes", "image", "image_phash", "prompt"])
    shas = table.column("image_sha256").to_pylist()
    sizes = table.column("image_size_bytes").to_pylist()
    blobs = table.column("image").combine_chunks().field("bytes").to_pylist()
    bad = sum(
        1
        for sha, size, blob in zip(shas, sizes, blobs, strict=True)
        if blob is None or len(blob) != size or hashlib.sha256(blob).hexdigest() != sha
    )
    return {
        "rows": table.num_rows,
        "sha256s": set(shas),
        "bad_bytes": bad,
        "with_phash": table.num_rows - table.column("image_phash").null_count,
        "with_prompt": table.num_rows - table.column("prompt").null_count,
    }


def sum_stats(paths: list[Path]) -> dict[str, int]:
    total: dict[str, int] = {}
    for path in paths:
        if not path.exists():
            continue
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


def phase_i2d(args: argparse.Namespace, nginx: Nginx, work: Path, urls_parquet: Path) -> tuple[PhaseResult, set[str]]:
    if not I2D.exists():
        raise SystemExit(f"img2dataset is not installed at {I2D}; see this script's docstring")
    out = work / "i2d"
    cmd = [
        str(I2D), "--url_list", str(urls_parquet), "--input_format", "parquet", "--url_col", "url",
        "--output_format", "parquet", "--output_folder", str(out),
        "--processes_count", str(args.processes), "--thread_count", str(args.i2d_threads),
        "--resize_mode", "no", "--disable_all_reencoding", "True", "--compute_hash", "sha256",
        "--number_sample_per_shard", str(args.i2d_shard_rows), "--enable_wandb", "False",
        "--retries", "0", "--timeout", "20",
    ]  # fmt: skip
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    wall, cpu, rss, ng, other, load, codes = run_phase("i2d", [cmd], nginx, work, env)
    files = sorted(out.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=["status", "sha256"]) for f in files]) if files else None
    shas: set[str] = set()
    ok = 0
    if table is not None:
        for status, sha in zip(table.column("status").to_pylist(), table.column("sha256").to_pylist(), strict=True):
            if status == "success":
                ok += 1
                shas.add(sha)
    res = PhaseResult(
        "1 img2dataset",
        args.processes,
        ok,
        rows=ok,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss,
        nginx_cpu_s=ng,
        other_cpu_s=other,
        load_before=load,
        extra={"exit": codes},
    )
    return res, shas


def phase_urls(
    args: argparse.Namespace, nginx: Nginx, work: Path, urls_parquet: Path
) -> tuple[PhaseResult, dict[str, Any]]:
    store = work / "store-urls"
    n = args.processes
    stats = [work / f"urls-stats-{i}.json" for i in range(n)]
    cmds = [
        scrapy_cmd(
            "urls",
            {"input": str(urls_parquet), "shard": f"{i}/{n}"},
            {
                **LOOPBACK,
                # img2dataset keeps near-duplicates: so does this phase (pHash and the near-duplicate
                # lookup still run; "keep" only marks them), so both outputs hold the same images
                "IMAGECRAWL_NEAR_POLICY": "keep",
                **args.settings,
                "CONCURRENT_REQUESTS": str(args.concurrency),
                "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
                "IMAGECRAWL_STORE": str(store),
                "IMAGECRAWL_STATS_FILE": str(stats[i]),
            },
        )
        for i in range(n)
    ]
    wall, cpu, rss, ng, other, load, codes = run_phase("urls", cmds, nginx, REPO, log_dir=work)
    total = sum_stats(stats)
    images = total.get("imagecrawl/media/images", 0)
    check = check_store(store)
    res = PhaseResult(
        "2 imagecrawl urls",
        n,
        images,
        rows=check["rows"],
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss,
        nginx_cpu_s=ng,
        other_cpu_s=other,
        load_before=load,
        extra={
            "exit": codes,
            "stats": {k: v for k, v in total.items() if "error" in k or "dropped" in k},
            "bad_bytes": check["bad_bytes"],
            "with_phash": check["with_phash"],
        },
    )
    return res, check


def phase_bare(args: argparse.Namespace, nginx: Nginx, work: Path, start_url: str) -> PhaseResult:
    stats = work / "bare-stats.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bare_spider.py"),
        "--start",
        start_url,
        "--concurrency",
        str(args.concurrency),
        "--concurrent-items",
        str(args.concurrent_items),
        "--stats-file",
        str(stats),
    ]
    if args.loop:
        cmd += ["--loop", args.loop]
    wall, cpu, rss, ng, other, load, codes = run_phase("bare", [cmd], nginx, work)
    total = sum_stats([stats])
    images = total.get("bare/images", 0)
    return PhaseResult(
        "3 bare Scrapy",
        1,
        images,
        pages=total.get("response_received_count", 0) - images,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss,
        nginx_cpu_s=ng,
        other_cpu_s=other,
        load_before=load,
        extra={"exit": codes},
    )


def phase_gallery(
    args: argparse.Namespace, nginx: Nginx, work: Path, start_url: str
) -> tuple[PhaseResult, dict[str, Any]]:
    store = work / "store-gallery"
    stats = work / "gallery-stats.json"
    cmd = scrapy_cmd(
        "gallery",
        {"start_url": start_url},
        {
            **LOOPBACK,
            **args.settings,
            "CONCURRENT_REQUESTS": str(args.concurrency),
            "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
            "IMAGECRAWL_STORE": str(store),
            "IMAGECRAWL_STATS_FILE": str(stats),
        },
    )
    wall, cpu, rss, ng, other, load, codes = run_phase("gallery", [cmd], nginx, REPO, log_dir=work)
    total = sum_stats([stats])
    images = total.get("imagecrawl/media/images", 0)
    check = check_store(store)
    res = PhaseResult(
        "4 imagecrawl gallery",
        1,
        images,
        pages=total.get("response_received_count", 0) - images,
        rows=check["rows"],
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss,
        nginx_cpu_s=ng,
        other_cpu_s=other,
        load_before=load,
        extra={
            "exit": codes,
            "bad_bytes": check["bad_bytes"],
            "with_phash": check["with_phash"],
            "with_prompt": check["with_prompt"],
            "stats": {k: v for k, v in total.items() if "error" in k or "dropped" in k},
        },
    )
    return res, check


# --- report --------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import scrapy

    out = {"python": platform.python_version(), "scrapy": scrapy.__version__, "pyarrow": pa.__version__}
    try:
        nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        out["nginx"] = nginx.split("/", 1)[-1]
    except OSError:
        pass
    if I2D.exists():
        out["img2dataset"] = subprocess.run(
            [str(I2D.with_name("python")), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return out


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def table(results: list[PhaseResult]) -> str:
    lines = [
        "| phase | procs | images | pages | rows | wall s | images/s | CPU s/1000 img | peak RSS MB | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.processes} | {r.images} | {r.pages} | {r.rows} | {r.wall_s:.1f} | {r.images_per_s:.0f} "
            f"| {r.cpu_per_1000:.2f} | {r.peak_rss_mb:.0f} | {r.other_cores:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000, help="gallery entries = images (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for img2dataset and for the urls spider (default: cores)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="CONCURRENT_REQUESTS(_PER_DOMAIN) per process")
    parser.add_argument("--concurrent-items", type=int, default=8, help="CONCURRENT_ITEMS of the bare spider")
    parser.add_argument("--loop", default=None, help="ASYNCIO_EVENT_LOOP for the Scrapy phases, e.g. uvloop.Loop")
    parser.add_argument("--i2d-threads", type=int, default=64)
    parser.add_argument("--i2d-shard-rows", type=int, default=2500, help="img2dataset --number_sample_per_shard")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra Scrapy setting for the imagecrawl phases (repeatable)",
    )
    parser.add_argument("--profile", action="store_true", help="run each phase under py-spy (slower; for profiles)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new dir under benchmarks/out/")
    args = parser.parse_args(argv)
    args.settings = dict(item.split("=", 1) for item in args.set)
    if args.loop:
        args.settings["ASYNCIO_EVENT_LOOP"] = args.loop
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for p in phases:
        if p not in PHASES:
            parser.error(f"unknown phase {p!r}")

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"throughput-{stamp}-", dir=OUT))
    work.mkdir(parents=True, exist_ok=True)
    if args.profile:
        global PROFILE_DIR
        PROFILE_DIR = work
    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    print(f"versions: {versions()}", flush=True)
    site = build_site(OUT / f"site-{args.items}-{args.seed}", args.items, args.seed)
    nginx = start_nginx(site.root, work / "nginx", workers=args.nginx_workers)
    results: list[PhaseResult] = []
    checks: dict[str, Any] = {}
    try:
        urls_parquet, _ = write_url_lists(site, nginx.base_url, work)
        start_url = f"{nginx.base_url}/gallery/page/1.html"
        i2d_shas: set[str] | None = None
        urls_check: dict[str, Any] | None = None
        gallery_check: dict[str, Any] | None = None
        for p in phases:
            print(f"--- phase {p} (load average {os.getloadavg()[0]:.2f})", flush=True)
            if p == "i2d":
                res, i2d_shas = phase_i2d(args, nginx, work, urls_parquet)
            elif p == "urls":
                res, urls_check = phase_urls(args, nginx, work, urls_parquet)
            elif p == "bare":
                res = phase_bare(args, nginx, work, start_url)
            else:
                res, gallery_check = phase_gallery(args, nginx, work, start_url)
            results.append(res)
            print(
                f"    {res.name}: {res.images} images in {res.wall_s:.1f} s = {res.images_per_s:.0f}/s; "
                f"CPU {res.cpu_s:.1f} s ({res.cpu_per_1000:.2f} s/1000); peak RSS {res.peak_rss_mb:.0f} MB; "
                f"other load {res.other_cores:.2f} cores; {res.extra}",
                flush=True,
            )
        if i2d_shas is not None and urls_check is not None:
            checks["i2d_vs_urls_same_sha256_set"] = i2d_shas == urls_check["sha256s"]
            checks["i2d_distinct_sha256"] = len(i2d_shas)
            checks["urls_distinct_sha256"] = len(urls_check["sha256s"])
        if urls_check is not None and gallery_check is not None:
            # the gallery phase drops near-duplicates (the default policy); the urls phase keeps them
            checks["gallery_sha256s_subset_of_urls"] = gallery_check["sha256s"] <= urls_check["sha256s"]
            checks["gallery_distinct_sha256"] = len(gallery_check["sha256s"])
    finally:
        nginx.stop()

    by = {r.name.split()[0]: r for r in results}
    ratios: dict[str, float] = {}
    if "1" in by and "2" in by and by["1"].images_per_s:
        ratios["urls / img2dataset (images/s)"] = by["2"].images_per_s / by["1"].images_per_s
    if "3" in by and "4" in by and by["3"].images_per_s:
        ratios["gallery / bare (images/s)"] = by["4"].images_per_s / by["3"].images_per_s
    print()
    print(table(results))
    print()
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")
    for name, value in checks.items():
        print(f"check {name}: {value}")
    report = {
        "when": stamp,
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(["uv run python benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "results": [
            {**asdict(r), "images_per_s": r.images_per_s, "cpu_per_1000": r.cpu_per_1000, "other_cores": r.other_cores}
            for r in results
        ],
        "ratios": ratios,
        "checks": checks,
    }
    path = OUT / f"throughput-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nresults: {path}; work dir: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
