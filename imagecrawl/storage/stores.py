"""Where committed shards live: a local folder or an S3-compatible bucket. No Scrapy imports.

A shard becomes visible only when complete: locally by ``os.replace`` from a staging name, on S3 because
an object (single PUT or multipart upload) appears only when its upload has completed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from imagecrawl import defaults, failpoints
from imagecrawl.errors import ConfigError, StoreError
from imagecrawl.storage import layout
from imagecrawl.storage.layout import SHARD_SUFFIX, is_shard_key
from imagecrawl.tuning import DEFAULTS, tuning

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    key: str  # relative to the store root, e.g. "civitai/date=2026-11-23/part-RUN-00001.parquet"
    size: int


class Store(Protocol):
    url: str

    def commit(self, local_file: Path, key: str) -> None: ...
    def list_shards(self) -> Iterator[ShardInfo]: ...
    def open(self, key: str) -> IO[bytes]: ...
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def probe(self) -> None: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def move(self, old: str, new: str) -> None: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self.staging = self.root / layout.STAGING_DIR

    def commit(self, local_file: Path, key: str) -> None:
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / f"{uuid.uuid4().hex}.tmp"
        # Copy (not move) so the source survives until the commit is done; then one atomic rename.
        shutil.copyfile(local_file, staged)
        failpoints.hit("local.commit.staged")
        with open(staged, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(staged, final)
        _fsync_dir(final.parent)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, final)

    def list_shards(self) -> Iterator[ShardInfo]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob(f"*{SHARD_SUFFIX}")):
            key = path.relative_to(self.root).as_posix()
            if is_shard_key(key):
                yield ShardInfo(key, path.stat().st_size)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every file under ``prefix`` (relative keys), hidden ones included."""
        top = self.root / prefix if prefix else self.root
        if not top.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in top.rglob("*") if p.is_file())

    def move(self, old: str, new: str) -> None:
        """Rename one file within the store (atomic); FileNotFoundError if ``old`` is gone."""
        target = self.root / new
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / old, target)
        _fsync_dir(target.parent)

    def migrate(self) -> int:
        """Move a store of the first layout into this one (:func:`layout.migrate`), then drop its empty folders
        and its old staging copies (never visible as shards)."""
        legacy = (
            [p.name for p in self.root.iterdir() if p.name.startswith(layout.LEGACY_SOURCE_PREFIX)]
            if (self.root.is_dir())
            else []
        )
        moved = layout.migrate(self)
        old_staging = self.root / layout.LEGACY_STAGING_DIR
        if old_staging.is_dir():
            for path in old_staging.glob("*.tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
        layout.remove_empty_dirs(self.root, [*legacy, layout.LEGACY_REPORTS_DIR, layout.LEGACY_STAGING_DIR])
        return moved

    def open(self, key: str) -> IO[bytes]:
        return open(self.root / key, "rb")

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if it is gone already), then sync its folder."""
        path = self.root / key
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def probe(self) -> None:
        """Write and remove a file where shards are staged: :class:`StoreError` if the folder is not writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
            probe = self.staging / f"probe-{uuid.uuid4().hex}.tmp"
            probe.write_bytes(b"imagecrawl write probe\n")
            probe.unlink()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreError(f"IMAGECRAWL_STORE {self.url}: cannot write there: {exc.strerror or exc}{where}") from None

    def clean_staging(self, older_than: float = 3600.0) -> int:
        """Remove staged copies left by a process that died mid-commit (never visible as shards).
        Only old ones: another process may be committing into the same store right now."""
        if not self.staging.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - older_than
        for path in self.staging.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: botocore's connect and read timeouts for the store
S3_CONNECT_TIMEOUT_SECONDS = 10.0
S3_READ_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region_name: str | None = None
    use_ssl: bool = defaults.AWS_USE_SSL
    verify: bool | None = None
    retry_mode: str = DEFAULTS.s3_retry_mode
    max_attempts: int = DEFAULTS.s3_max_attempts
    connect_timeout: float = S3_CONNECT_TIMEOUT_SECONDS
    read_timeout: float = S3_READ_TIMEOUT_SECONDS


