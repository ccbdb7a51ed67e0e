"""A user's mistakes, as ``scrapy crawl`` meets them: one line naming the argument, the setting or the
store, the documented exit status, no traceback, and no request sent to the site."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_crawl
from tests.sandbox.testing import SandboxProcess
from tests.servers import MotoS3, SandboxFactory, free_port, stop_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(sandbox_factory: SandboxFactory) -> SandboxProcess:
    return sandbox_factory.start(items=4, name="usage")


def error_line(stderr: str) -> str:
    """The one ``imagecrawl: error:`` line; fails on a traceback or on anything but one such line."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Task exception was never retrieved" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("imagecrawl: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("spider", "args", "settings", "expected"),
    [
        ("civitai", {"max_items": "abc"}, {}, "-a max_items= must be an integer, got 'abc'"),
        ("civitai", {"max_item": "3"}, {}, "unknown -a argument of the civitai spider: 'max_item' (did you mean"),
        ("civitai", {"nsfw": "lots"}, {}, "-a nsfw= must be one of"),
        ("lexica", {}, {}, "the lexica spider needs a search query"),
        ("urls", {"input": "{csv}"}, {}, "no column 'url' (columns: link, caption)"),
        ("urls", {"input": "{csv}", "url_col": "link", "shard": "5/2"}, {}, "-a shard= must be I/N"),
        ("gallery", {"profile": "{toml}"}, {}, "not valid TOML"),
        (
            "gallery",
            {},
            {"IMAGECRAWL_MAX_RATE_PER_SITE": "abc"},
            "setting IMAGECRAWL_MAX_RATE_PER_SITE must be a number",
        ),
        ("gallery", {}, {"IMAGECRAWL_BANS_ENABLED": "maybe"}, "setting IMAGECRAWL_BANS_ENABLED must be true or false"),
        ("gallery", {}, {"IMAGECRAWL_MAX_RATE": "3"}, "(did you mean 'IMAGECRAWL_MAX_RATE_PER_SITE'?)"),
        ("gallery", {}, {"IMAGECRAWL_STORE": "ftp://host/x"}, "IMAGECRAWL_STORE 'ftp://host/x': expected a local path"),
        ("gallery", {}, {"IMAGECRAWL_NEAR_POLICY": "maybe"}, "IMAGECRAWL_NEAR_POLICY must be 'drop' or 'keep'"),
        (
            "gallery",
            {},
            {"IMAGECRAWL_CIRCUIT_COOLOFF_SECONDS": "5"},
            "setting IMAGECRAWL_CIRCUIT_COOLOFF_SECONDS is now the key 'circuit_cooloff_seconds' of IMAGECRAWL_TUNING: "
            'IMAGECRAWL_TUNING = {"circuit_cooloff_seconds": "5"}',
        ),
        (
            "gallery",
            {},
            {"IMAGECRAWL_TUNING": {"circuit_cooloff": 5}},
            "unknown IMAGECRAWL_TUNING key: 'circuit_cooloff' (did you mean 'circuit_cooloff_seconds'?)",
        ),
        (
            "gallery",
            {},
            {"IMAGECRAWL_TUNING": {"pacing_decrease_factor": 2}},
            "IMAGECRAWL_TUNING key 'pacing_decrease_factor' must be a number between 0 and 1, got 2",
        ),
        (
            "gallery",
            {},
            {"DOWNLOADER_MIDDLEWARES": {"imagecrawl.downloadermiddlewares.pacing.PacingMiddleware": None}},
            "setting DOWNLOADER_MIDDLEWARES names imagecrawl.downloadermiddlewares.pacing.PacingMiddleware, which "
            "moved: use imagecrawl.pacing.downloadermiddlewares.pacing.PacingMiddleware",
        ),
        (
            "gallery",
            {},
            {"SCHEDULER": "imagecrawl.scheduler.FrontierScheduler"},
            "setting SCHEDULER names imagecrawl.scheduler.FrontierScheduler, which moved: "
            "use imagecrawl.pacing.scheduler.FrontierScheduler",
        ),
    ],
)
def test_argument_and_setting_errors_are_one_line_exit_2(
    site: SandboxProcess,
    tmp_path: Path,
    spider: str,
    args: dict[str, str],
    settings: dict[str, str],
    expected: str,
) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("link,caption\nhttp://127.0.0.1/a.png,a\n")
    toml = tmp_path / "broken.toml"
    toml.write_text("[listing\n")
    args = {k: v.format(csv=csv, toml=toml) for k, v in args.items()}
    if spider == "gallery" and "profile" not in args:
        args.update(profile="sandbox", start_url=f"{site.base_url}gallery/")
    before = len(site.requests())
    log_file = tmp_path / "crawl.log"
    settings = {**settings, "LOG_FILE": str(log_file)}
    result = run_crawl(spider, store=tmp_path / "store", args=args, settings=settings, check=False, timeout=90)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result.stderr)
    assert expected in line
    # the same line where the operator looks: the log file (Scrapyd's job log is one)
    assert f"ERROR: {line}" in log_file.read_text()
    assert len(site.requests()) == before  # nothing was sent


