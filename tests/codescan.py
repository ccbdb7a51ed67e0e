"""What the code reads and counts, found by parsing it (used by the docs completeness tests).

- settings: every ``IMAGECRAWL_*`` string constant and settings name in ``imagecrawl/`` and ``spiders/``,
  every key read through ``<...>settings.get*("KEY")`` / ``settings["KEY"]``, and every name assigned in
  ``imagecrawl/settings.py``;
- stats: every ``imagecrawl/...`` key passed to ``inc_value``/``set_value``/``max_value``/``min_value``
  (f-string parts become ``<*>``), and the outbox events the Parquet pipeline counts as
  ``imagecrawl/store/<event>``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
        if rel == "imagecrawl/settings.py":
            for stmt in tree.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
                for target in targets:
                    if isinstance(target, ast.Name) and CAPS.fullmatch(target.id):
                        found.setting(target.id, rel)
    return found


if __name__ == "__main__":
    result = scan()
    print("SETTINGS")
    for name, where in sorted(result.settings.items()):
        print(f"  {name:45} {sorted(where)}")
    print("STATS")
    for key, where in sorted(result.stats.items()):
        print(f"  {key:55} {sorted(where)}")
