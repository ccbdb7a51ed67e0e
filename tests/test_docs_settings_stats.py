"""docs/settings.md and docs/stats.md list every setting the code reads and every stat it sets (found
by parsing imagecrawl/ and spiders/, see tests/codescan.py), and nothing the code no longer has;
docs/schema.md lists every column of the Arrow schema.

imagecrawl/defaults.py is the one source of the IMAGECRAWL_* defaults: every setting the code reads is
defined there, no read restates a default, and each default documented in docs/settings.md is the value
defined there."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import default_settings

from imagecrawl import defaults as project
from imagecrawl import settings as own_settings
from imagecrawl.schema import SCHEMA
from imagecrawl.tuning import fields as tuning_fields

from .codescan import REPO, canonical, restated_defaults, scan, scan_reads

DOCS = REPO / "docs"
ROW = re.compile(r"^\|(.+)\|\s*$", re.M)


def table_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in m.group(1).split("|")] for m in ROW.finditer(path.read_text())]


def documented(path: Path, pattern: str) -> dict[str, list[str]]:
    """First-cell names (in backticks) of the doc's table rows -> the row's cells."""
    out: dict[str, list[str]] = {}
    for cells in table_rows(path):
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if re.fullmatch(pattern, name):
                out[name] = cells
    return out


def test_every_setting_is_documented_with_type_default_and_meaning() -> None:
    found = scan()
    docs = documented(DOCS / "settings.md", r"[A-Z][A-Z0-9_]+")
    missing = {name: sorted(where) for name, where in found.settings.items() if name not in docs}
    assert not missing, f"settings read by the code but not in docs/settings.md: {missing}"
    for name, cells in docs.items():
        assert len(cells) >= 4 and all(cells[:4]), f"{name}: needs type, default and meaning"
    stale = sorted(n for n in docs if n.startswith("IMAGECRAWL_") and n not in found.settings)
    assert not stale, f"docs/settings.md lists settings the code no longer reads: {stale}"


def test_no_setting_read_restates_its_default() -> None:
    _, restated = scan_reads()
    listed = "\n".join(f"  {read.where}: {read.code}" for read in restated)
    assert not restated, f"reads that restate a default (imagecrawl/defaults.py has it; drop the fallback):\n{listed}"


def test_every_setting_read_has_its_default_in_settings_py() -> None:
    reads, _ = scan_reads()
    missing: dict[str, list[str]] = {}
    for read in reads:
        if not hasattr(project, read.name):
            missing.setdefault(read.name, []).append(read.where)
    assert not missing, f"settings read by the code but not defined in imagecrawl/defaults.py: {missing}"


def test_the_default_scanner_sees_what_it_should() -> None:
    code = """
settings.getfloat("IMAGECRAWL_A", 2.0)
crawler.settings.getbool("IMAGECRAWL_B", default=True)
self.crawler.settings.get("IMAGECRAWL_C") or "data/"
str(settings.get("IMAGECRAWL_D") or "")
settings.getlist("IMAGECRAWL_E") or list(DEFAULT_E)
s.getint("IMAGECRAWL_F", DEFAULT_F)
settings.get("IMAGECRAWL_OK_1")
settings.getint("IMAGECRAWL_OK_2", settings.getint("RETRY_TIMES"))
settings.get("IMAGECRAWL_OK_3") or spider_name
settings.get("IMAGECRAWL_OK_4") or settings.get("REDIS_URL") or ""
settings.getpriority("IMAGECRAWL_OK_5") or 15
os.environ.get("IMAGECRAWL_OK_6", "")
settings.getint("RETRY_TIMES", 3)
settings.getint("IMAGECRAWL_G", settings.getint("RETRY_TIMES", 3))
"""
    flagged = {read.name for read in restated_defaults(ast.parse(code), "x.py")}
    assert flagged == {f"IMAGECRAWL_{c}" for c in "ABCDEFG"}


def settings_tables(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """(header cells, row cells) of every row of every table in ``path``."""
    header: list[str] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not ROW.match(line):
            header = []
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+\s*", lines[i + 1]):
            header = [c.lower() for c in cells]
        elif header and not set(line) <= set("|-: "):
            yield header, cells


UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
SIZE = re.compile(r"(\d+(?:\.\d+)?) ?(KiB|MiB|GiB|TiB)")
NOT_A_VALUE = object()
ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Pow: operator.pow,
}


def _number(node: ast.expr) -> Any:
    """``2 * 1024 * 1024``, ``64_000_000``, ``-1``: arithmetic on number literals only."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        return ARITHMETIC[type(node.op)](_number(node.left), _number(node.right))
    raise ValueError(ast.unparse(node))


