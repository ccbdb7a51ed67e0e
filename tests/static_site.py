"""The static benchmark site: gallery listing pages, detail pages and images with A1111 metadata, served
by nginx (Debian package) on loopback. Used by ``benchmarks/throughput.py`` and ``benchmarks/memory_soak.py``.

Layout under the site root (the URL paths are the same; the ``sandbox`` gallery profile parses it)::

    gallery/page/<n>.html        listing pages (``div.grid a.card``, ``a.next[rel=next]``)
    gallery/item/<id>            detail pages (``figure.artwork img.main``, prompt, params, author)
    images/gallery/<id>.<ext>    the images: ``tests.sandbox.catalog.render_image`` bytes

The pages come from the sandbox's own renderer (``tests.sandbox.markup``), with this site's links.

Building renders every image once (about 20 ms each, in one process per core) and is cached: a site
directory with a matching ``.complete`` marker is reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.sandbox.catalog import Catalog, Entry, build_catalog, render_image
from tests.sandbox.markup import GalleryLayout, gallery_detail, gallery_listing

logger = logging.getLogger(__name__)

SITE_VERSION = 1
PAGE_SIZE = 50

_CATALOG: Catalog | None = None


def _init_worker(items: int, seed: int) -> None:
    global _CATALOG
    _CATALOG = build_catalog(items, seed)


def _render_chunk(args: tuple[Path, Path | None, int, int]) -> int:
    root, donor, start, stop = args
    assert _CATALOG is not None
    written = 0
    for entry in _CATALOG.entries("gallery")[start:stop]:
        path = root / entry.image_path.lstrip("/")
        if donor is not None and (donor / entry.image_path.lstrip("/")).exists():
            os.link(donor / entry.image_path.lstrip("/"), path)
        elif not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(render_image(_CATALOG, entry))
            tmp.rename(path)
        written += 1
    return written


#: The static files' gallery: ``/gallery/page/<n>.html``, no ``lang``, no footer.
STATIC_GALLERY = GalleryLayout(
    page_href="/gallery/page/{page}.html", home_href="/gallery/page/1.html", lang=None, footer=False
)


def listing_html(entries: list[Entry], page: int, n_pages: int) -> str:
    return gallery_listing(STATIC_GALLERY, entries, page, n_pages)


def detail_html(entry: Entry) -> str:
    return gallery_detail(STATIC_GALLERY, entry)


@dataclass(frozen=True)
class Site:
    root: Path
    items: int
    seed: int
    pages: int

    def image_paths(self) -> list[str]:
        return json.loads((self.root / "image_paths.json").read_text())


def _donor(parent: Path, items: int, seed: int) -> Path | None:
    """A complete bigger site of the same seed: its first ``items`` images are ours (catalog prefix)."""
    for marker in parent.glob(f"site-*-{seed}/.complete"):
        info = json.loads(marker.read_text())
        if info.get("version") == SITE_VERSION and info.get("seed") == seed and info.get("items", 0) >= items:
            return marker.parent
    return None


def build_site(root: Path, items: int, seed: int = 1, workers: int | None = None) -> Site:
    """Build (or reuse) the static site of ``items`` gallery entries under ``root``."""
    marker = root / ".complete"
    n_pages = max(1, math.ceil(items / PAGE_SIZE))
    want = {"version": SITE_VERSION, "items": items, "seed": seed, "page_size": PAGE_SIZE}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return Site(root, items, seed, n_pages)
    if root.exists():
        shutil.rmtree(root)
    started = time.monotonic()
    catalog = build_catalog(items, seed)
    entries = catalog.entries("gallery")
    (root / "images" / "gallery").mkdir(parents=True)
    (root / "gallery" / "item").mkdir(parents=True)
    (root / "gallery" / "page").mkdir(parents=True)
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for page in range(1, n_pages + 1):
        chunk = entries[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        (root / "gallery" / "page" / f"{page}.html").write_text(listing_html(chunk, page, n_pages))
    for entry in entries:
        (root / "gallery" / "item" / entry.id).write_text(detail_html(entry))
    (root / "image_paths.json").write_text(json.dumps([e.image_path for e in entries]))
    workers = workers or os.cpu_count() or 1
    step = 500
    donor = _donor(root.parent, items, seed)
    chunks = [(root, donor, i, min(i + step, items)) for i in range(0, items, step)]
    done = 0
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(items, seed)) as pool:
        for n in pool.map(_render_chunk, chunks):
            done += n
            print(f"  site: {done}/{items} images rendered ({time.monotonic() - started:.0f} s)", flush=True)
    marker.write_text(json.dumps(want))
    print(f"  site: built {items} items in {time.monotonic() - started:.0f} s under {root}", flush=True)
    return Site(root, items, seed, n_pages)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NGINX_CONF = """\
daemon off;
worker_processes {workers};
{user}
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    types {{
        text/html html;
        text/plain txt;
        image/png png;
        image/jpeg jpg;
        image/webp webp;
    }}
    default_type text/html;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    run_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The master and its workers."""
        out = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    out.append(int(entry.name))
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(root: Path, run_dir: Path, workers: int = 1, port: int | None = None) -> Nginx:
    """Run ``nginx -c <temp config>`` with ``daemon off`` on a free loopback port (never the default site)."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(exe).exists():
        raise SystemExit("nginx is not installed: apt-get install -y nginx (Debian package)")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = run_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, user=user, run=run_dir, port=port, root=root.resolve()))
    process = subprocess.Popen([exe, "-c", str(conf), "-p", str(run_dir)], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/robots.txt", timeout=1).read()
            return Nginx(process, port, run_dir)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited at start; see {run_dir}/error.log") from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("nginx did not answer within 10 s")
