"""Where a store keeps its local crawl state (dedupe index, spool, outbox, salt). Pure."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from imagecrawl.storage import layout


def is_s3(store: str) -> bool:
    return store.startswith("s3://")


def state_dir_for(store: str, state_dir: str | None = None) -> Path:
    """``IMAGECRAWL_STATE_DIR`` if given; ``<store>/.imagecrawl/state`` for a local store; a per-bucket
    folder under ``data/.imagecrawl/s3/`` for an S3 store (the state is local even when the shards are
    remote). A state folder of the first layout (``<store>/_state``, ``data/_state/s3/...``) is moved
    there first (one rename; docs/downstream.md)."""
    if state_dir:
        return Path(state_dir)
    if is_s3(store):
        parts = urlsplit(store)
        tag = hashlib.sha256(store.encode()).hexdigest()[:8]
        safe = f"{parts.netloc}-{parts.path.strip('/').replace('/', '_') or 'root'}-{tag}"
        new = layout.S3_STATE_ROOT / safe
        layout.migrate_folder(layout.LEGACY_S3_STATE_ROOT / safe, new)
        return new
    return layout.local_state_dir(store.removeprefix("file://"))


def author_salt(state: Path, configured: str = "") -> bytes:
    """The HMAC salt for author names: ``IMAGECRAWL_AUTHOR_SALT`` if set, else a random salt created
    once per state directory and kept, so one store hashes one author the same way across runs."""
    if configured:
        return configured.encode()
    state.mkdir(parents=True, exist_ok=True)
    path = state / "author_salt"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    salt = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(salt.hex())
    os.replace(tmp, path)
    return salt