def test_an_unknown_spider_is_one_line_with_the_nearest_name(tmp_path: Path) -> None:
    result = run_crawl("urlz", store=tmp_path / "store", check=False, timeout=60)
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        "imagecrawl: error: unknown spider: 'urlz' (did you mean 'urls'?); "
        "valid: civitai, gallery, lexica, recheck, sitemap, urls"
    )


def test_local_store_not_writable_stops_before_any_request(site: SandboxProcess, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    before = len(site.requests())
    result = run_crawl(
        "gallery",
        store=tmp_path / "file" / "store",
        args={"profile": "sandbox", "start_url": f"{site.base_url}gallery/"},
        check=False,
        timeout=90,
    )
    assert result.returncode == 3, result.stderr[-3000:]
    line = error_line(result.stderr)
    assert "IMAGECRAWL_STORE" in line and "cannot write there: Not a directory" in line
    assert len(site.requests()) == before


def _s3_crawl(site: SandboxProcess, tmp_path: Path, env: dict[str, str], store: str = "s3://probe-bucket/x") -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    before = len(site.requests())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "gallery",
            "-a",
            "profile=sandbox",
            "-a",
            f"start_url={site.base_url}gallery/",
            "-s",
            f"IMAGECRAWL_STORE={store}",
            "-s",
            f"IMAGECRAWL_STATE_DIR={tmp_path / 'state'}",
            "-s",
            "IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.0/8",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null"},
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert len(site.requests()) == before
    return error_line(proc.stderr)


def test_s3_store_probe(site: SandboxProcess, tmp_path: Path, moto_s3: MotoS3) -> None:
    moto_s3.create_bucket("probe-bucket")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    endpoint = {"AWS_ENDPOINT_URL": moto_s3.endpoint}
    none = _s3_crawl(site, tmp_path, {**endpoint, "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    assert "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in none
    missing = _s3_crawl(site, tmp_path, {**endpoint, **creds}, store="s3://no-such-bucket/x")
    assert "the bucket 'no-such-bucket' does not exist" in missing
    refused = _s3_crawl(site, tmp_path, {**creds, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach the endpoint http://127.0.0.1:" in refused
    # the probe leaves nothing behind in a bucket it could write to, and the crawl goes on
    listed = moto_s3.client().list_objects_v2(Bucket="probe-bucket").get("Contents", [])
    assert listed == []


def test_s3_bad_credentials(site: SandboxProcess, tmp_path: Path) -> None:
    """moto checks credentials only when told to (INITIAL_NO_AUTH_ACTION_COUNT=0): a server of its own."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    server = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        line = _s3_crawl(
            site,
            tmp_path,
            {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "bad",
                "AWS_SECRET_ACCESS_KEY": "bad",
            },
        )
        assert "the credentials were refused (InvalidAccessKeyId)" in line
    finally:
        stop_process(server)


def test_every_request_refused_exits_4(tmp_path: Path) -> None:
    """`scrapy crawl gallery -a profile=sandbox`: the bundled profile points at a loopback sandbox, which the
    network guard refuses unless allowed."""
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": "sandbox"},
        settings={"IMAGECRAWL_ALLOWED_NETWORKS": ""},
        check=False,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stats["finish_reason"] == "imagecrawl_all_refused"
    assert "Nothing stored: no request got an answer; 1 refused by the network guard" in result.stderr


def test_every_request_failed_exits_4(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/gallery/"  # nothing listens: every connection is refused
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": "sandbox", "start_url": dead},
        settings={"RETRY_TIMES": "0"},
        check=False,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stats["finish_reason"] == "imagecrawl_all_failed"
    assert "failed after their retries" in result.stderr
    # the progress line does not call the site "ok"
    final = [line for line in result.stderr.splitlines() if "Progress" in line and line.endswith("(final)")]
    assert final and "req/s no answer" in final[-1], result.stderr[-2000:]


def test_nothing_asked_for_is_not_an_error(tmp_path: Path, site: SandboxProcess) -> None:
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": "sandbox", "start_url": f"{site.base_url}gallery/", "max_items": "0"},
    )
    assert result.returncode == 0 and result.stats["finish_reason"] == "finished"


def test_inspect_reports_an_s3_store_it_cannot_read(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "imagecrawl.cli", "inspect", "s3://some-bucket/x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "imagecrawl inspect: cannot read s3://some-bucket/x:" in proc.stderr
    assert "nothing there" not in proc.stdout


@pytest.mark.parametrize(
    ("spider", "args", "settings", "code", "expected"),
    [
        ("gallery", {}, {"IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.0/8;::1/128"}, 2, "separate networks with commas"),
        ("gallery", {}, {"IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "0"}, 2, "must be an integer >= 1, got '0'"),
        ("gallery", {}, {"IMAGECRAWL_MAX_RATE_PER_SITE": "0"}, 2, "must be a number > 0, got '0'"),
        ("gallery", {}, {"IMAGECRAWL_MAX_RATE_PER_SITE": "-5"}, 2, "must be a number > 0, got '-5'"),
        ("gallery", {}, {"IMAGECRAWL_MAX_RATE_PER_SITE": "nan"}, 2, "must be a number > 0, got 'nan'"),
        ("gallery", {}, {"LOG_LEVEL": "FOO"}, 2, "setting LOG_LEVEL must be one of"),
        ("gallery", {}, {"LOG_FILE": "{file}/crawl.log"}, 2, "setting LOG_FILE"),
        ("gallery", {}, {"IMAGECRAWL_STATS_FILE": "{file}/stats.json"}, 2, "setting IMAGECRAWL_STATS_FILE"),
        ("gallery", {}, {"JOBDIR": "{file}"}, 2, "setting JOBDIR"),
        ("sitemap", {"source": "BAD"}, {}, 2, "-a source= must be lower-case"),
        ("gallery", {}, {"IMAGECRAWL_REDIS_URL": "redis://127.0.0.1:{port}/0"}, 3, "Redis server"),
        (
            "gallery",
            {},
            {"IMAGECRAWL_REDIS_URL": "redis://127.0.0.1:{port}/0", "IMAGECRAWL_AUTHOR_SALT": "a-salt-of-ours"},
            3,
            "Redis server",
        ),
    ],
)
def test_low_list_is_one_line(
    site: SandboxProcess,
    tmp_path: Path,
    spider: str,
    args: dict[str, str],
    settings: dict[str, str],
    code: int,
    expected: str,
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    fill = {"file": str(a_file), "port": str(free_port())}
    settings = {k: v.format(**fill) for k, v in settings.items()}
    if spider == "gallery":
        args = {"profile": "sandbox", "start_url": f"{site.base_url}gallery/", **args}
    else:
        args = {"start_url": site.base_url, **args}
    before = len(site.requests())
    result = run_crawl(spider, store=tmp_path / "store", args=args, settings=settings, check=False, timeout=90)
    assert result.returncode == code, result.stderr[-3000:]
    assert expected in error_line(result.stderr)
    assert len(site.requests()) == before


def test_url_credentials_are_masked_in_the_error_line(site: SandboxProcess, tmp_path: Path) -> None:
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": "sandbox", "start_url": f"{site.base_url}gallery/"},
        settings={"IMAGECRAWL_REDIS_URL": f"redis://bob:RedisPass7777@127.0.0.1:{free_port()}/0"},
        check=False,
        timeout=90,
    )
    assert result.returncode == 3, result.stderr[-3000:]
    error_line(result.stderr)
    assert "RedisPass7777" not in result.stderr + result.stdout
