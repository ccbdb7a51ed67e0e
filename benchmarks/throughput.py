"""Throughput benchmark: imagecrawl against a bare Scrapy spider (and img2dataset) on one static site
served by nginx on loopback, with an ablation of imagecrawl's own components, in one run: compare the
ratios, taken within each round, not absolute figures.

    uv run python -m benchmarks.throughput --items 6000 --repeats 3

Needs nginx (``apt-get install -y nginx``; a private config on a free loopback port, ``daemon off``)
and, for the ``i2d`` phase, img2dataset 1.47 in its own venv (its pins stay out of the project's lock)::

    uv venv benchmarks/out/i2d-venv && uv pip install --python benchmarks/out/i2d-venv img2dataset==1.47.0

Every imagecrawl phase runs with the politeness caps lifted as a user would for a site they own
(``CAPS_LIFTED``: pacing *on*, cap 100000 req/s, 64 per site, no robots.txt), start-up included.
Phases (``--phases`` picks some; default: all but ``i2d`` unless img2dataset is installed):

* ``bare-urls``: ``benchmarks/bare_spider.py --urls``: plain Scrapy 2.19, fetch, sha256, one Parquet
  write at close, ``CONCURRENT_ITEMS=1``; ``--processes`` processes, each a shard of the URL list.
* ``urls``: ``scrapy crawl urls -a shard=I/N`` as shipped (full record: bytes, sha256, size, metadata,
  pHash, opt-outs, dedupe ledger, Parquet shards); then the ablation, one component off in turn:
  ``urls-nopacing``, ``urls-nonear`` (near-duplicate index), ``urls-nodedupe`` (ledger and known-image
  skip), ``urls-nooptout``, ``urls-nomonitor`` (progress line, report), ``urls-nothreads``
  (record building on the reactor thread), ``urls-allthreads`` (every record on a media thread, small
  images too: ``media_inline_max_bytes`` 0), and ``urls-lean`` (all of these off, ``CONCURRENT_ITEMS=1``).
* ``i2d``: img2dataset on the URL list (Parquet, resize off, no re-encoding, sha256).
* ``bare``: the bare spider on the gallery (listing, detail and image pages), one process.
* ``gallery``: ``scrapy crawl gallery`` of the same site: the full pipeline, one process.

Phases are interleaved: each of ``--repeats`` rounds runs every phase once, and the figures reported
are medians over the rounds, the ratios being taken inside each round (so a slower round counts for
both sides). Before every phase the script idles 2 s and prints the load average and the cores the
machine kept busy meanwhile, with a warning when that is above 0.5 (the 1-minute load average still
remembers the previous phase; the 2 s figure does not): a benchmark run beside a test suite measures
the test suite. CPU seconds are the crawlers' processes and their children (nginx is not counted);
peak RSS is summed over the process tree, sampled every 0.2 s. The .pyc files are written before the
first phase (``compile_bytecode``) and the phases run with bytecode caching on whatever
``PYTHONDONTWRITEBYTECODE`` says, so no phase pays for compiling its imports. Checks that the bare spider, imagecrawl
and img2dataset stored the same set of sha256s. Results also go to
``benchmarks/out/throughput-<time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import REPO
from tests.crawlers import setting_text
from tests.static_site import Nginx, Site, build_site, start_nginx

OUT = REPO / "benchmarks" / "out"
I2D = OUT / "i2d-venv" / "bin" / "img2dataset"
PYSPY = OUT / "tools-venv" / "bin" / "py-spy"
#: imagecrawl's phases on the URL list: the component ablation (settings on top of CAPS_LIFTED)
URL_PHASES: dict[str, dict[str, str]] = {
    "urls": {},
    "urls-nopacing": {"IMAGECRAWL_PACING_ENABLED": "False"},
    "urls-nonear": {"IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False"},
    "urls-nodedupe": {"IMAGECRAWL_DEDUPE_ENABLED": "False", "IMAGECRAWL_SKIP_KNOWN_IMAGES": "False"},
    "urls-nooptout": {"IMAGECRAWL_OPTOUT_ENABLED": "False"},
    "urls-nomonitor": {"IMAGECRAWL_REPORT_ENABLED": "False", "IMAGECRAWL_TUNING": {"progress_enabled": "False"}},
    "urls-nothreads": {"IMAGECRAWL_MEDIA_THREADS": "0"},
    "urls-allthreads": {"IMAGECRAWL_TUNING": {"media_inline_max_bytes": "0"}},
    "urls-lean": {
        "IMAGECRAWL_PACING_ENABLED": "False",
        "IMAGECRAWL_NEAR_DEDUPE_ENABLED": "False",
        "IMAGECRAWL_DEDUPE_ENABLED": "False",
        "IMAGECRAWL_SKIP_KNOWN_IMAGES": "False",
        "IMAGECRAWL_OPTOUT_ENABLED": "False",
        "IMAGECRAWL_REPORT_ENABLED": "False",
        "CONCURRENT_ITEMS": "1",
        "IMAGECRAWL_TUNING": {"progress_enabled": "False"},
    },
}
PHASES = ("i2d", "bare-urls", *URL_PHASES, "bare", "gallery")
#: set by --profile: every phase runs under ``py-spy record`` (collapsed stacks, see profile_summary.py)
PROFILE_DIR: Path | None = None

#: imagecrawl settings for a loopback site we own: the politeness caps lifted as a user would for their
#: own site (the pacing gate stays on and finds the rate itself), everything else as shipped.
CAPS_LIFTED: dict[str, str] = {
    "IMAGECRAWL_MAX_RATE_PER_SITE": "100000",
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "64",
    "CONCURRENT_REQUESTS": "64",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "64",
    "DOWNLOAD_DELAY": "0",
    "ROBOTSTXT_OBEY": "False",
    "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LOG_LEVEL": "INFO",
}
#: above this load average the machine is not quiet: the figures measure the neighbours
QUIET_LOAD = 0.5


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


def busy_cores(seconds: float = 2.0) -> float:
    """Cores the machine kept busy over the next ``seconds`` (this script idle meanwhile): unlike the
    load average, not a minute's memory of the previous phase."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


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
    # Bytecode caching on, as in an installed package: with PYTHONDONTWRITEBYTECODE set every phase would
    # compile every module it imports again (about 1 s of CPU per process, charged to the images).
    phase_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for i, cmd in enumerate(cmds):
        cmd_of_phase = cmd
        if PROFILE_DIR is not None:
            out = PROFILE_DIR / f"{name}-{i}.pyspy.txt"
            cmd = [str(PYSPY), "record", "--rate", "200", "--subprocesses", "--format", "raw", "--output", str(out)]
            cmd += ["--", *cmd_of_phase]
        log = open((log_dir or cwd) / f"{name}-{i}.log", "wb")  # noqa: SIM115
        logs.append(log)
        procs.append(
            subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**phase_env, **(env or {})})
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


