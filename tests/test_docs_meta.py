"""Every request meta key lives in imagecrawl/meta.py and is documented in docs/meta.md, and nothing else
in the code spells a key out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from imagecrawl import meta

REPO = Path(__file__).resolve().parents[1]
KEY = re.compile(r"imagecrawl_[a-z_]*[a-z]")
#: ``imagecrawl_*`` strings that are not meta keys: close reasons
NOT_META = {"imagecrawl_no_contact", "imagecrawl_all_refused", "imagecrawl_all_failed"}  # close reasons


def documented() -> dict[str, str]:
    """key -> constant name, from the table of docs/meta.md."""
    rows = re.findall(r"^\| `(imagecrawl_[a-z_]+)` \| `meta\.([A-Z_]+)` \|", (REPO / "docs/meta.md").read_text(), re.M)
    return dict(rows)


def test_every_key_is_in_the_module_and_documented_once() -> None:
    constants = {name: getattr(meta, name) for name in dir(meta) if name.isupper() and name != "ALL"}
    assert sorted(constants.values()) == sorted(meta.ALL)
    assert len(set(meta.ALL)) == len(meta.ALL)
    assert documented() == {value: name for name, value in constants.items()}


def test_no_code_spells_out_a_meta_key() -> None:
    offenders = []
    for path in sorted([*(REPO / "imagecrawl").rglob("*.py"), *(REPO / "spiders").rglob("*.py")]):
        if path == REPO / "imagecrawl/meta.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_key = isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY.fullmatch(node.value)
            if is_key and node.value not in NOT_META:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_docs_name_only_real_keys() -> None:
    known = set(meta.ALL) | NOT_META
    stale = {}
    for doc in [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]:
        names = set(KEY.findall(doc.read_text())) - known
        if names:
            stale[doc.name] = sorted(names)
    assert stale == {}
