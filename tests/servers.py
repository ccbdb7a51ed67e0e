"""The servers the end-to-end tests start on loopback: the sandbox site, moto's S3 server and a Debian
``redis-server``. The fixtures in ``tests/conftest.py`` own their lifetimes; the starters live here so a
test that needs a server of its own (a second sandbox, a fresh Redis) starts it the same way."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.testing import SandboxProcess, start_sandbox


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before it is bound again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the sandbox site ------------------------------------------------------------------------------


@dataclass
class SandboxFactory:
    """Starts sandbox servers, each logging its requests to a file of its own, and stops them together.

    ``sandbox_factory.start(items=40, seed=7, extra_args=["--hostile"])`` in a fixture; the fixture
    ``sandbox_factory`` (module scope) stops every server it started when the module's tests are done."""

    tmp_path_factory: pytest.TempPathFactory
    started: list[SandboxProcess] = field(default_factory=list)

    def start(
        self,
        *,
        items: int = 60,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        name: str = "sandbox",
        log: bool = True,
    ) -> SandboxProcess:
        """A sandbox listening on a free loopback port; ``log=False`` keeps no request log
        (``SandboxProcess.requests()`` then raises)."""
        log_path = self.tmp_path_factory.mktemp(name) / "requests.jsonl" if log else None
        site = start_sandbox(items=items, seed=seed, log_path=log_path, extra_args=extra_args)
        self.started.append(site)
        return site

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


# --- moto's S3 server ------------------------------------------------------------------------------


@dataclass
class MotoS3:
    endpoint: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION_NAME": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def settings(self) -> dict[str, str]:
        env = self.env
        return {
            k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION_NAME")
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def start_moto(port: int | None = None) -> MotoS3:
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).read()
            return MotoS3(endpoint, process, port)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("moto_server exited at start") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start within 30 s")


# --- redis-server ----------------------------------------------------------------------------------


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> object:
        import redis

        return redis.Redis.from_url(self.url)


def start_redis(directory: Path, attempts: int = 5) -> RedisServer:
    """``redis-server`` on a free loopback port, no persistence, its files in ``directory``. Retries on
    another port if the chosen one was taken meanwhile."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    import redis

    for _ in range(attempts):
        port = free_port()
        args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(directory)]
        process = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        try:
            while process.poll() is None:
                try:
                    client.ping()
                    return RedisServer(f"redis://127.0.0.1:{port}/0", port, process)
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        finally:
            client.close()
        stop_process(process)
    raise RuntimeError("redis-server did not start")