def compile_bytecode() -> None:
    """Write the .pyc files of the project and its environment once, outside the measurement: every
    phase then starts as an installed package does (``compileall`` writes them even under
    ``PYTHONDONTWRITEBYTECODE``, which the phases' own environment also drops)."""
    paths = [str(REPO / name) for name in ("imagecrawl", "spiders", "benchmarks")]
    paths.append(sysconfig.get_paths()["purelib"])
    subprocess.run([sys.executable, "-m", "compileall", "-q", *paths], stdout=subprocess.DEVNULL, check=False)


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
        cmd += ["-a", f"{key}={setting_text(value)}"]
    for key, value in settings.items():
        cmd += ["-s", f"{key}={setting_text(value)}"]
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


def result(name: str, procs: int, images: int, measured: tuple[Any, ...], **kw: Any) -> PhaseResult:
    wall, cpu, rss, ng, other, load, codes = measured
    extra = {"exit": codes, **kw.pop("extra", {})}
    return PhaseResult(
        name,
        procs,
        images,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=rss,
        nginx_cpu_s=ng,
        other_cpu_s=other,
        load_before=load,
        extra=extra,
        **kw,
    )


def phase_i2d(args: argparse.Namespace, nginx: Nginx, work: Path, urls_parquet: Path) -> tuple[PhaseResult, set[str]]:
    out = work / "i2d"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(I2D), "--url_list", str(urls_parquet), "--input_format", "parquet", "--url_col", "url",
        "--output_format", "parquet", "--output_folder", str(out),
        "--processes_count", str(args.processes), "--thread_count", str(args.i2d_threads),
        "--resize_mode", "no", "--disable_all_reencoding", "True", "--compute_hash", "sha256",
        "--number_sample_per_shard", str(args.i2d_shard_rows), "--enable_wandb", "False",
        "--retries", "0", "--timeout", "20",
    ]  # fmt: skip
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    measured = run_phase("i2d", [cmd], nginx, work, env)
    files = sorted(out.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=["status", "sha256"]) for f in files]) if files else None
    shas: set[str] = set()
    ok = 0
    if table is not None:
        for status, sha in zip(table.column("status").to_pylist(), table.column("sha256").to_pylist(), strict=True):
            if status == "success":
                ok += 1
                shas.add(sha)
    return result("i2d", args.processes, ok, measured, rows=ok), shas


