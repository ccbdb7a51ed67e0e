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
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin
from PIL.PngImagePlugin import PngInfo

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


# --- an image whose huge XMP refuses training ------------------------------------------------------


def big_xmp_png(seed: int, statement: str, filler_bytes: int = 1_700_000) -> bytes:
    pad = "<rdf:li>" + "keyword " * 12 + "</rdf:li>\n"
    filler = pad * (filler_bytes // len(pad))
    xmp = (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<rdf:Description rdf:about=""><dc:subject><rdf:Bag>{filler}</rdf:Bag></dc:subject></rdf:Description>'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" '
        f'plus:DataMining="http://ns.useplus.org/ldf/vocab/{statement}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    out = io.BytesIO()
    noise(seed).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_a_refusal_in_a_huge_xmp_is_never_stored(static_dir: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = static_dir
    (folder / "xmp-refuses.png").write_bytes(big_xmp_png(7, "DMI-PROHIBITED-AIMLTRAINING"))
    (folder / "xmp-allows.png").write_bytes(big_xmp_png(8, "DMI-ALLOWED"))
    result = urls_crawl(static_dir, tmp_path, ["xmp-refuses.png", "xmp-allows.png"])
    assert_clean(result)
    assert result.stats["imagecrawl/optout/embedded_data_mining"] == 1
    rows = read_store(tmp_path / "store", columns=["image_url", "data_mining"]).to_pylist()
    assert [(r["image_url"].rsplit("/", 1)[-1], r["data_mining"]) for r in rows] == [("xmp-allows.png", "DMI-ALLOWED")]


# --- the fuzz run ------------------------------------------------------------------------------------

#: strings chosen to break things: lone and paired surrogates, NUL and control characters, line and
#: paragraph separators, BOMs, non-characters, mixed normal forms, markup and infotext look-alikes,
#: very long text
ADVERSARIAL = [
    "bad \udc80 surrogate",
    "a cat \ud83d",
    "\ud83d\ude00 paired halves",
    "\udfff\ud800 reversed",
    "nul \x00 inside",
    "controls \x01\x02\x07\x08\x0b\x0c\x1b\x7f\x9f end",
    "lines\u2028para\u2029\r\nmixed\rbreaks",
    "\ufeffbom and \ufffe\uffff non-characters",
    "e\u0301 vs \u00e9, \u212b vs \u00c5, \ufb01 ligature",
    "rtl \u202egnirts\u202c and zw\u200b\u200d\u2060joiners",
    '<script>alert("x")</script> & "quotes" \'single\' ]]>',
    "{masterpiece}, [neg] (w:1.2)\nNegative prompt: x\nSteps: -5, Seed: 1e400, CFG scale: nan",
    "\U0010ffff \U000e0001 tags \U0001f3f3\ufe0f\u200d\U0001f308",
    "x" * 200_000,
    "\udc80" * 3000,
    "   ",
]


def random_strings(seed: int, n: int) -> list[str]:
    """``n`` strings of code points drawn from every plane, surrogates and controls weighted up."""
    rng = random.Random(seed)
    pools = [(0, 0x1F), (0xD800, 0xDFFF), (0x80, 0x2FFF), (0x10000, 0x10FFFF), (0x20, 0x7E)]
    out = []
    for _ in range(n):
        size = rng.choice([1, 5, 40, 300, 3000])
        out.append("".join(chr(rng.randint(*rng.choice(pools))) for _ in range(size)))
    return out


def hypothesis_strings(n: int) -> list[str]:
    """``n`` strings drawn by Hypothesis from every code point, surrogates included (its public
    ``example()``: random draws, not the shrunk simplest ones)."""
    import warnings

    from hypothesis import strategies as st

    alphabet = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
    strategy = st.text(alphabet, min_size=1, max_size=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [strategy.example() for _ in range(n)]


def infotext(p: str, n: str, sampler: str, model: str) -> str:
    return (
        f"{p}\nNegative prompt: {n}\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 5, Size: 48x40, Model: {model}"
    )


def raw_png(seed: int, chunks: list[tuple[bytes, bytes]]) -> bytes:
    info = PngInfo()
    for ctype, body in chunks:
        info.add(ctype, body)
    out = io.BytesIO()
    noise(seed).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def exif_user_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be", "surrogatepass")
    return exif.tobytes()


def fuzz_files(folder: Path, strings: list[str]) -> list[tuple[str, str | None]]:
    """One image per chunk kind and string: ``[(file name, caption or None), ...]``."""

    def pick(i: int) -> str:
        return strings[i % len(strings)]

    def utf8(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    made: list[tuple[str, str | None]] = []
    for i in range(len(strings)):
        text = infotext(pick(i), pick(i + 1), pick(i + 2), pick(i + 3))
        seed = 1000 + i * 16
        xmp = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
            f'<rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description></rdf:Description>'
            "</rdf:RDF></x:xmpmeta>"
        )
        sd = {
            "model_weights": pick(i + 4),
            "image": {
                "prompt": [{"prompt": pick(i), "weight": 1}, {"prompt": pick(i + 5), "weight": 2}],
                "seed": 3,
                "steps": 9,
            },
        }
        files: dict[str, bytes] = {
            "text": raw_png(seed, [(b"tEXt", b"parameters\0" + utf8(text))]),
            "itxt": raw_png(seed + 1, [(b"iTXt", b"parameters\0\0\0\0\0" + utf8(text))]),
            "ztxt": raw_png(seed + 2, [(b"zTXt", b"parameters\0\0" + zlib.compress(utf8(text)))]),
            "comfy": comfy_png(seed + 3, pick(i)),
            "xmp": raw_png(seed + 4, [(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + utf8(xmp))]),
            "dream": raw_png(seed + 5, [(b"tEXt", b"Dream\0" + utf8(f'"{pick(i)}" -s50 -S7 -A{pick(i + 2)[:20]}'))]),
            "sdmeta": raw_png(seed + 6, [(b"tEXt", b"sd-metadata\0" + json.dumps(sd).encode())]),
            "comment": raw_png(
                seed + 7,
                [(b"tEXt", b"Comment\0" + json.dumps({"prompt": pick(i), "uc": pick(i + 1), "steps": 28}).encode())],
            ),
        }
        for kind, fmt in (("jpeg", "JPEG"), ("webp", "WEBP")):
            out = io.BytesIO()
            noise(seed + 8 + len(kind)).save(out, fmt, exif=exif_user_comment(text))
            files[kind] = out.getvalue()
        for kind, body in files.items():
            name = f"fuzz-{i}-{kind}.{'jpg' if kind == 'jpeg' else kind if kind == 'webp' else 'png'}"
            (folder / name).write_bytes(body)
            made.append((name, pick(i + 7) if kind in ("text", "jpeg") and i % 2 else None))
    return made


def sandbox_overrides(strings: list[str], items: int) -> dict[str, Any]:
    numbers: list[Any] = [1e308, -1e308, "7.5\x00", "nan", 2**70, "abc", -3, "1e999", 7.0]
    out: dict[str, Any] = {}
    for s_index, source in enumerate(("civitai", "lexica", "gallery")):
        entries: dict[str, Any] = {}
        for i in range(items):
            k = i + s_index * 7
            fields: dict[str, Any] = {
                "prompt": strings[k % len(strings)],
                "negative_prompt": strings[(k + 1) % len(strings)],
                "sampler": strings[(k + 2) % len(strings)][:300],
                "model": strings[(k + 3) % len(strings)][:300],
                "username": strings[(k + 4) % len(strings)][:300],
                "show_meta": True,
                "embed_metadata": bool(i % 2),
            }
            if i % 3 == 0:
                fields["cfg_scale"] = numbers[i % len(numbers)]
                fields["steps"] = numbers[(i + 1) % len(numbers)]
                fields["seed"] = numbers[(i + 2) % len(numbers)]
            if source == "lexica":
                fields["prompt"] = "zebra " + fields["prompt"]  # found by the search below
            entries[str(i)] = fields
        out[source] = entries
    return out


def check_stored(result: Any, store: Path, what: str) -> int:
    assert_clean(result)
    assert result.stats.get("item_scraped_count"), (what, result.stats, result.stderr[-3000:])
    table = read_store(store, columns=["id", "prompt", "negative_prompt", "params", "cfg_scale", "model", "sampler"])
    for row in table.to_pylist():
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")  # every stored string is valid UTF-8 (and no surrogate survived)
        assert row["cfg_scale"] is None or math.isfinite(row["cfg_scale"]), row
    stats = result.stats
    assert not [k for k in stats if k.startswith("imagecrawl/media/errors/")], (what, stats)
    assert lost(stats, table.num_rows) == 0, (what, table.num_rows, stats)
    assert table.num_rows > 0, (what, stats)
    return table.num_rows


def test_fuzz_every_field_of_every_source_loses_no_row(
    sandbox_factory: SandboxFactory, static_dir: tuple[Path, str], tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    strings = ADVERSARIAL + random_strings(seed, 10) + hypothesis_strings(10)
    # on failure, the strings of this run are here to reproduce it (json.dumps keeps surrogates as escapes)
    (tmp_path / "strings.json").write_text(json.dumps({"seed": seed, "strings": strings}))
    items = 24
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps(sandbox_overrides(strings, items)))
    site = sandbox_factory.start(items=items, name="fuzz", extra_args=["--overrides", str(overrides)], log=False)
    base = site.base_url.rstrip("/")
    stored = {
        "civitai": check_stored(
            run_crawl(
                "civitai",
                store=tmp_path / "c",
                args={"api_url": base, "nsfw": "all", "limit": "8"},
                settings=FAST,
                check=False,
            ),
            tmp_path / "c",
            "civitai",
        ),
        "lexica": check_stored(
            run_crawl("lexica", store=tmp_path / "l", args={"api_url": base, "q": "zebra"}, settings=FAST, check=False),
            tmp_path / "l",
            "lexica",
        ),
        "gallery": check_stored(
            run_crawl(
                "gallery",
                store=tmp_path / "g",
                args={"start_url": f"{base}/gallery/", "profile": "sandbox"},
                settings=FAST,
                check=False,
            ),
            tmp_path / "g",
            "gallery",
        ),
    }
    folder, url = static_dir
    files = fuzz_files(folder, strings[:12])
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps({"url": url + name, "caption": caption}) + "\n" for name, caption in files))
    urls = run_crawl("urls", store=tmp_path / "u", args={"input": str(listing)}, settings=FAST, check=False)
    stored["urls"] = check_stored(urls, tmp_path / "u", "urls")
    assert stored["urls"] + urls.stats.get("item_dropped_count", 0) == len(files), (stored, urls.stats)
