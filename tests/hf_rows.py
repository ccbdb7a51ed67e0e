"""Load a store with Hugging Face ``datasets`` (offline) and print its rows as JSON lines, with the
decoded image's size and the sha256 of the bytes it was decoded from.

    HF_DATASETS_OFFLINE=1 HF_HOME=... python -m tests.hf_rows STORE
"""

from __future__ import annotations

import hashlib
import json
import sys


def main(store: str) -> int:
    from datasets import Image, load_dataset

    dset = load_dataset("parquet", data_dir=store, split="train")
    header = {
        "image_feature_is_Image": dset.features["image"] == Image(),
        "columns": dset.column_names,
        "rows": len(dset),
    }
    print(json.dumps(header))
    raw = dset.cast_column("image", Image(decode=False))
    for row, undecoded in zip(dset, raw, strict=True):
        image = row.pop("image")
        out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        out["_pil"] = [type(image).__module__, image.size[0], image.size[1]]
        out["_bytes_sha256"] = hashlib.sha256(undecoded["image"]["bytes"]).hexdigest()
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
