"""Scrapyd end to end: ``scrapyd-deploy`` builds the project's egg and uploads it to a real ``scrapyd`` on
loopback; a job scheduled through ``schedule.json`` crawls the sandbox gallery into a local store;
``listjobs.json`` reports it finished and its shards hold every gallery item."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import LOOPBACK, REPO, free_port, read_store, stop_process
from .crawlers import setting_text
from .distributed_util import check_gallery_store

pytestmark = pytest.mark.e2e


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _post(url: str, fields: list[tuple[str, str]]) -> dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(url, data=data, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _copy_project(dest: Path) -> Path:
    """The project as a fresh checkout has it (scrapyd-deploy builds in place, leaving build/ behind)."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = []
    if files:
        for name in files:
            src = REPO / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git", "data"))
    return dest


@dataclass
class Scrapyd:
    url: str
    home: Path


@pytest.fixture(scope="module")
def scrapyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapyd]:
    """A real scrapyd on a free loopback port, with its eggs, logs and databases in a temp dir."""
    home = tmp_path_factory.mktemp("scrapyd")
    port = free_port()
    # the checkout's own scrapyd.conf (relative folders, no root), on a free port and polling fast
    conf = (REPO / "scrapyd.conf").read_text()
    conf = re.sub(r"(?m)^http_port\s*=.*$", f"http_port = {port}", conf)
    (home / "scrapyd.conf").write_text(conf + "poll_interval = 0.5\n")
    exe = Path(sys.executable).with_name("scrapyd")
    log = (home / "scrapyd.log").open("wb")
    process = subprocess.Popen([str(exe)], cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(url + "daemonstatus.json")["status"] == "ok":
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"scrapyd did not start: {(home / 'scrapyd.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield Scrapyd(url, home)
    stop_process(process)
    log.close()


def test_deploy_schedule_and_read_shards(tmp_path: Path, scrapyd: Scrapyd, sandbox_site: Any) -> None:
    url = scrapyd.url
    project = _copy_project(tmp_path / "project")
    # A deploy target for this scrapyd, as a user's ~/.config/scrapy.cfg would add one.
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "scrapy.cfg").write_text(f"[deploy:test]\nurl = {url}\nproject = imagecrawl\n")
    deploy = subprocess.run(
        [str(Path(sys.executable).with_name("scrapyd-deploy")), "test", "--version", "r1"],
        cwd=project,
        env={**os.environ, "XDG_CONFIG_HOME": str(xdg)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert '"status": "ok"' in deploy.stdout, deploy.stdout + deploy.stderr

    # The egg scrapyd keeps: both packages, the bundled profiles, the scrapy settings entry point.
    assert _get(url + "listprojects.json")["projects"] == ["imagecrawl"]
    assert "gallery" in _get(url + "listspiders.json?project=imagecrawl")["spiders"]
    eggs = list((scrapyd.home / "eggs" / "imagecrawl").glob("*.egg"))
    assert len(eggs) == 1, eggs
    with zipfile.ZipFile(eggs[0]) as egg:
        names = set(egg.namelist())
        entry_points = egg.read("EGG-INFO/entry_points.txt").decode()
    assert {"imagecrawl/settings.py", "spiders/gallery.py", "imagecrawl/profiles/sandbox.toml"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert "[scrapy]\nsettings = imagecrawl.settings" in entry_points

    store = tmp_path / "store"
    settings = {**LOOPBACK, "IMAGECRAWL_STORE": str(store.resolve()), "IMAGECRAWL_WORKER_ID": "scrapyd-1"}
    fields = [
        ("project", "imagecrawl"),
        ("spider", "gallery"),
        ("profile", "sandbox"),
        ("start_url", sandbox_site.url("gallery/")),
    ]
    fields += [("setting", f"{k}={setting_text(v)}") for k, v in settings.items()]
    job = _post(url + "schedule.json", fields)
    assert job["status"] == "ok", job
    jobid = job["jobid"]

    deadline = time.monotonic() + 150
    while True:
        jobs = _get(url + "listjobs.json?project=imagecrawl")
        if any(j["id"] == jobid for j in jobs["finished"]):
            break
        assert time.monotonic() < deadline, f"job {jobid} did not finish: {jobs}"
        time.sleep(0.5)

    log = next((scrapyd.home / "logs" / "imagecrawl" / "gallery").glob(f"{jobid}.log")).read_text()
    assert "'finish_reason': 'finished'" in log, log[-3000:]
    assert "Traceback" not in log, log[-6000:]
    shards = check_gallery_store(store, 40, 7)  # the session sandbox_site: 40 entries, seed 7
    # items_dir of the shipped scrapyd.conf: the job's records as JSON lines, without the image bytes
    [feed] = (scrapyd.home / "items" / "imagecrawl" / "gallery").glob(f"{jobid}.jl")
    items = [json.loads(line) for line in feed.read_text().splitlines()]
    stored = read_store(store, columns=["id"]).column("id").to_pylist()
    assert sorted(i["id"] for i in items) == sorted(stored)
    assert all("image" not in i and i["image_sha256"] for i in items)
    assert " ERROR: " not in log, log[-3000:]

    # a misspelt argument, and a relative store: one line in the job's log, and the job's process fails
    for extra, expected in (
        ([("start_url", sandbox_site.url("gallery/")), ("max_item", "3")], "(did you mean 'max_items'?)"),
        ([("setting", "IMAGECRAWL_STORE=data")], "IMAGECRAWL_STORE 'data' is relative"),
    ):
        fields = [("project", "imagecrawl"), ("spider", "gallery"), *extra]
        if not any(v.startswith("IMAGECRAWL_STORE=") for _, v in extra):
            fields.append(("setting", f"IMAGECRAWL_STORE={store.resolve()}"))
        bad = _post(url + "schedule.json", fields)["jobid"]
        deadline = time.monotonic() + 60
        while not any(j["id"] == bad for j in _get(url + "listjobs.json?project=imagecrawl")["finished"]):
            assert time.monotonic() < deadline, f"job {bad} did not finish"
            time.sleep(0.5)
        bad_log = (scrapyd.home / "logs" / "imagecrawl" / "gallery" / f"{bad}.log").read_text()
        assert "ERROR: imagecrawl: error: " in bad_log and expected in bad_log, bad_log[-3000:]
        assert "Traceback" not in bad_log
        died = [line for line in (scrapyd.home / "scrapyd.log").read_text().splitlines() if f"job='{bad}'" in line]
        assert any("Process died: exitstatus=2 " in line for line in died), died
    assert set(read_store(store, columns=["source"]).column("source").to_pylist()) == {"gallery"}
    assert shards and all("scrapyd-1" in name for name in shards), shards
