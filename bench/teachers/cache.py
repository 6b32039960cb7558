"""The generation cache: one SQLite file keyed on everything that determines a response — backend,
model, rendered messages, sampling parameters and sample index — and nothing else, so k samples of one
prompt stay distinct and a changed parameter invalidates only what it touches. WAL mode lets several
processes (joblib workers, array jobs) share it; a row is committed before its response is used, so a
run killed at any point resumes without paying for a request twice."""

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from bench.errors import BenchError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()  # one connection per thread: sqlite3 objects are not shareable
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connection() as db:
                db.execute(_SCHEMA)
                db.execute("SELECT COUNT(*) FROM generations").fetchone()
        except sqlite3.DatabaseError as error:
            raise BenchError(f"the generation cache {self.path} cannot be read ({error}); move it aside "
                             f"(mv {self.path} {self.path}.bad) and run again: its answers will be asked anew"
                             ) from None
        except OSError as error:
            raise BenchError(f"cannot create the generation cache {self.path} ({error.strerror}); point "
                             "cache_path (or BENCH_CACHE_DIR) at a writable folder") from None

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed row survives kill -9 (only a power cut can lose the last few);
            # FULL would fsync every row and cap a fast server at a few hundred answers a second
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key: str) -> dict | None:
        row = self._connection().execute("SELECT response FROM generations WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, request: dict, response: dict) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO generations (key, request, response, created) VALUES (?, ?, ?, ?)",
            (
                key,
                json.dumps(request, ensure_ascii=False),
                json.dumps(response, ensure_ascii=False),
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0]
