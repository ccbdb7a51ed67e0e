"""Run the Python blocks of a Markdown file, each in a fresh namespace, and print what they computed.

    python -m tests.docs_runner DOC.md LOCAL_STORE [S3_STORE]

``STORE = "data"`` in a block becomes LOCAL_STORE, ``STORE = "s3://my-bucket/datasets"`` becomes S3_STORE
(blocks for S3 are skipped without one). Prints one JSON list: per block, its heading, and the values
of ``top_models``, ``prompt_lengths``, ``per_day`` (as [key, count] pairs) and ``first`` (an image's size).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LOCAL = 'STORE = "data"'
S3 = 'STORE = "s3://my-bucket/datasets"'
RESULTS = ("top_models", "prompt_lengths", "per_day")


def blocks(text: str) -> list[tuple[str, str]]:
    out = []
    for match in BLOCK.finditer(text):
        heading = ([h for h in re.findall(r"^#+ (.+)$", text[: match.start()], re.M)] or ["?"])[-1]
        out.append((heading, match.group(1)))
    return out


def _pairs(value: Any) -> list[list[Any]]:
    return [[str(k), int(n)] for k, n in value]


def main(doc: str, local: str, s3: str = "") -> int:
    results = []
    for heading, code in blocks(Path(doc).read_text()):
        is_s3 = S3 in code
        if is_s3:
            if not s3:
                continue
            code = code.replace(S3, f"STORE = {s3!r}")
        elif LOCAL in code:
            code = code.replace(LOCAL, f"STORE = {local!r}")
        else:
            raise SystemExit(f"block under {heading!r} sets no STORE")
        namespace: dict[str, Any] = {"__name__": "__doc__"}
        exec(compile(code, f"{doc}:{heading}", "exec"), namespace)
        entry: dict[str, Any] = {"heading": heading, "s3": is_s3}
        for name in RESULTS:
            if name in namespace:
                entry[name] = _pairs(namespace[name])
        if "first" in namespace:
            entry["first"] = list(namespace["first"].size)
        results.append(entry)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
