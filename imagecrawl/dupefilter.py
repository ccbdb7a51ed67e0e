"""The frontier's duplicate filter: Scrapy's ``RFPDupeFilter`` with a compact seen-set.

Scrapy's filter keeps every request fingerprint as a bytes object in a set: about 90 bytes a request
(about 180 MB for a list of 2 million URLs, most of the frontier's memory over such a list). This one
keeps 16 bytes a request: 15 bytes of each fingerprint (120 bits of its SHA-1: two different requests
share them with a probability of about n^2 / 2^121, 2e-24 for 2 million) in one sorted array, with a
set of the newest ones merged into it every :data:`RECENT_MAX`. Everything else is Scrapy's: the
fingerprinter (``REQUEST_FINGERPRINTER_CLASS``), the log lines and stat, and JOBDIR's ``requests.seen``
(the same file format, so a job started with either filter resumes with the other).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Self

import numpy as np
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.dupefilters import RFPDupeFilter
from scrapy.utils.job import job_dir
from scrapy.utils.request import RequestFingerprinterProtocol

#: new fingerprints kept in a set before they are merged into the sorted array
RECENT_MAX = 65_536
#: bytes kept of each fingerprint; a last byte 0x01 is added, so that no key ends in NUL (numpy's
#: fixed-width bytes drop trailing NULs when they compare)
KEY_BYTES = 15
#: requests.seen: each fingerprint after its length in 2 big-endian bytes (Scrapy's format)
_SIZE_BYTES = 2


def key_of(fingerprint: bytes) -> bytes:
    """The 16 bytes kept of a fingerprint (any fingerprinter: one that is no 20-byte SHA-1 is hashed)."""
    if len(fingerprint) != 20:
        fingerprint = hashlib.blake2b(fingerprint, digest_size=KEY_BYTES).digest()
    return fingerprint[:KEY_BYTES] + b"\x01"


class FingerprintSet:
    """A set of 16-byte keys in 16 bytes each (plus the newest :data:`RECENT_MAX` in a Python set)."""

    def __init__(self, recent_max: int = RECENT_MAX) -> None:
        self.recent_max = max(1, recent_max)
        self._recent: set[bytes] = set()
        self._sorted: np.ndarray = np.empty(0, dtype="S16")

    def __len__(self) -> int:
        return len(self._recent) + len(self._sorted)

    def __contains__(self, key: bytes) -> bool:
        if key in self._recent:
            return True
        arr = self._sorted
        if not len(arr):
            return False
        i = int(np.searchsorted(arr, key))
        return i < len(arr) and bytes(arr[i]) == key

    def add(self, key: bytes) -> None:
        self._recent.add(key)
        if len(self._recent) >= self.recent_max:
            self.merge()

    def merge(self) -> None:
        """Move the newest keys into the sorted array (one pass over it: a merge of two sorted arrays)."""
        if not self._recent:
            return
        new = np.sort(np.array(list(self._recent), dtype="S16"))
        self._recent = set()
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)

    @property
    def nbytes(self) -> int:
        return int(self._sorted.nbytes)


class CompactDupeFilter(RFPDupeFilter):
    """``RFPDupeFilter`` whose seen-set takes 16 bytes a request (docs/architecture.md#the-frontier)."""

    def __init__(
        self,
        path: str | None = None,
        debug: bool = False,
        *,
        fingerprinter: RequestFingerprinterProtocol | None = None,
    ) -> None:
        super().__init__(None, debug, fingerprinter=fingerprinter)
        self.seen = FingerprintSet()
        if path:
            self.file = Path(path, "requests.seen").open("a+b")  # noqa: SIM115 (closed by close(), as Scrapy's)
            self.file.seek(0)
            self._load(self.file.read())

    def _load(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos + _SIZE_BYTES <= size:
            n = int.from_bytes(data[pos : pos + _SIZE_BYTES], "big")
            pos += _SIZE_BYTES
            if pos + n > size:  # cut short by an unclean stop
                break
            self.seen.add(key_of(data[pos : pos + n]))
            pos += n
        self.seen.merge()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(
            job_dir(crawler.settings),
            crawler.settings.getbool("DUPEFILTER_DEBUG"),
            fingerprinter=crawler.request_fingerprinter,
        )

    def request_seen(self, request: Request) -> bool:
        fp = self._fingerprint(request)
        key = key_of(fp)
        if key in self.seen:
            return True
        self.seen.add(key)
        if self.file:
            self.file.write(len(fp).to_bytes(_SIZE_BYTES, "big") + fp)
        return False
