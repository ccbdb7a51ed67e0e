"""AUTOMATIC1111-style "infotext" (also Forge, reForge, SD.Next, Civitai, Fooocus a1111 scheme, ...).

::

    <prompt, possibly several lines>
    Negative prompt: <negative, possibly several lines>
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x768, Model: x, Lora hashes: "a: b, c: d"
    [Template: ... extra "Key: value" lines written by extensions]
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from imagecrawl.metadata.types import ImageMetadata

logger = logging.getLogger(__name__)

_KEY = r"[A-Za-z][\w \-/.()\[\]+]{0,60}?"
_PARAM_START = re.compile(r"\s*(" + _KEY + r"):\s*")  # only ever .match()ed at a known position
# counting candidates: anchored at the start or a comma, so whitespace runs are scanned once (linear)
_PARAM_COUNT = re.compile(r"(?:^|,)[ \t]*" + _KEY + r":")
_NEXT_KEY = re.compile(r",\s*" + _KEY + r":\s")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX*\u00d7]\s*(\d+)\s*$")

# keys whose value is a "k: v, k2: v2" mapping (A1111 writes them quoted)
_HASH_LISTS = ("Lora hashes", "TI hashes", "LoRA hashes", "Lora weights")
MAX_PARAMS = 500
MAX_PARAMS_LINE = 64 * 1024


def parse_params_line(line: str) -> dict[str, Any]:
    """``Key: value, Key: "quoted, value", Key: {json}`` -> {key: raw value}. Values are strings or JSON."""
    out: dict[str, Any] = {}
    pos = 0
    n = len(line)
    steps = 0
    while pos < n and len(out) < MAX_PARAMS and steps < 4 * MAX_PARAMS:
        steps += 1
        m = _PARAM_START.match(line, pos)
        if not m:
            # skip to the next separator
            nxt = line.find(",", pos)
            if nxt == -1:
                break
            pos = nxt + 1
            continue
        key = m.group(1).strip()
        pos = m.end()
        value: Any
        if pos < n and line[pos] == '"':
            end = _scan_quoted(line, pos)
            token = line[pos:end]
            try:
                value = json.loads(token)
            except (ValueError, RecursionError):
                value = token.strip('"')
            pos = end
        elif pos < n and line[pos] in "[{":
            end = _scan_balanced(line, pos)
            token = line[pos:end]
            try:
                value = json.loads(token)
            except (ValueError, RecursionError):
                value = token
            pos = end
        else:
            nm = _NEXT_KEY.search(line, pos)
            end = nm.start() if nm else n
            value = line[pos:end].strip()
            pos = end
        out[key] = value
        # consume up to and including the next comma
        comma = line.find(",", pos)
        if comma == -1:
            break
        pos = comma + 1
    return out


_QUOTED = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _scan_quoted(s: str, pos: int) -> int:
    """Index after the closing quote of the string starting at ``pos`` (a '"'); len(s) if unterminated."""
    m = _QUOTED.match(s, pos)
    return m.end() if m else len(s)


def _scan_balanced(s: str, pos: int) -> int:
    depth = 0
    i = pos
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            i = _scan_quoted(s, i)
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def parse_hash_list(value: str) -> dict[str, str]:
    """``"name: hash, name2: hash2"`` -> {name: hash}."""
    out: dict[str, str] = {}
    for part in value.split(",", MAX_PARAMS)[:MAX_PARAMS]:
        name, sep, h = part.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = h.strip()
    return out


def _is_params_line(line: str) -> bool:
    if line.startswith("Steps:"):
        return True
    if len(line) > MAX_PARAMS_LINE:  # a parameters line without "Steps:" is short; skip giant lines
        return False
    return len(_PARAM_COUNT.findall(line)) >= 3 and len(parse_params_line(line)) >= 3


_MAX_NUMBER_CHARS = 64  # longer strings are not numbers we care about (and keep the regexes linear)


def to_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS:
        s = value.strip()
        if _INT.fullmatch(s):
            return int(s)
        if _NUMBER.fullmatch(s):
            try:
                return float(s)
            except ValueError:
                return None
    return None


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS:
        s = value.strip()
        if _INT.fullmatch(s):
            return int(s)
        if _NUMBER.fullmatch(s):
            f = float(s)
            return int(f) if f.is_integer() else None
    return None


def to_float(value: Any) -> float | None:
    n = to_number(value)
    return None if n is None else float(n)


def parse_size(value: Any) -> tuple[int, int] | None:
    """``"512x768"``, ``"(768, 1280)"``, ``"1024 x 1024"``, ``[w, h]`` -> (w, h)."""
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_CHARS:
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)), int(m.group(2))
        nums = re.findall(r"\d+", value)
        if len(nums) == 2:
            return int(nums[0]), int(nums[1])
    if isinstance(value, list | tuple) and len(value) == 2:
        w, h = to_int(value[0]), to_int(value[1])
        if w is not None and h is not None:
            return w, h
    return None


def looks_like_infotext(text: str) -> bool:
    """Cheap test: does the text have an A1111 parameters line?"""
    if "Steps:" not in text and "Negative prompt:" not in text:
        return False
    return any(_is_params_line(line.strip()) for line in text.split("\n")[-12:])


def parse_infotext(text: str, *, require_params: bool = True) -> ImageMetadata | None:
    """Parse an A1111 infotext; None if it does not look like one (and ``require_params``)."""
    text = text.strip("\x00").strip()
    if not text:
        return None
    lines = text.split("\n")
    idx = None
    for i in range(len(lines) - 1, max(-1, len(lines) - 40), -1):
        if lines[i].strip().startswith("Steps:"):
            idx = i
            break
    if idx is None:
        for i in range(len(lines) - 1, max(-1, len(lines) - 40), -1):
            if _is_params_line(lines[i].strip()):
                idx = i
                break
    if idx is None and require_params:
        return None
    params: dict[str, Any] = {}
    if idx is not None:
        params = parse_params_line(lines[idx].strip())
        # extra "Key: value" lines after the parameters line (e.g. dynamic prompts' Template:)
        for extra in lines[idx + 1 :]:
            k, sep, v = extra.partition(":")
            if sep and k.strip() and len(k) <= 60:
                params[k.strip()] = v.strip()
        head = "\n".join(lines[:idx])
    else:
        head = text
    prompt, negative = _split_negative(head)
    meta = ImageMetadata(prompt=prompt, negative_prompt=negative)
    apply_a1111_params(meta, params)
    if not meta.prompt and meta.negative_prompt is None and not params:
        return None
    return meta


def _split_negative(head: str) -> tuple[str | None, str | None]:
    marker = "Negative prompt:"
    if head.startswith(marker):
        return "", head[len(marker) :].strip()
    pos = head.find("\n" + marker)
    if pos == -1:
        return head.strip(), None
    return head[:pos].strip(), head[pos + 1 + len(marker) :].strip()


def apply_a1111_params(meta: ImageMetadata, params: dict[str, Any]) -> None:
    """Move the well-known A1111 keys into typed fields; everything else to ``meta.params``."""
    rest: dict[str, Any] = {}
    for key, value in params.items():
        if key == "Steps":
            meta.steps = to_int(value)
            if meta.steps is None:
                rest[key] = value
        elif key == "Seed":
            meta.seed = to_int(value)
            if meta.seed is None:
                rest[key] = value
        elif key == "Sampler":
            meta.sampler = str(value)
        elif key == "CFG scale":
            meta.cfg_scale = to_float(value)
            if meta.cfg_scale is None:
                rest[key] = value
        elif key == "Size":
            size = parse_size(value)
            if size:
                meta.width, meta.height = size
            else:
                rest[key] = value
        elif key == "Model":
            meta.model = str(value)
        elif key in _HASH_LISTS and isinstance(value, str):
            rest[key] = parse_hash_list(value)
        elif isinstance(value, str):
            num = to_number(value)
            rest[key] = num if num is not None and not key.endswith(("hash", "Hash")) else value
        else:
            rest[key] = value
    meta.params.update(rest)
