"""The duplicate filter's seen-set: 16 bytes a request (the frontier's ``CompactDupeFilter``,
imagecrawl.pacing.scheduler, is Scrapy's ``RFPDupeFilter`` over it).

A Python set of Scrapy's 20-byte fingerprints takes about 90 bytes a request (about 180 MB for a list of
2 million URLs). This keeps 15 bytes of each fingerprint (120 bits of its SHA-1: two different requests
share them with a probability of about n^2 / 2^121, 2e-24 for 2 million) in one sorted array, with a set
of the newest ones merged into it every :data:`RECENT_MAX`. Pure: no Scrapy.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: new fingerprints kept in a set before they are merged into the sorted array
RECENT_MAX = 65_536
#: bytes kept of each fingerprint; a last byte 0x01 is added, so that no key ends in NUL (numpy's
#: fixed-width bytes drop trailing NULs when they compare)
KEY_BYTES = 15


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
