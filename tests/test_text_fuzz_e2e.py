"""Text and numbers no store can hold as given, through real crawls into a real store.

* A Civitai item whose prompt holds a lone surrogate (valid JSON: ``"bad \\udc80 surrogate"``) and one
  whose ``cfgScale`` is 1e308: every item lands (the prompt with U+FFFD, the number as null, both
  counted), exit 0, and the next run into the same store works.
* A PNG whose ComfyUI ``prompt`` chunk holds ``"a cat \\ud83d"``, crawled by the ``urls`` spider from a
  static loopback server: stored; ``imagecrawl metadata`` prints it without a traceback.
* A fuzz run: random and adversarial strings (surrogates, NUL, control characters, very long text,
  mixed normal forms) in every API field, HTML field and metadata chunk, through the civitai, lexica,
  gallery and urls spiders: every item scraped is stored unless counted as dropped.
"""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from imagecrawl.storage import layout
from tests.conftest import REPO, read_store, run_crawl
from tests.sandbox.testing import SandboxProcess
from tests.servers import SandboxFactory, free_port, stop_process

pytestmark = pytest.mark.e2e

#: the sandbox is ours: lift the per-site caps as for a site one owns
FAST = {"IMAGECRAWL_MAX_RATE_PER_SITE": "200", "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": "8"}


def assert_clean(result: Any) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-6000:]
    assert "Logging error" not in result.stderr, result.stderr[-4000:]


def lost(stats: dict[str, Any], stored: int) -> int:
    """Items scraped but neither stored nor counted as dropped."""
    dropped = sum(v for k, v in stats.items() if k.startswith("imagecrawl/parquet/rows_dropped/"))
    return int(stats.get("item_scraped_count", 0)) - dropped - stored


@pytest.fixture(scope="module")
def surrogate_site(sandbox_factory: SandboxFactory, tmp_path_factory: pytest.TempPathFactory) -> SandboxProcess:
    overrides = tmp_path_factory.mktemp("overrides") / "overrides.json"
    # json.dumps escapes the lone surrogate: the file is valid JSON, as the API's answer is
    overrides.write_text(
        json.dumps(
            {
                "civitai": {str(i): {"prompt": "bad \udc80 surrogate", "show_meta": True} for i in range(0, 40, 3)}
                | {"1": {"cfg_scale": 1e308, "show_meta": True}, "2": {"seed": 2**70, "show_meta": True}}
            }
        )
    )
    return sandbox_factory.start(items=40, name="surrogates", extra_args=["--overrides", str(overrides)])


def test_a_lone_surrogate_and_a_huge_number_lose_no_row(surrogate_site: SandboxProcess, tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = {"api_url": surrogate_site.base_url.rstrip("/"), "max_items": "40", "nsfw": "all", "limit": "10"}
    first = run_crawl("civitai", store=store, args=args, settings=FAST, check=False)
    assert_clean(first)
    table = read_store(store, columns=["id", "prompt", "cfg_scale", "seed", "params"])
    rows = table.to_pylist()
    assert lost(first.stats, len(rows)) == 0, first.stats
    assert first.stats["imagecrawl/records/text_replaced/prompt"] >= 1
    assert first.stats["imagecrawl/records/out_of_range/cfg_scale"] == 1
    assert first.stats["imagecrawl/records/out_of_range/seed"] == 1
    bad = [r for r in rows if r["prompt"] == "bad \ufffd surrogate"]
    assert bad, [r["prompt"] for r in rows]
    assert all(r["cfg_scale"] is None or math.isfinite(r["cfg_scale"]) for r in rows)
    kept = [json.loads(r["params"]) for r in rows if r["params"] and "cfg_scale" in json.loads(r["params"])]
    assert [p["cfg_scale"] for p in kept] == ["1e+308"]
    # the next run into the same store starts from a usable outbox (it used to exit 5, every time)
    second = run_crawl("civitai", store=store, args=args, settings=FAST, check=False)
    assert_clean(second)
    outbox = store / layout.STATE_DIR / "outbox"
    assert [p.name for p in outbox.iterdir() if not p.name.startswith(".")] == []


# --- files served as they are ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A static file server on loopback (Python's http.server in its own process)."""
    folder = tmp_path_factory.mktemp("static")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import time
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield folder, f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)


def noise(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def comfy_png(seed: int, text: str) -> bytes:
    graph = {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 5, "steps": 20, "cfg": 7, "sampler_name": "euler", "positive": ["6", 0]},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text}},
    }
    info = PngImagePlugin.PngInfo()
    info.add(b"tEXt", b"prompt\0" + json.dumps(graph).encode("ascii"))
    out = io.BytesIO()
    noise(seed).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def urls_crawl(static: tuple[Path, str], tmp_path: Path, names: list[str]) -> Any:
    _, base = static
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps({"url": base + name}) + "\n" for name in names))
    return run_crawl("urls", store=tmp_path / "store", args={"input": str(listing)}, settings=FAST, check=False)


def test_a_comfyui_chunk_with_a_lone_surrogate_is_stored(static_dir: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = static_dir
    (folder / "comfy-cat.png").write_bytes(comfy_png(1, "a cat \ud83d"))
    result = urls_crawl(static_dir, tmp_path, ["comfy-cat.png"])
    assert_clean(result)
    rows = read_store(tmp_path / "store", columns=["prompt", "metadata_source"]).to_pylist()
    assert rows == [{"prompt": "a cat \ufffd", "metadata_source": "png:comfyui"}]
    assert result.stats["imagecrawl/records/text_replaced/prompt"] == 1
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("imagecrawl")), "metadata", str(folder / "comfy-cat.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert json.loads(shown.stdout)["prompt"] == "a cat \ufffd"
