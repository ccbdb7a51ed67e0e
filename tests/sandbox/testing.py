"""Start the sandbox server in a subprocess (for tests, benchmarks and ``imagecrawl demo``).

with sandbox(items=60, log_path=tmp_path / "requests.jsonl") as sb:
    urllib.request.urlopen(sb.base_url + "api/v1/images?limit=5")
    sb.wait_for_requests(1)
    print(sb.requests())
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

_LISTENING_RE = re.compile(r"^imagecrawl sandbox listening on (http://\S+/)\s*$")


class SandboxStartError(RuntimeError):
    pass


@dataclass
class SandboxProcess:
    base_url: str
    log_path: Path | None
    process: subprocess.Popen[str]
    _stdout_thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.base_url.rstrip("/").rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        """Absolute URL for a server path such as ``/images/civitai/1.png`` or ``api/v1/images``."""
        return self.base_url + path.lstrip("/")

    def requests(self) -> list[dict[str, Any]]:
        """All request-log records written so far (an incomplete last line is skipped)."""
        if self.log_path is None:
            raise RuntimeError("sandbox was started without log_path")
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                logger.debug("skipping incomplete request-log line %r", line)
        return out

    def wait_for_requests(
        self,
        count: int,
        timeout: float = 5.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` (matching) records are logged; return the matching records.

        The server writes a record just *after* it has sent the response, so a client may see the
        response a moment before the record exists."""
        deadline = time.monotonic() + timeout
        while True:
            records = [r for r in self.requests() if predicate is None or predicate(r)]
            if len(records) >= count or time.monotonic() >= deadline:
                return records
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL on timeout.  Idempotent."""
        proc = self.process
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("sandbox pid %d did not stop in %.1fs; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(timeout=timeout)
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=2.0)  # the pipe hits EOF once the process is gone
        if proc.stdout is not None:
            proc.stdout.close()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def start_sandbox(
    *,
    items: int = 60,
    seed: int = 0,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 20.0,
) -> SandboxProcess:
    """Run ``python -m tests.sandbox --host 127.0.0.1 --port 0 ...`` and wait until it listens."""
    cmd = [
        sys.executable,
        "-m",
        "tests.sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--items",
        str(items),
        "--seed",
        str(seed),
    ]
    if log_path is not None:
        cmd += ["--log", str(log_path)]
    cmd += list(extra_args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logger.debug("starting sandbox: %s", cmd)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    # Keep draining stdout for the life of the process so the server can never block on it.
    pump = threading.Thread(target=_pump, args=(proc.stdout, lines), name="sandbox-stdout", daemon=True)
    pump.start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        m = _LISTENING_RE.match(line)
        if m:
            sb = SandboxProcess(base_url=m.group(1), log_path=log_path, process=proc, _stdout_thread=pump)
            logger.info("sandbox pid %d listening on %s", proc.pid, sb.base_url)
            return sb
        seen.append(line)
    # failed: clean up
    rc = proc.poll()
    if rc is None:
        proc.kill()
        proc.wait()
    raise SandboxStartError(
        f"sandbox did not start within {timeout:.1f}s (exit code {proc.returncode}); stdout: {''.join(seen)!r}"
    )


@contextmanager
def sandbox(**kwargs: Any) -> Iterator[SandboxProcess]:
    """Context manager around :func:`start_sandbox`; stops the server on exit."""
    sb = start_sandbox(**kwargs)
    try:
        yield sb
    finally:
        sb.stop()
