"""Benchmark: imagecrawl.metadata vs sd-parsers on the real-world corpus.

For every file of ``MANIFEST.json`` both tools read the same in-memory bytes; each expected field
(prompt, negative_prompt, seed, steps, sampler, cfg_scale, model, width, height) is compared with the
corpus rules (strings after ``strip()``, ints exactly, other numbers numerically; any listed
alternative spelling accepted).  Negative samples count as right when nothing is found.
Speed is files per second over several repetitions in the same process (best repetition reported).

    uv run python -m benchmarks.metadata_vs_sdparsers [--corpus DIR] [--repeat 5]

sd-parsers' results are mapped as favourably as its data model allows: first prompt / negative
prompt, first sampler's name and normalised parameters (``seed``, ``steps``, ``cfg_scale``, else
the same keys of its metadata), its model's name (NovelAI: name + hash, i.e. the Source string),
and width/height from any ``width``/``height``/``size``/``resolution`` key of the sampler
parameters or the metadata.  An empty negative prompt is assumed when it found a prompt but
no negative one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagecrawl.metadata import extract_metadata

FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "cfg_scale", "model", "width", "height")
Result = dict[str, Any] | None


def default_corpus() -> Path:
    env = os.environ.get("IMAGECRAWL_REALWORLD_DIR")
    base = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "realworld"
    return base / "images" if (base / "images").is_dir() else base


def same(got: Any, want: Any) -> bool:
    if isinstance(got, str) or isinstance(want, str):
        return isinstance(got, str) and isinstance(want, str) and got.strip() == want.strip()
    if got is None or want is None:
        return got is want
    if isinstance(got, bool) or isinstance(want, bool):
        return False
    if isinstance(got, int) and isinstance(want, int):
        return got == want
    try:
        return float(got) == float(want)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ tools
def run_imagecrawl(data: bytes) -> Result:
    meta = extract_metadata(data)
    if not meta.found():
        return None
    return {f: getattr(meta, f) for f in FIELDS}


def _num(value: Any) -> Any:
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"-?\d+", s):
            return int(s)
        try:
            return float(s)
        except ValueError:
            return value
    return value


def _size_from(mapping: dict[Any, Any]) -> tuple[Any, Any]:
    low = {str(k).lower(): v for k, v in mapping.items()}
    if "width" in low and "height" in low:
        return _num(low["width"]), _num(low["height"])
    for key in ("size", "resolution"):
        if isinstance(low.get(key), str):
            nums = re.findall(r"\d+", low[key])
            if len(nums) == 2:
                return int(nums[0]), int(nums[1])
    return None, None


def make_sdparsers(eager: bool) -> Callable[[bytes], Result]:
    from sd_parsers import ParserManager
    from sd_parsers.extractors import Eagerness

    manager = ParserManager(eagerness=Eagerness.EAGER if eager else Eagerness.DEFAULT)

    def run(data: bytes) -> Result:
        try:
            info = manager.parse(io.BytesIO(data))
        except Exception:  # it raises on unreadable images (e.g. the 0-byte file)
            return None
        if info is None:
            return None
        out: dict[str, Any] = dict.fromkeys(FIELDS)
        prompts = list(info.prompts)
        negatives = list(info.negative_prompts)
        out["prompt"] = prompts[0].value if prompts else None
        out["negative_prompt"] = negatives[0].value if negatives else ("" if prompts else None)
        if info.samplers:
            sampler = info.samplers[0]
            params = sampler.parameters or {}
            out["sampler"] = sampler.name
            meta = info.metadata or {}
            for field in ("seed", "steps", "cfg_scale"):
                out[field] = _num(params.get(field, meta.get(field)))
            model = sampler.model or next(iter(info.models), None)
            if model is not None:
                out["model"] = model.name
                if model.name and model.hash and "NOVELAI" in str(info.generator):
                    out["model"] = f"{model.name} {model.hash}"  # it splits NovelAI's Source string
            w, h = _size_from(params)
            if w is None:
                w, h = _size_from(info.metadata or {})
            out["width"], out["height"] = w, h
        return out

    return run


# ------------------------------------------------------------------------------------------ scoring
def score(run: Callable[[bytes], Result], files: list[tuple[dict[str, Any], bytes]]) -> dict[str, Any]:
    matched = expected = neg_ok = neg_total = 0
    misses: list[str] = []
    for entry, data in files:
        result = run(data)
        exp = entry.get("expected") or {}
        if not exp:
            neg_total += 1
            neg_ok += result is None
            if result is not None:
                misses.append(f"{entry['file']}: false positive")
            continue
        for field, want in exp.items():
            expected += 1
            got = None if result is None else result.get(field)
            alts = [a["value"] for a in entry.get("alternatives", {}).get(field, [])]
            if same(got, want) or any(same(got, a) for a in alts):
                matched += 1
            else:
                misses.append(f"{entry['file']}: {field}")
    return {
        "matched": matched,
        "expected": expected,
        "neg_ok": neg_ok,
        "neg_total": neg_total,
        "misses": misses,
    }


def speed(run: Callable[[bytes], Result], files: list[tuple[dict[str, Any], bytes]], repeat: int) -> float:
    run(files[0][1])  # warm-up (imports, plugin registration)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _entry, data in files:
            run(data)
        best = min(best, time.perf_counter() - t0)
    return len(files) / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=default_corpus())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args(argv)
    manifest_path = args.corpus / "MANIFEST.json"
    if not manifest_path.is_file():
        print(f"corpus not found at {args.corpus} (set IMAGECRAWL_REALWORLD_DIR)", file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files = [(e, (args.corpus / e["file"]).read_bytes()) for e in manifest]

    tools: dict[str, Callable[[bytes], Result]] = {"imagecrawl": run_imagecrawl}
    try:
        tools["sd-parsers (default)"] = make_sdparsers(eager=False)
        tools["sd-parsers (eager)"] = make_sdparsers(eager=True)
    except ImportError:
        print("sd-parsers is not installed (uv sync --dev)", file=sys.stderr)

    results = {}
    for name, run in tools.items():
        sc = score(run, files)
        sc["files_per_second"] = speed(run, files, args.repeat)
        results[name] = sc
    if args.json:
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "misses"} for k, v in results.items()}))
        return 0
    print(f"corpus: {args.corpus} ({len(files)} files, {sum(len(d) for _, d in files) / 1e6:.1f} MB)")
    print(f"{'tool':<22} {'fields matched':>16} {'negatives ok':>13} {'files/s':>10}")
    for name, sc in results.items():
        fields = f"{sc['matched']}/{sc['expected']}"
        negs = f"{sc['neg_ok']}/{sc['neg_total']}"
        print(f"{name:<22} {fields:>16} {negs:>13} {sc['files_per_second']:>10.0f}")
        if args.show_misses:
            for miss in sc["misses"]:
                print(f"    miss {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