def phase_bare_urls(args: argparse.Namespace, nginx: Nginx, work: Path, urls_txt: Path) -> tuple[PhaseResult, set[str]]:
    n = args.processes
    outs = [work / f"bare-urls-{i}.parquet" for i in range(n)]
    stats = [work / f"bare-urls-stats-{i}.json" for i in range(n)]
    cmds = []
    for i in range(n):
        cmd = [sys.executable, str(REPO / "benchmarks" / "bare_spider.py"), "--urls", str(urls_txt)]
        cmd += ["--shard", f"{i}/{n}", "--output", str(outs[i]), "--stats-file", str(stats[i])]
        cmd += ["--concurrency", str(args.concurrency), "--concurrent-items", "1"]
        if args.loop:
            cmd += ["--loop", args.loop]
        cmds.append(cmd)
    measured = run_phase("bare-urls", cmds, nginx, work)
    shas: set[str] = set()
    for out in outs:
        if out.exists():
            shas.update(pq.read_table(out, columns=["sha256"]).column("sha256").to_pylist())
            out.unlink()
    images = sum_stats(stats).get("bare/images", 0)
    return result("bare-urls", n, images, measured, rows=len(shas)), shas


def phase_urls(
    name: str, args: argparse.Namespace, nginx: Nginx, work: Path, urls_parquet: Path
) -> tuple[PhaseResult, dict[str, Any]]:
    store = work / f"store-{name}"
    shutil.rmtree(store, ignore_errors=True)
    n = args.processes
    stats = [work / f"{name}-stats-{i}.json" for i in range(n)]
    settings = {
        **CAPS_LIFTED,
        # img2dataset and the bare spider keep near-duplicates: so does this phase (pHash and the
        # near-duplicate lookup still run; "keep" only marks them), so all outputs hold the same images
        "IMAGECRAWL_NEAR_POLICY": "keep",
        **URL_PHASES[name],
        **args.settings,
        "CONCURRENT_REQUESTS": str(args.concurrency),
        "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
        "IMAGECRAWL_STORE": str(store),
    }
    cmds = [
        scrapy_cmd(
            "urls",
            {"input": str(urls_parquet), "shard": f"{i}/{n}"},
            {**settings, "IMAGECRAWL_STATS_FILE": str(stats[i])},
        )
        for i in range(n)
    ]
    measured = run_phase(name, cmds, nginx, REPO, log_dir=work)
    total = sum_stats(stats)
    images = total.get("imagecrawl/media/images", 0)
    check = check_store(store)
    shutil.rmtree(store, ignore_errors=True)
    extra = {
        "stats": {k: v for k, v in total.items() if "error" in k or "dropped" in k or "decrease" in k},
        "bad_bytes": check["bad_bytes"],
        "with_phash": check["with_phash"],
    }
    return result(name, n, images, measured, rows=check["rows"], extra=extra), check


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
    measured = run_phase("bare", [cmd], nginx, work)
    total = sum_stats([stats])
    images = total.get("bare/images", 0)
    return result("bare", 1, images, measured, pages=total.get("response_received_count", 0) - images)


