"""The frontier's disk part: queued requests of every site in one SQLite file, in each site's order.

One table keyed by (site id, order key), so a site's next requests are one index range read, whatever
the number of sites (no file or directory per site). The file is scratch space while a crawl runs
(no fsync, no journal); with JOBDIR it also holds the frontier between a clean stop and the resume.
Pure: no Scrapy; requests are opaque bytes here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

#: the order of a request within its site: smaller goes first
Key = tuple[int, int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS queue (
  site INTEGER NOT NULL, k1 INTEGER NOT NULL, k2 INTEGER NOT NULL, k3 INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (site, k1, k2, k3)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: writes between commits (the file is scratch: a commit only bounds what SQLite keeps in memory)
COMMIT_EVERY = 2000


class SpillStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-16384")  # 16 MB of page cache, whatever the queue's size
        self.db.executescript(_SCHEMA)
        #: the ids of the sites with requests on disk (others are looked up in the file when needed)
        self.site_ids: dict[str, int] = {}
        self._writes = 0
        self.db.execute("BEGIN")

    def site_id(self, name: str) -> int:
        sid = self.site_ids.get(name)
        if sid is None:
            row = self.db.execute("SELECT id FROM sites WHERE name = ?", (name,)).fetchone()
            if row is not None:
                sid = int(row[0])
            else:
                cur = self.db.execute("INSERT INTO sites (name) VALUES (?)", (name,))
                sid = int(cur.lastrowid or 0)
            self.site_ids[name] = sid
        return sid

    def forget(self, name: str) -> None:
        """The site has nothing on disk now: its id need not stay in memory (a list passes through many
        sites once)."""
        self.site_ids.pop(name, None)

    def push(self, site: str, key: Key, data: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO queue VALUES (?, ?, ?, ?, ?)", (self.site_id(site), key[0], key[1], key[2], data)
        )
        self._wrote()

    def pop(self, site: str, limit: int) -> list[tuple[Key, bytes]]:
        """Up to ``limit`` of the site's first requests, taken off the disk."""
        sid = self.site_id(site)
        rows = self.db.execute(
            "SELECT k1, k2, k3, data FROM queue WHERE site = ? ORDER BY k1, k2, k3 LIMIT ?", (sid, limit)
        ).fetchall()
        if rows:
            last = rows[-1]
            self.db.execute(
                "DELETE FROM queue WHERE site = ? AND (k1, k2, k3) <= (?, ?, ?)", (sid, last[0], last[1], last[2])
            )
            self._wrote()
        return [((int(k1), int(k2), int(k3)), bytes(data)) for k1, k2, k3, data in rows]

    def head(self, site: str) -> Key | None:
        row = self.db.execute(
            "SELECT k1, k2, k3 FROM queue WHERE site = ? ORDER BY k1, k2, k3 LIMIT 1", (self.site_id(site),)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def drop(self, site: str) -> int:
        cur = self.db.execute("DELETE FROM queue WHERE site = ?", (self.site_id(site),))
        self._wrote()
        return max(0, cur.rowcount)

    def index(self) -> Iterator[tuple[str, int, Key]]:
        """Every site with queued requests: (name, count, first key) - what a resumed frontier needs."""
        rows = self.db.execute(
            "SELECT q.site, s.name, count(*) FROM queue q JOIN sites s ON s.id = q.site GROUP BY q.site",
        ).fetchall()
        for sid, name, count in rows:
            head = self.db.execute(
                "SELECT k1, k2, k3 FROM queue WHERE site = ? ORDER BY k1, k2, k3 LIMIT 1", (sid,)
            ).fetchone()
            self.site_ids[str(name)] = int(sid)
            yield str(name), int(count), (int(head[0]), int(head[1]), int(head[2]))

    def get_meta(self, name: str, default: int = 0) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else int(row[0])

    def set_meta(self, name: str, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes >= COMMIT_EVERY:
            self._writes = 0
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")

    def close(self, remove: bool = False) -> None:
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("COMMIT")
        self.db.close()
        if remove:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