def parse_default(text: str) -> Any:
    """A documented default as a value: a Python literal, arithmetic (``256 * 1024 * 1024``) or a size
    (``2 GiB``); NOT_A_VALUE for anything else."""
    size = SIZE.fullmatch(text.strip())
    if size:
        return int(float(size.group(1)) * UNITS[size.group(2)])
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return _number(ast.parse(text, mode="eval").body)
    except (ValueError, SyntaxError):
        return NOT_A_VALUE


def same(documented: Any, real: Any) -> bool:
    """Equal, with ints and floats compared as numbers and lists and tuples as sequences (never bool for 1)."""
    if isinstance(documented, bool) or isinstance(real, bool):
        return type(documented) is type(real) and documented == real
    if isinstance(documented, list | tuple) and isinstance(real, list | tuple):
        return len(documented) == len(real) and all(map(same, documented, real))
    return bool(documented == real)


TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "list": (list, tuple),
    "dict": (dict,),
}


def real_default(name: str) -> Any:
    """What a crawl of this project starts from: imagecrawl/settings.py (the project's own), then
    imagecrawl/defaults.py (the add-on's), else Scrapy's default (None when none has it)."""
    for module in (own_settings, project):
        if hasattr(module, name):
            return getattr(module, name)
    return getattr(default_settings, name, None)


def check_default(name: str, kind: str, cell: str) -> str | None:
    """Why the documented default ``cell`` of ``name`` is wrong, or None."""
    real = real_default(name)
    if kind in TYPES and real is not None:
        ok = isinstance(real, TYPES[kind]) and not (kind in ("int", "float") and isinstance(real, bool))
        if not ok:
            return f"documented as {kind}, but the default is {real!r}"
    start = re.match(r"`([^`]+)`", cell)
    if start and (value := parse_default(start.group(1))) is not NOT_A_VALUE:
        if not same(value, real):
            return f"documented default {start.group(1)} != {real!r}"
        for amount, unit in SIZE.findall(cell[start.end() :]):  # "(256 MiB)" after the value
            if not same(int(float(amount) * UNITS[unit]), real):
                return f"size note {amount} {unit} != {real!r}"
        return None
    if re.match(r"unset\b", cell):
        return None if real is None else f"documented as unset, but the default is {real!r}"
    if isinstance(real, list | tuple | dict) or not (name.startswith("IMAGECRAWL_") or hasattr(project, name)):
        return None  # a long list or component dict, or a value Scrapy or an add-on derives: described in words
    return f"give the default as a Python literal in backticks (the value is {real!r}), not {cell!r}"


def test_every_documented_default_is_the_real_one() -> None:
    wrong: list[str] = []
    rows = 0
    for header, cells in settings_tables(DOCS / "settings.md"):
        column = next((i for i, h in enumerate(header) if h.startswith("default")), None)
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if column is None or "type" not in header or not names:
            continue
        for name in names:
            rows += 1
            why = check_default(name, cells[header.index("type")], cells[column])
            if why:
                wrong.append(f"{name}: {why}")
    assert rows > 100, rows  # the tables were found
    assert not wrong, "docs/settings.md defaults that are not imagecrawl/defaults.py's:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("name", "kind", "cell", "wrong"),
    [
        ("IMAGECRAWL_SHARD_MAX_BYTES", "int", "`268435456` (256 MiB)", False),
        ("IMAGECRAWL_SHARD_MAX_BYTES", "int", "`256 * 1024 * 1024`", False),
        ("IMAGECRAWL_SHARD_MAX_BYTES", "int", "`256 MiB`", False),
        ("IMAGECRAWL_SHARD_MAX_BYTES", "int", "`268435456` (128 MiB)", True),
        ("IMAGECRAWL_SHARD_MAX_BYTES", "float", "`268435456`", False),
        ("IMAGECRAWL_SHARD_MAX_BYTES", "str", "`268435456`", True),
        ("IMAGECRAWL_SHARD_MAX_SECONDS", "float", "`600`", False),
        ("IMAGECRAWL_MEDIA_THREADS", "int", "`0`", True),
        ("IMAGECRAWL_DEDUPE_ENABLED", "bool", "`1`", True),
        ("IMAGECRAWL_STORE", "str", "a local folder", True),
        ("IMAGECRAWL_PACING_START_RATE_PER_SECOND", "float", "`None`: a quarter of the cap", False),
        ("IMAGECRAWL_PACING_START_RATE_PER_SECOND", "float", "unset", False),
        ("IMAGECRAWL_OPTOUT_DIRECTIVES", "list", "built-in list", False),
        ("USER_AGENT", "str", "built from `IMAGECRAWL_CONTACT`", False),
        ("RETRY_PRIORITY_ADJUST", "int", "`-1`", False),
        ("JOBDIR", "str", "unset", False),
    ],
)
def test_the_default_check_sees_what_it_should(name: str, kind: str, cell: str, wrong: bool) -> None:
    assert (check_default(name, kind, cell) is not None) is wrong