def phase_gallery(
    args: argparse.Namespace, nginx: Nginx, work: Path, start_url: str
) -> tuple[PhaseResult, dict[str, Any]]:
    store = work / "store-gallery"
    shutil.rmtree(store, ignore_errors=True)
    stats = work / "gallery-stats.json"
    cmd = scrapy_cmd(
        "gallery",
        {"profile": "sandbox", "start_url": start_url},
        {
            **CAPS_LIFTED,
            **args.settings,
            "CONCURRENT_REQUESTS": str(args.concurrency),
            "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
            "IMAGECRAWL_STORE": str(store),
            "IMAGECRAWL_STATS_FILE": str(stats),
        },
    )
    measured = run_phase("gallery", [cmd], nginx, REPO, log_dir=work)
    total = sum_stats([stats])
    images = total.get("imagecrawl/media/images", 0)
    check = check_store(store)
    shutil.rmtree(store, ignore_errors=True)
    extra = {
        "bad_bytes": check["bad_bytes"],
        "with_phash": check["with_phash"],
        "with_prompt": check["with_prompt"],
        "stats": {k: v for k, v in total.items() if "error" in k or "dropped" in k or "decrease" in k},
    }
    pages = total.get("response_received_count", 0) - images
    return result("gallery", 1, images, measured, pages=pages, rows=check["rows"], extra=extra), check


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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rounds: list[dict[str, PhaseResult]], phases: list[str]) -> str:
    lines = [
        "| phase | procs | images | wall s | images/s | CPU s/1000 img | vs bare-urls: images/s | CPU | "
        "peak RSS MB | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in phases:
        runs = [r[name] for r in rounds if name in r]
        if not runs:
            continue
        base_name = "bare" if name == "gallery" else "bare-urls"
        speed = [r[name].images_per_s / r[base_name].images_per_s for r in rounds if base_name in r and name in r]
        cpu = [r[name].cpu_per_1000 / r[base_name].cpu_per_1000 for r in rounds if base_name in r and name in r]
        own = name in ("bare-urls", "bare")
        rel = f"{median(speed):.2f}" if speed and not own else ""
        rel_cpu = f"{median(cpu):.2f}" if cpu and not own else ""
        if name == "gallery" and rel:
            rel, rel_cpu = f"{rel} (vs bare)", f"{rel_cpu} (vs bare)"
        lines.append(
            f"| {name} | {runs[0].processes} | {median([r.images for r in runs]):.0f} "
            f"| {median([r.wall_s for r in runs]):.1f} | {median([r.images_per_s for r in runs]):.0f} "
            f"| {median([r.cpu_per_1000 for r in runs]):.2f} | {rel} | {rel_cpu} "
            f"| {median([r.peak_rss_mb for r in runs]):.0f} | {max(r.load_before for r in runs):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=6000, help="gallery entries = images (default 6000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default=None, help="comma-separated subset of " + ",".join(PHASES))
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all phases, interleaved (default 3)")
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for img2dataset, the bare URL spider and the urls spider (default: cores)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="CONCURRENT_REQUESTS(_PER_DOMAIN) per process")
    parser.add_argument("--concurrent-items", type=int, default=8, help="CONCURRENT_ITEMS of the bare gallery spider")
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
    if args.phases is None:
        phases = [p for p in PHASES if p != "i2d" or I2D.exists()]
    else:
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for p in phases:
        if p not in PHASES:
            parser.error(f"unknown phase {p!r}")
    if "i2d" in phases and not I2D.exists():
        parser.error(f"img2dataset is not installed at {I2D}; see this script's docstring")

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
    compile_bytecode()
    nginx = start_nginx(site.root, work / "nginx", workers=args.nginx_workers)
    rounds: list[dict[str, PhaseResult]] = []
    checks: dict[str, list[Any]] = {}
    try:
        urls_parquet, urls_txt = write_url_lists(site, nginx.base_url, work)
        start_url = f"{nginx.base_url}/gallery/page/1.html"
        for n in range(args.repeats):
            results: dict[str, PhaseResult] = {}
            shas: dict[str, set[str]] = {}
            for p in phases:
                load = os.getloadavg()[0]
                busy = busy_cores()
                warn = (
                    f"  WARNING: {busy:.2f} cores busy before the phase: not a quiet machine"
                    if busy > QUIET_LOAD
                    else ""
                )
                print(
                    f"--- round {n + 1}/{args.repeats}, phase {p}: load average {load:.2f} (a minute's memory, "
                    f"the previous phase included), busy cores over the last 2 s {busy:.2f}{warn}",
                    flush=True,
                )
                if p == "i2d":
                    res, shas[p] = phase_i2d(args, nginx, work, urls_parquet)
                elif p == "bare-urls":
                    res, shas[p] = phase_bare_urls(args, nginx, work, urls_txt)
                elif p in URL_PHASES:
                    res, check = phase_urls(p, args, nginx, work, urls_parquet)
                    shas[p] = check["sha256s"]
                elif p == "bare":
                    res = phase_bare(args, nginx, work, start_url)
                else:
                    res, check = phase_gallery(args, nginx, work, start_url)
                    shas[p] = check["sha256s"]
                results[p] = res
                print(
                    f"    {res.name}: {res.images} images in {res.wall_s:.1f} s = {res.images_per_s:.0f}/s; "
                    f"CPU {res.cpu_s:.1f} s ({res.cpu_per_1000:.2f} s/1000); peak RSS {res.peak_rss_mb:.0f} MB; "
                    f"other load {res.other_cores:.2f} cores; {res.extra}",
                    flush=True,
                )
            rounds.append(results)
            reference = shas.get("bare-urls")
            for p, found in shas.items():
                if reference is not None and p != "bare-urls" and p != "gallery":
                    checks.setdefault(f"{p} stored the same sha256 set as bare-urls", []).append(found == reference)
            if reference is not None and "gallery" in shas:
                # the gallery phase drops near-duplicates (the default policy)
                checks.setdefault("gallery sha256s within bare-urls'", []).append(shas["gallery"] <= reference)
    finally:
        nginx.stop()

    print()
    print(f"medians over {len(rounds)} round(s); ratios taken within each round, then the median:")
    print(table(rounds, phases))
    print()
    for name, values in checks.items():
        print(f"check {name}: {values}")
    report = {
        "when": stamp,
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(["uv run python -m benchmarks.throughput", *(argv if argv is not None else sys.argv[1:])]),
        "rounds": [
            {
                name: {
                    **asdict(r),
                    "images_per_s": r.images_per_s,
                    "cpu_per_1000": r.cpu_per_1000,
                    "other_cores": r.other_cores,
                }
                for name, r in results.items()
            }
            for results in rounds
        ],
        "checks": checks,
    }
    path = OUT / f"throughput-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nresults: {path}; work dir: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
