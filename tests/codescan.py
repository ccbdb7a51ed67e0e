"""What the code reads and counts, found by parsing it (used by the docs completeness tests).

- settings: every ``IMAGECRAWL_*`` string constant and settings name in ``imagecrawl/`` and ``spiders/``,
  every key read through ``<...>settings.get*("KEY")`` / ``settings["KEY"]``, and every name assigned in
  ``imagecrawl/defaults.py``;
- stats: every ``imagecrawl/...`` key passed to ``inc_value``/``set_value``/``max_value``/``min_value``
  (f-string parts become ``<*>``), and the outbox events the Parquet pipeline counts as
  ``imagecrawl/store/<event>``;
- reads: every ``IMAGECRAWL_*`` setting read through a settings getter or ``settings["KEY"]``, and the reads
  that restate a default (``settings.getint("IMAGECRAWL_X", 5)``, ``settings.get("IMAGECRAWL_X") or "data/"``)
  instead of leaving it to ``imagecrawl/defaults.py``.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("imagecrawl", "spiders")
SETTING = re.compile(r"IMAGECRAWL_[A-Z0-9_]*[A-Z0-9]")
CAPS = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]")
GETTERS = {
    "get",
    "getbool",
    "getint",
    "getfloat",
    "getlist",
    "getdict",
    "getdictorlist",
    "getwithbase",
    "getpriority",
}
STAT_CALLS = {"inc_value", "set_value", "max_value", "min_value"}
#: calls whose result is a literal default when their arguments are (``list(DEFAULTS)``, ``sorted(...)``)
LITERAL_WRAPPERS = {"list", "tuple", "set", "frozenset", "dict", "sorted", "str", "int", "float", "bool"}
PLACEHOLDER = re.compile(r"<[^<>/]+>")


@dataclass
class Found:
    settings: dict[str, set[str]] = field(default_factory=dict)  # name -> files
    stats: dict[str, set[str]] = field(default_factory=dict)  # canonical key -> files

    def setting(self, name: str, where: str) -> None:
        self.settings.setdefault(name, set()).add(where)

    def stat(self, key: str, where: str) -> None:
        self.stats.setdefault(canonical(key), set()).add(where)


def canonical(stat: str) -> str:
    """``imagecrawl/a/<reason>`` and ``imagecrawl/a/{kind}`` both become ``imagecrawl/a/<*>``."""
    return PLACEHOLDER.sub("<*>", stat)


def _files() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


def _is_settings(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return text == "settings" or text.endswith(".settings") or text.endswith("settings()")


def _stat_key(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("<x>")
        return "".join(parts)
    return None


def scan() -> Found:
    found = Found()
    for path in _files():
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.fullmatch(node.value):
                found.setting(node.value, rel)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                attr, first = node.func.attr, node.args[0]
                if (
                    attr in GETTERS
                    and _is_settings(node.func.value)
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and CAPS.fullmatch(first.value)
                ):
                    found.setting(first.value, rel)
                elif attr in STAT_CALLS:
                    key = _stat_key(first)
                    if key and key.startswith("imagecrawl/"):
                        found.stat(key, rel)
                elif attr == "on_event" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    # the outbox reports events; the Parquet pipeline counts them as imagecrawl/store/<event>
                    found.stat(f"imagecrawl/store/{first.value}", rel)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get_retry_request":
                # Scrapy's retry helper counts <base>/count, <base>/reason_count/<reason> and <base>/max_reached
                for kw in node.keywords:
                    if kw.arg == "stats_base_key" and isinstance(kw.value, ast.Constant):
                        base = str(kw.value.value)
                        for leaf in ("count", "reason_count/<reason>", "max_reached"):
                            found.stat(f"{base}/{leaf}", rel)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "set_exit_code":
                found.stat("imagecrawl/exit_code", rel)  # imagecrawl/exitcodes.py: the one exit-code rule
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "on_event":
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    found.stat(f"imagecrawl/store/{node.args[0].value}", rel)
            elif (
                isinstance(node, ast.Subscript)
                and _is_settings(node.value)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
                and CAPS.fullmatch(node.slice.value)
            ):
                found.setting(node.slice.value, rel)
        if rel == "imagecrawl/defaults.py":
            for stmt in tree.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
                for target in targets:
                    if isinstance(target, ast.Name) and CAPS.fullmatch(target.id):
                        found.setting(target.id, rel)
    return found


@dataclass(frozen=True)
class Read:
    """One read of a setting: ``name`` at ``where`` (``path:line``), the code as written."""

    name: str
    where: str
    code: str


def _files_trees() -> Iterator[tuple[str, ast.Module]]:
    for path in _files():
        rel = path.relative_to(REPO).as_posix()
        yield rel, ast.parse(path.read_text(), rel)


def _getter(node: ast.AST) -> str | None:
    """``getint`` for ``<x>.getint("KEY", ...)``, ``[]`` for ``<x>settings["KEY"]``; None if ``node`` reads no
    setting. Any receiver counts but the process environment (``os.environ.get("IMAGECRAWL_FAILPOINTS")``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in GETTERS:
        first = node.args[0] if node.args else None
        is_key = isinstance(first, ast.Constant) and isinstance(first.value, str) and CAPS.fullmatch(first.value)
        if is_key and not ast.unparse(node.func.value).endswith("environ"):
            return node.func.attr
    if (
        isinstance(node, ast.Subscript)
        and _is_settings(node.value)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
        and CAPS.fullmatch(node.slice.value)
    ):
        return "[]"
    return None


def _read_name(node: ast.AST) -> str | None:
    """The ``IMAGECRAWL_*`` setting ``node`` reads (see :func:`_getter`), else None."""
    if _getter(node) is None:
        return None
    key = node.slice if isinstance(node, ast.Subscript) else cast(ast.Call, node).args[0]
    name = str(cast(ast.Constant, key).value)
    return name if SETTING.fullmatch(name) else None


def _is_restated_default(node: ast.expr) -> bool:
    """A literal, a collection display, a module constant (``DEFAULT_PREFIX``) or ``list(<one of those>)``."""
    if isinstance(node, ast.Constant | ast.List | ast.Tuple | ast.Set | ast.Dict):
        return True
    if isinstance(node, ast.Name | ast.Attribute):
        return bool(CAPS.fullmatch(node.id if isinstance(node, ast.Name) else node.attr))
    if isinstance(node, ast.UnaryOp):
        return _is_restated_default(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in LITERAL_WRAPPERS:
        return all(_is_restated_default(arg) for arg in node.args)
    return False


def _is_plain_read(node: ast.expr) -> bool:
    """A read of another setting that restates no default itself: "defaults to that setting"."""
    return isinstance(node, ast.Call) and _getter(node) is not None and len(node.args) == 1 and not node.keywords


def setting_reads(tree: ast.AST, rel: str) -> Iterator[Read]:
    """Every read of an ``IMAGECRAWL_*`` setting in ``tree``."""
    for node in ast.walk(tree):
        name = _read_name(node)
        if name:
            yield Read(name, f"{rel}:{getattr(node, 'lineno', 0)}", ast.unparse(node))


def restated_defaults(tree: ast.AST, rel: str) -> Iterator[Read]:
    """Reads of an ``IMAGECRAWL_*`` setting that restate its default instead of leaving it to settings.py.

    - a getter with a default argument: ``settings.getfloat("IMAGECRAWL_X", 2.0)``; a default that is a
      plain read of another setting means "defaults to that setting" and is allowed:
      ``settings.getint("IMAGECRAWL_RETRY_TIMES", settings.getint("RETRY_TIMES"))``;
    - ``settings.get("IMAGECRAWL_X") or <literal>`` (``or ""``, ``or "data/"``, ``or DEFAULT_PREFIX``,
      ``or list(DEFAULTS)``); ``or <another setting or a derived value>`` is fine.

    ``getpriority`` reads a priority, not a value: neither rule applies to it.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _read_name(node) and _getter(node) != "getpriority":
            defaults = node.args[1:] + [kw.value for kw in node.keywords if kw.arg == "default"]
            if any(not _is_plain_read(default) for default in defaults):
                yield Read(cast(str, _read_name(node)), f"{rel}:{node.lineno}", ast.unparse(node))
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            for left, right in itertools.pairwise(node.values):
                name = _read_name(left)
                if name and _getter(left) != "getpriority" and _is_restated_default(right):
                    yield Read(name, f"{rel}:{node.lineno}", ast.unparse(node))


def scan_reads() -> tuple[list[Read], list[Read]]:
    """(every ``IMAGECRAWL_*`` read, the reads that restate a default) in ``imagecrawl/`` and ``spiders/``."""
    reads: list[Read] = []
    restated: list[Read] = []
    for rel, tree in _files_trees():
        reads.extend(setting_reads(tree, rel))
        restated.extend(restated_defaults(tree, rel))
    return reads, restated


if __name__ == "__main__":
    result = scan()
    print("SETTINGS")
    for name, where in sorted(result.settings.items()):
        print(f"  {name:45} {sorted(where)}")
    print("STATS")
    for key, where in sorted(result.stats.items()):
        print(f"  {key:55} {sorted(where)}")
    print("RESTATED DEFAULTS")
    for read in scan_reads()[1]:
        print(f"  {read.where:50} {read.code}")
