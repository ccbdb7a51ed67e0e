"""The sites of ``benchmarks/broad.py``: one asyncio process serving many loopback aliases (127.x.y.z).

    uv run python -m benchmarks.broad_sites SITES.json LOG.jsonl

``SITES.json`` is a list of ``{"host", "port", "kind", "capacity", "burst", "latency", "retry_after",
"crawl_delay"}``;
``kind`` is ``live`` (a strict token bucket of ``capacity`` requests/s holding ``burst`` tokens: a request
that finds no token gets 429 with ``Retry-After``; others are answered after ``latency`` seconds),
``silent`` (accepts connections, never answers) or ``refused`` (nothing listens: connection refused).
Every live path answers: ``/robots.txt`` (allow all, and ``Crawl-delay`` when the site has one; outside
the bucket), ``/img/<n>.png`` (a PNG of
its own, unique per site and number), anything else 404 (inside the bucket). One JSON line per
answered request goes to ``LOG.jsonl``: ``t`` (arrival, unix time), ``dur``, ``host``, ``path``,
``status``, ``retry_after`` (for 429s), ``ua`` (the User-Agent: which worker of a distributed crawl).
Prints ``ready`` once every listener is up; SIGTERM ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import resource
import signal
import struct
import sys
import time
import zlib
from typing import Any, TextIO


def png(seed: str, size: int = 32) -> bytes:
    """A ``size`` x ``size`` RGB PNG of noise drawn from ``seed`` (unique bytes and pHash per seed)."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    # blocks of 2x2 pixels: noise the perceptual hash sees, so near-duplicate checks keep them apart. 16x16
    # cells feed the hash's 64 low frequencies independently enough; 6x6 cells (4-pixel blocks of 24) made a
    # few images in every thousand near-duplicates of another, which the crawl rightly dropped
    cells = size // 2
    grid = [[bytes(rng.randrange(256) for _ in range(3)) for _ in range(cells)] for _ in range(cells)]
    raw = b"".join(b"\x00" + b"".join(grid[y // 2][x // 2] for x in range(size)) for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


class Bucket:
    def __init__(self, capacity: float, burst: float) -> None:
        self.rate, self.size = capacity, max(1.0, burst)
        self.tokens, self.at = self.size, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Site:
    def __init__(self, spec: dict[str, Any], log: TextIO) -> None:
        self.host = str(spec["host"])
        self.latency = float(spec.get("latency", 0.05))
        self.retry_after = int(spec.get("retry_after", 1))
        self.bucket = Bucket(float(spec.get("capacity", 1)), float(spec.get("burst", spec.get("capacity", 1))))
        delay = spec.get("crawl_delay")
        self.robots = b"User-agent: *\nAllow: /\n" + (f"Crawl-delay: {delay:g}\n".encode() if delay else b"")
        self.log = log

    async def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/robots.txt":
            await asyncio.sleep(self.latency)
            return 200, {"Content-Type": "text/plain"}, self.robots
        if not self.bucket.take():
            return 429, {"Retry-After": str(self.retry_after), "Content-Type": "text/plain"}, b"slow down\n"
        await asyncio.sleep(self.latency)
        if path.startswith("/img/") and path.endswith(".png"):
            return 200, {"Content-Type": "image/png"}, png(self.host + path)
        return 404, {"Content-Type": "text/plain"}, b"not found\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived, started = time.time(), time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
                close = any(line.lower().startswith("connection:") and "close" in line.lower() for line in lines)
                agent = next((line[11:].strip() for line in lines if line.lower().startswith("user-agent:")), "")
                status, headers, body = await self.answer(path)
                reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}[status]
                headers |= {"Content-Length": str(len(body)), "Connection": "close" if close else "keep-alive"}
                out = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(out.encode("latin-1") + b"\r\n" + body)
                await writer.drain()
                record: dict[str, Any] = {
                    "t": round(arrived, 6),
                    "dur": round(time.monotonic() - started, 6),
                    "host": self.host,
                    "path": path,
                    "ua": agent,
                    "status": status,
                }
                if status == 429:
                    record["retry_after"] = self.retry_after
                self.log.write(json.dumps(record) + "\n")
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read, never answer (until the client gives up)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(specs: list[dict[str, Any]], log: TextIO) -> None:
    servers = []
    for spec in specs:
        if spec["kind"] == "refused":
            continue
        handler = Site(spec, log).handle if spec["kind"] == "live" else silent
        servers.append(await asyncio.start_server(handler, spec["host"], int(spec["port"]), backlog=256))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    log.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: broad_sites.py SITES.json LOG.jsonl", file=sys.stderr)
        return 2
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(argv[0], encoding="utf-8") as fh:
        specs = json.load(fh)
    with open(argv[1], "w", encoding="utf-8", buffering=1 << 16) as log:
        asyncio.run(serve(specs, log))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
