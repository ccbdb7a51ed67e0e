"""A hostile JavaScript gallery, rendered in Debian's Chromium under ``IMAGECRAWL_ALLOWED_NETWORKS=127.0.0.1/32``:
its page fetches from ``about:blank``, ``srcdoc``, ``data:`` and ``blob:`` frames, opens popups, starts
dedicated, shared and service workers, sends a beacon, opens a WebSocket, follows a redirect to a refused
address, and asks for a path robots.txt disallows and one its ``Content-Signal`` refuses. A second server on
127.0.0.2 records every connection: none reaches it. The page's own burst of 20 API calls keeps to the
site's cap of 2 requests/s, and every request that reaches the site carries the crawl's User-Agent."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_crawl
from tests.sandbox.payloads import optout_png

pytestmark = pytest.mark.e2e

API_CALLS = 20
RATE = 2.0


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), Handler)
        self.hits: list[tuple[float, str, str]] = []  # (time, path, user agent)
        self.connections = 0
        self.lock = threading.Lock()
        self.other = ""  # the other server's origin, for the pages

    def get_request(self) -> Any:
        conn = super().get_request()
        with self.lock:
            self.connections += 1
        return conn

    @property
    def origin(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def listing(out: str) -> str:
    frame_js = f"fetch('{out}/from-FRAME', {{mode: 'no-cors'}}).catch(() => 0);"
    data_doc = f"<script>{frame_js.replace('FRAME', 'data')}</script>".replace("'", "%27").replace(" ", "%20")
    return f"""<!doctype html><html><head><title>gallery</title>
<link rel="preconnect" href="{out}"><link rel="prefetch" href="{out}/prefetch">
<link rel="stylesheet" href="{out}/style.css"></head>
<body><div class="grid"></div>
<iframe id="blank" src="about:blank"></iframe>
<iframe srcdoc="<script>{frame_js.replace("FRAME", "srcdoc")}</script>"></iframe>
<iframe src="data:text/html,{data_doc}"></iframe>
<iframe src="/redirect-out?frame=1"></iframe>
<iframe src="{out}/frame"></iframe>
<img src="{out}/pixel.png">
<script>
const out = '{out}';
const quiet = (p) => p.catch(() => 0);
const blank = document.getElementById('blank').contentWindow;
quiet(blank.fetch(out + '/from-blank', {{mode: 'no-cors'}}));
const blobDoc = new Blob(["<script>fetch('" + out + "/from-blob', {{mode: 'no-cors'}}).catch(() => 0)<\\/script>"],
                         {{type: 'text/html'}});
const bf = document.createElement('iframe'); bf.src = URL.createObjectURL(blobDoc); document.body.appendChild(bf);
const job = "fetch('" + out + "/from-worker', {{mode: 'no-cors'}}).catch(() => 0);" +
            "fetch('/private/from-worker').catch(() => 0);";
