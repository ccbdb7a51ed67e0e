"""The ``urls`` spider's failure records: one JSON line per input row that gave no image. No Scrapy.

Lines are appended to a spool file in the crawl's local state folder as rows fail (so memory stays
flat however many fail); :meth:`FailureLog.finish` returns the spool's path, which the spider copies
into the store as ``.imagecrawl/failures/<run>.jsonl`` (docs/spiders.md#urls).

Each line: ``{"input_row", "url", "status", "error", "stage", "run_id"}`` plus ``"extra"`` (the row's
``save_additional_columns``) when asked. ``status`` is the HTTP status when the site answered, else
null; ``stage`` says where the row stopped (``input``, ``download``, ``http``, ``image``, ``pipeline``,
``scheduler``, ``unfinished``); ``error`` is one line of text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


class FailureLog:
    def __init__(self, spool: Path, run_id: str) -> None:
        self.spool = spool
        self.run_id = run_id
        self.count = 0
        self._fh: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self._fh is None:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.spool, "a", encoding="utf-8")  # noqa: SIM115 (closed in finish())
        return self._fh

    def add(
        self,
        input_row: int,
        url: Any,
        *,
        stage: str,
        error: str,
        status: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "input_row": input_row,
            "url": None if url is None else str(url),
            "status": status,
            "error": " ".join(error.split())[:1000],
            "stage": stage,
            "run_id": self.run_id,
        }
        if extra is not None:
            record["extra"] = extra
        self._open().write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.count += 1

    def finish(self) -> Path:
        """Close the spool (created empty when nothing failed) and return its path."""
        self._open().close()
        return self.spool