class S3Store:
    def __init__(self, url: str, config: S3Config) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"IMAGECRAWL_STORE {url!r} has no bucket: use s3://bucket/prefix")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            aws_session_token=config.session_token or None,
            region_name=config.region_name or None,
            use_ssl=config.use_ssl,
            verify=config.verify,
            config=Config(
                retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def commit(self, local_file: Path, key: str) -> None:
        # upload_file switches to multipart above 8 MB; either way the object is visible only when complete.
        self.client.upload_file(
            str(local_file),
            self.bucket,
            self._key(key),
            ExtraArgs={"ContentType": "application/vnd.apache.parquet"},
            Callback=lambda _sent: failpoints.hit("s3.upload.progress"),
        )

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def list_shards(self) -> Iterator[ShardInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) :]
                if is_shard_key(key):
                    yield ShardInfo(key, int(obj["Size"]))

    def list_keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            keys.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        return keys

    def move(self, old: str, new: str) -> None:
        """Copy then delete: a crash between the two leaves both, and the next move finishes it."""
        from botocore.exceptions import ClientError

        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=self._key(new), CopySource={"Bucket": self.bucket, "Key": self._key(old)}
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(old) from None
            raise
        self.client.delete_object(Bucket=self.bucket, Key=self._key(old))

    def migrate(self) -> int:
        """Move a store of the first layout into this one (:func:`layout.migrate`)."""
        return layout.migrate(self)

    def probe(self) -> None:
        """Put and delete a small object under ``<prefix>/.imagecrawl/probe/``: :class:`StoreError` naming why if the
        credentials, the endpoint, the bucket or the write permission are not right."""
        key = self._key(f"{layout.PROBE_DIR}/{uuid.uuid4().hex}")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"imagecrawl write probe\n")
        except Exception as exc:
            raise StoreError(f"IMAGECRAWL_STORE {self.url}: cannot write there: {s3_problem(exc, self)}") from None
        with contextlib.suppress(Exception):  # a write-only key may not delete: the probe object stays
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def open(self, key: str) -> IO[bytes]:
        import io

        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return io.BytesIO(body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def s3_problem(exc: Exception, store: S3Store) -> str:
    """What went wrong with an S3 call, in words a user can act on."""
    from botocore import exceptions as bx

    endpoint = store.client.meta.endpoint_url
    if isinstance(exc, bx.NoCredentialsError):
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (settings or environment)"
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return f"cannot reach the endpoint {endpoint} (AWS_ENDPOINT_URL): {exc}"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return f"the bucket {store.bucket!r} does not exist at {endpoint}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return f"the credentials were refused ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        if code in ("AccessDenied", "403", "Forbidden"):
            return f"writing to the bucket {store.bucket!r} is not allowed ({code})"
        return f"{code or 'error'}: {error.get('Message') or exc}"
    return f"{type(exc).__name__}: {exc}"


def s3_config_from_settings(settings: Any) -> S3Config:
    """Scrapy's own AWS_* settings (with the AWS environment variables as boto3's fallback)."""
    verify = settings.get("AWS_VERIFY")
    return S3Config(
        endpoint_url=settings.get("AWS_ENDPOINT_URL") or None,
        access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=settings.get("AWS_SESSION_TOKEN") or None,
        region_name=settings.get("AWS_REGION_NAME") or None,
        use_ssl=settings.getbool("AWS_USE_SSL"),
        verify=None if verify is None else bool(verify),
        retry_mode=tuning(settings).s3_retry_mode,
        max_attempts=tuning(settings).s3_max_attempts,
    )


def open_store(url: str, s3: S3Config | None = None) -> LocalStore | S3Store:
    if url.startswith("s3://"):
        return S3Store(url, s3 or S3Config())
    if "://" in url and not url.startswith("file://"):
        raise ConfigError(f"IMAGECRAWL_STORE {url!r}: expected a local path or s3://bucket/prefix")
    return LocalStore(url.removeprefix("file://"))