try {{ new Worker(URL.createObjectURL(new Blob([job], {{type: 'text/javascript'}}))); }} catch (e) {{}}
try {{ new Worker('/worker.js'); }} catch (e) {{}}
try {{ new SharedWorker(URL.createObjectURL(new Blob([job], {{type: 'text/javascript'}}))); }} catch (e) {{}}
try {{ quiet(navigator.serviceWorker.register('/sw.js')); }} catch (e) {{}}
window.open(out + '/popup');
window.open('/popup-local', '_blank', 'noopener');
try {{ navigator.sendBeacon(out + '/beacon', 'x'); }} catch (e) {{}}
try {{ new WebSocket(out.replace('http', 'ws') + '/ws'); }} catch (e) {{}}
quiet(fetch(out + '/direct', {{mode: 'no-cors'}}));
quiet(fetch('http://169.254.169.254/latest/meta-data/', {{mode: 'no-cors'}}));
quiet(fetch('/private/api'));
quiet(fetch('/nosignal/api'));
quiet(fetch('/redirect-out'));
(async () => {{
  const grid = document.querySelector('div.grid');
  const calls = [];
  for (let i = 0; i < {API_CALLS}; i++) {{
    calls.push(fetch('/api/items?i=' + i).then(() => {{
      const a = document.createElement('a'); a.className = 'card'; a.href = '/gallery/item/1'; a.textContent = i;
      grid.appendChild(a);
    }}).catch(() => 0));
  }}
  await Promise.all(calls);
}})();
</script></body></html>"""


DETAIL = """<!doctype html><html><body><figure class="artwork"><img class="main" src="/images/1.png"></figure>
<p class="prompt">a lighthouse at dusk</p></body></html>"""

ROBOTS = "User-agent: *\nDisallow: /private/\nContent-Signal: /nosignal/\tai-train=no\n"


class Handler(BaseHTTPRequestHandler):
    server: Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
        path = self.path.split("?", 1)[0]
        if path == "/robots.txt":
            self._send(200, ROBOTS.encode(), "text/plain")
        elif path == "/gallery/":
            self._send(200, listing(self.server.other).encode(), "text/html")
        elif path == "/gallery/item/1":
            self._send(200, DETAIL.encode(), "text/html")
        elif path == "/api/items":
            self._send(200, b'{"ok": true}', "application/json")
        elif path == "/redirect-out":
            self._send(302, b"", "text/plain", Location=self.server.other + "/redirected")
        elif path == "/worker.js":
            job = f"fetch('{self.server.other}/from-worker-js', {{mode: 'no-cors'}}).catch(() => 0);"
            self._send(200, job.encode(), "text/javascript")
        elif path.endswith(".png"):
            self._send(200, optout_png(path), "image/png")
        else:
            self._send(404, b"not here", "text/plain")

    do_POST = do_GET


def serve(host: str) -> Iterator[Recorder]:
    server = Recorder(host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def outside() -> Iterator[Recorder]:
    yield from serve("127.0.0.2")


@pytest.fixture
def site(outside: Recorder) -> Iterator[Recorder]:
    for server in serve("127.0.0.1"):
        server.other = outside.origin
        yield server


def test_nothing_a_rendered_page_does_gets_past_the_crawls_policy(
    tmp_path: Path, site: Recorder, outside: Recorder
) -> None:
    if not Path("/usr/bin/chromium").exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    profile = tmp_path / "hostile.toml"
    profile.write_text(
        'name = "hostile"\nsource = "gallery"\nrender = "browser"\n'
        f'start_url = "{site.origin}/gallery/"\n'
        '[listing]\nitem_links = "css:div.grid a.card"\n'
        '[detail]\nimage = "css:figure.artwork img.main"\nprompt = "css:p.prompt"\n'
        'id_pattern = "/gallery/item/([^/?#]+)"\n'
    )
    result = run_crawl(
        "gallery",
        store=tmp_path / "store",
        args={"profile": str(profile)},
        settings={
            "IMAGECRAWL_CONTACT": "ops@example.org",
            "IMAGECRAWL_ALLOWED_NETWORKS": "127.0.0.1/32",
            "IMAGECRAWL_MAX_RATE_PER_SITE": str(RATE),
            "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "2",
            "IMAGECRAWL_PACING_START_RATE_PER_SECOND": str(RATE),
            "IMAGECRAWL_TUNING": {"browser_scroll_idle_seconds": "3"},
        },
        timeout=300,
    )
    stats = result.stats
    log = result.stdout + result.stderr
    # the other address never saw a request, nor even a connection
    assert outside.hits == [] and outside.connections == 0, (outside.hits, outside.connections)
    paths = [path for _, path, _ in site.hits]
    assert not [p for p in paths if p.startswith(("/private/", "/nosignal/", "/popup"))], paths
    assert "/sw.js" not in paths  # service workers are blocked
    # the crawl itself worked: the listing was rendered, the detail page read, the image stored
    assert stats.get("item_scraped_count") == 1, log[-3000:]
    assert stats["imagecrawl/browser/aborted/third_party"] >= 1
    assert stats["imagecrawl/browser/aborted/policy"] >= 2  # /private/api, /nosignal/api
    assert stats["imagecrawl/browser/aborted/redirect"] >= 1
    assert stats["imagecrawl/optout/robots_txt"] >= 1 and stats["imagecrawl/optout/content_signal"] >= 1
    # the page's burst of API calls kept to the site's cap: at most 2 starts in any second
    api = sorted(t for t, path, _ in site.hits if path.startswith("/api/items"))
    assert len(api) == API_CALLS
    windows = [api[i + 2] - api[i] for i in range(len(api) - 2)]
    assert min(windows) >= 0.9, windows
    assert api[-1] - api[0] >= (API_CALLS - 2) / RATE * 0.9
    # every request that reached the site spoke with the crawl's identity
    agents = {agent for _, _, agent in site.hits}
    assert len(agents) == 1, agents
    assert all("imagecrawl" in agent and "HeadlessChrome" not in agent for _, _, agent in site.hits)
