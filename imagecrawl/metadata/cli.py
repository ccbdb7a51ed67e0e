"""``imagecrawl metadata FILE...``: print one JSON object per line per file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from imagecrawl.metadata.extract import extract_metadata
from imagecrawl.metadata.provenance import read_provenance
from imagecrawl.metadata.types import Limits
from imagecrawl.values import utf8_safe

logger = logging.getLogger(__name__)

FIELDS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "sampler",
    "cfg_scale",
    "model",
    "width",
    "height",
    "params",
    "metadata_source",
)
#: Provenance and rights (schema v2 columns, plus the file's own training refusal).
PROVENANCE_FIELDS = (
    "digital_source_type",
    "data_mining",
    "c2pa_claim_generator",
    "c2pa_actions",
    "c2pa_validation",
    "c2pa_failures",
    "c2pa_error",
    "c2pa_remote_manifest",
    "training_refusal",
)


def record_for(path: str, limits: Limits | None = None) -> dict[str, Any]:
    """The CLI's JSON record for one file (never raises)."""
    rec: dict[str, Any] = {"file": path}
    try:
        p = Path(path)
        size = p.stat().st_size
        lim = limits or Limits()
        if size > lim.max_input_bytes:
            rec.update({f: None for f in FIELDS + PROVENANCE_FIELDS})
            rec["error"] = "too_large"
            return rec
        data = p.read_bytes()
    except OSError as exc:
        rec.update({f: None for f in FIELDS + PROVENANCE_FIELDS})
        rec["error"] = f"unreadable: {exc.strerror or exc.__class__.__name__}"
        return rec
    meta = extract_metadata(data, filename=path, limits=limits)
    d = meta.to_dict()
    for f in FIELDS:
        rec[f] = d.get(f)
    if not meta.found():
        rec["params"] = None
    rec["generator"] = meta.generator
    rec["image_format"] = meta.image_format
    provenance = read_provenance(data, limits)
    rec.update(provenance.columns())
    rec["c2pa_actions"] = list(provenance.c2pa.actions) or None
    rec["c2pa_failures"] = list(provenance.c2pa.failures) or None
    rec["c2pa_error"] = provenance.c2pa.error
    rec["c2pa_remote_manifest"] = provenance.xmp.c2pa_manifest_url
    refusal = provenance.refusal()
    rec["training_refusal"] = f"{refusal[0]}: {refusal[1]}" if refusal else None
    if meta.error is not None:
        rec["error"] = meta.error
    return rec


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 when every file could be read, 1 otherwise (2 on usage errors)."""
    parser = argparse.ArgumentParser(
        prog="imagecrawl metadata",
        description=(
            "Print the prompt, generation parameters, provenance (IPTC digital source type, C2PA) and "
            "data-mining rights embedded in image files (JSON lines)."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print each JSON object")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    status = 0
    out = sys.stdout
    for path in args.files:
        rec = record_for(path)
        if str(rec.get("error", "")).startswith("unreadable"):
            status = 1
        # a lone surrogate read from a chunk (JSON "\\ud83d") is printed as U+FFFD, never a traceback
        out.write(utf8_safe(json.dumps(rec, ensure_ascii=False, indent=args.indent, default=str)) + "\n")
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
