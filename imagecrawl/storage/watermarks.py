"""Watermarks of incremental runs: per source and query, how far the last complete walk of a newest-first
listing reached, kept with the store's state so that the next run (on any machine) stops where the
store already holds everything.

A :class:`Mark` holds ``position`` (the newest position the last complete walk saw: a Civitai
``createdAt``, a sitemap ``lastmod``; None for listings without one), ``walked_at`` (when that walk
completed) and ``started`` (the run id of a walk that began and has not completed since). A
:class:`Walk` is one run's walk of one query: it says when paging can stop (:meth:`Walk.keep_paging`):

* at the watermark: an item at or below the last complete walk's ``position``;
* after ``known_run`` consecutive items the store already holds, but only when the last walk of the
  query completed (``started`` unset at load): after a crash mid-walk, items the crashed run committed
  sit above ones it never reached, so a run of known items proves nothing then.

:class:`WatermarkBook` loads and saves the marks: ``<state dir>/watermarks.json`` (written atomically),
and for S3 stores also the object ``.imagecrawl/state/watermarks.json`` in the bucket, which is read first (when the
bucket cannot be read or written, the local copy serves; older marks only make a run walk further). The
caller saves a completed walk only after every row it covers is committed (see
:mod:`imagecrawl.incremental`). No Scrapy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from imagecrawl.storage import layout
from imagecrawl.storage.stores import LocalStore, S3Store

logger = logging.getLogger(__name__)

STATE_FILE: Final = "watermarks.json"
#: the bucket copy of an S3 store's marks (a key no shard listing includes)
STORE_KEY: Final = f"{layout.STATE_DIR}/watermarks.json"


@dataclass(slots=True)
class Mark:
    position: str | None = None
    walked_at: str | None = None
    started: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Mark | None:
        if not isinstance(data, dict):
            return None
        values = {k: data.get(k) for k in ("position", "walked_at", "started")}
        if not all(v is None or isinstance(v, str) for v in values.values()):
            return None
        return cls(**values)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_position(value: Any) -> str | None:
    """A position as a UTC ISO string that compares chronologically (``2026-01-02T03:04:05.000000Z``)."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Walk:
    """One run's walk of one newest-first listing (``key`` = ``<source>:<query>``)."""

    key: str
    previous: Mark | None = None
    known_run: int = 0
    full: bool = False
    newest: str | None = None
    run_of_known: int = 0
    reached: bool = False
    known_run_hit: bool = False
    complete: bool = False
    failed: bool = False
    seen: int = 0
    stopped_by: str | None = None

    @property
    def watermark(self) -> str | None:
        return self.previous.position if self.previous is not None else None

    @property
    def trusted(self) -> bool:
        """The last walk completed and none began since: a run of known items means the rest is known."""
        return self.previous is not None and self.previous.walked_at is not None and self.previous.started is None

    def below(self, position: str | None) -> bool:
        """Whether ``position`` is at or below the watermark (the store holds it since the last walk)."""
        mark = self.watermark
        return position is not None and mark is not None and position <= mark

    def see(self, position: str | None, known: bool) -> None:
        """One item of the listing, in listing order; ``known``: the store holds its record already."""
        self.seen += 1
        if position is not None and (self.newest is None or position > self.newest):
            self.newest = position
        if self.below(position):
            self.reached = True
        self.run_of_known = self.run_of_known + 1 if known else 0
        if self.known_run > 0 and self.run_of_known >= self.known_run:
            self.known_run_hit = True

    def keep_paging(self) -> bool:
        """Whether the next page is worth requesting (always, for a full walk)."""
        if self.full:
            return True
        if self.reached:
            self.stopped_by = "watermark"
            return False
        if self.known_run_hit and self.trusted:
            self.stopped_by = "known_run"
            return False
        return True

    def finish(self) -> None:
        """The walk reached the end of the listing or a stop: it covers everything newer than it saw."""
        self.complete = True


class WatermarkBook:
    """The marks of one store: read at start, a walk's ``started`` written when it begins, a completed
    walk's position when its rows are committed."""

    def __init__(self, store: LocalStore | S3Store, state_dir: Path) -> None:
        self.store = store
        self.path = state_dir / STATE_FILE

    def _read_remote(self) -> dict[str, Any] | None:
        if not isinstance(self.store, S3Store):
            return None
        try:
            with self.store.open(STORE_KEY) as fh:
                data = json.loads(fh.read().decode("utf-8"))
        except Exception as exc:
            response = getattr(exc, "response", None)
            code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
            if code not in ("NoSuchKey", "404"):
                logger.warning("Cannot read the watermarks in %s (%s); using the local copy", self.store.url, exc)
            return None
        return data if isinstance(data, dict) else None

    def _read_local(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable watermarks %s (%s): this run walks in full", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> dict[str, Mark]:
        data = self._read_remote()
        if data is None:
            data = self._read_local()
        marks = {}
        for key, value in data.get("marks", {}).items() if isinstance(data.get("marks"), dict) else ():
            mark = Mark.from_json(value)
            if mark is not None:
                marks[str(key)] = mark
        return marks

    def update(self, changes: dict[str, Mark]) -> dict[str, Mark]:
        """Read the marks again, apply ``changes`` (a position never moves back), save both copies."""
        marks = self.load()
        for key, mark in changes.items():
            old = marks.get(key)
            if old is not None and old.position and mark.position and old.position > mark.position:
                mark.position = old.position
            marks[key] = mark
        body = json.dumps({"version": 1, "marks": {k: asdict(v) for k, v in sorted(marks.items())}}, indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(self.store, S3Store):
            try:
                self.store.put_bytes(STORE_KEY, body.encode("utf-8"), "application/json")
            except Exception as exc:  # the bucket keeps the older marks: a run reading them walks further
                logger.warning("Cannot write the watermarks to %s (%s); kept in %s", self.store.url, exc, self.path)
        return marks