def tuning_rows() -> dict[str, list[str]]:
    """The rows of docs/settings.md's table of ``IMAGECRAWL_TUNING`` keys (header ``key | type | default``)."""
    rows: dict[str, list[str]] = {}
    for header, cells in settings_tables(DOCS / "settings.md"):
        key = re.fullmatch(r"`([a-z0-9_]+)`", cells[0])
        if header[:3] == ["key", "type", "default"] and key:
            rows[key.group(1)] = cells
    return rows


def tuning_default_problem(key: str, kind: str, cell: str, real: Any) -> str | None:
    """Why a documented tuning key's type or default ``cell`` is not the real default ``real``, or None."""
    if kind not in TYPES or not (real is None or isinstance(real, TYPES[kind])):
        return f"documented as {kind}, but the default is {real!r}"
    if isinstance(real, bool) != (kind == "bool") and real is not None:
        return f"documented as {kind}, but the default is {real!r}"
    start = re.match(r"`([^`]+)`", cell)
    value = parse_default(start.group(1)) if start else NOT_A_VALUE
    if value is NOT_A_VALUE:
        return None if isinstance(real, tuple) else f"give the default as a Python literal in backticks, not {cell!r}"
    return None if same(value, real) else f"documented default {start.group(1) if start else cell} != {real!r}"


def test_every_tuning_key_is_documented_with_its_default() -> None:
    """imagecrawl/tuning.py's Tuning is the one source of the internals' defaults; the docs list each key."""
    rows = tuning_rows()
    real = tuning_fields()
    assert sorted(set(real) - set(rows)) == [], "IMAGECRAWL_TUNING keys missing from docs/settings.md"
    assert sorted(set(rows) - set(real)) == [], "docs/settings.md lists IMAGECRAWL_TUNING keys Tuning does not have"
    wrong = []
    for key, cells in rows.items():
        assert len(cells) >= 4 and all(cells[:4]), f"{key}: needs type, default and meaning"
        why = tuning_default_problem(key, cells[1], cells[2], real[key])
        if why:
            wrong.append(f"{key}: {why}")
    assert not wrong, "docs/settings.md tuning defaults that are not Tuning's:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("kind", "cell", "real", "wrong"),
    [
        ("float", "`2.0`", 2.0, False),
        ("float", "`3.0`", 2.0, True),
        ("int", "`524288` (512 KiB)", 524288, False),
        ("bool", "`True`", True, False),
        ("bool", "`1`", True, True),
        ("int", "`True`", True, True),
        ("list", "ten markers", ("a", "b"), False),
        ("float", "a few seconds", 2.0, True),
        ("bool", "`None`: on when distributed", None, False),
    ],
)
def test_the_tuning_default_check_sees_what_it_should(kind: str, cell: str, real: Any, wrong: bool) -> None:
    assert (tuning_default_problem("k", kind, cell, real) is not None) is wrong


def test_every_stat_is_documented() -> None:
    found = scan()
    docs = {canonical(k): cells for k, cells in documented(DOCS / "stats.md", r"imagecrawl/[^\s]+").items()}
    missing = {key: sorted(where) for key, where in found.stats.items() if key not in docs}
    assert not missing, f"stats set by the code but not in docs/stats.md (dynamic parts as <reason>): {missing}"
    for key, cells in docs.items():
        assert len(cells) >= 3 and all(cells[:3]), f"{key}: needs kind and meaning"
    stale = sorted(k for k in docs if k not in found.stats)
    assert not stale, f"docs/stats.md lists stats the code no longer sets: {stale}"


def test_the_scanner_sees_what_it_should() -> None:
    """The completeness tests are only as good as the scanner: known reads and stats must be found."""
    found = scan()
    for name in ("IMAGECRAWL_STORE", "IMAGECRAWL_WORKER_ID", "IMAGECRAWL_PROGRESS_INTERVAL_SECONDS", "JOBDIR"):
        assert name in found.settings, name
    assert "AWS_ENDPOINT_URL" in found.settings  # settings.get("...") through a parameter named settings
    for key in ("imagecrawl/dedupe/dropped/<*>", "imagecrawl/store/rows_committed", "imagecrawl/pages/urls/rows"):
        assert key in found.stats, key
    # an f-string stat and its documented <reason> form meet in the same canonical key
    assert canonical("imagecrawl/validate/dropped/<reason>") in found.stats


def test_schema_doc_lists_every_column() -> None:
    rows = table_rows(DOCS / "schema.md")
    names = {n for cells in rows for n in re.findall(r"`([a-z_0-9]+)`", cells[0])}
    assert set(SCHEMA.names) <= names, sorted(set(SCHEMA.names) - names)
    assert names - {"column"} <= set(SCHEMA.names), sorted(names - set(SCHEMA.names))
