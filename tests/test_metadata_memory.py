"""Text-chunk budgets are totals per file: a 1 MB PNG of many small zTXt chunks (each inflating to the
per-chunk cap, 4 MB) cannot make the extractor hold hundreds of MB. Peak RSS measured in a fresh
process, in the library and in the record builder a crawl uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import REPO

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent(
    """
    import io, json, struct, zlib
    from PIL import Image

    def high_water_kib():
        # this process's own peak (VmHWM): ru_maxrss carries the parent's size over through fork and exec
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    def chunk(ctype, body):
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    png = out.getvalue()
    iend = png.rindex(b"IEND") - 4
    bomb = zlib.compress(b"a" * (4 * 1024 * 1024 - 16), 9)
    chunks = b"".join(chunk(b"zTXt", b"k%d\\x00\\x00" % i + bomb) for i in range(200))
    itxt = b"".join(chunk(b"iTXt", b"i%d\\x00\\x01\\x00\\x00\\x00" % i + bomb) for i in range(50))
    data = png[:iend] + chunks + itxt + png[iend:]  # after IDAT, as in the report
    from imagecrawl.metadata import extract_metadata
    from imagecrawl.records import SourceHints, build_record
    before = high_water_kib()
    meta = extract_metadata(data)
    record = build_record(hints=SourceHints(source="t"), image_url="https://i.example/a.png", body=data, salt=b"s")
    after = high_water_kib()
    print(json.dumps({"size": len(data), "before_kb": before, "after_kb": after, "error": meta.error,
                      "params": len(record.params or "")}))
    """
)


def test_many_compressed_text_chunks_stay_within_a_total_budget() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["size"] < 2 * 1024 * 1024
    grown_mb = (result["after_kb"] - result["before_kb"]) / 1024
    assert grown_mb < 120, result  # 250 chunks x 4 MB would be 1 GB
    assert result["error"] == "too_large"
