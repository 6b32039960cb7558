"""A PostgreSQL server shared by every node of a grid (`cache_url=postgresql://user@host:5432/db`): it holds
the generation cache (bench/teachers/postgres_cache.py) and the claims on stages and cells (ClaimLocks),
so a cluster coordinates through a real database rather than SQLite or file locks on a network disk.

Claims are session-level advisory locks: held by a database session, released when it ends, so a node
that dies (SIGKILL, a lost host: TCP keepalives end its session) gives its claims back by itself — the
session is the lease. The password comes from the environment (PGPASSWORD, or libpq's ~/.pgpass), never
from the URL, and is scrubbed from every log line like an API key."""

import hashlib
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock

from bench.errors import BenchError, first_line
from bench.secrets import redact

# a lost host's session ends after ~30 s without an answer to TCP keepalives
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4}
NAMESPACES = {"generation": 1, "stage": 2, "cell": 3}  # advisory locks: (namespace, key) pairs


def check_url(url: str) -> None:
    """A postgresql:// URL without a password in it (passwords belong in PGPASSWORD or ~/.pgpass)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"cache_url={redact(url)} is not a postgresql://user@host:port/database URL; "
                         "leave it unset for the SQLite cache of one machine")
    if parts.password:
        raise BenchError("cache_url holds a password, which would be written to .hydra/, the records and "
                         "W&B: remove it from the URL and export PGPASSWORD (or use ~/.pgpass)")


def connect(url: str):
    """An autocommit connection; one line naming the fix when the server cannot be reached."""
    import psycopg

    check_url(url)
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=30, **KEEPALIVES)
    except psycopg.Error as error:
        where = urlsplit(url)
        raise BenchError(f"cannot connect to the PostgreSQL server at {where.hostname}:{where.port or 5432} "
                         f"({redact(first_line(error))}); start it (docs/sweeps.md shows one command), check "
                         "cache_url, and PGPASSWORD if it needs a password") from None


def lock_id(key: str) -> int:
    """A key as the signed 32-bit number an advisory lock pairs with its namespace."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big", signed=True)


class ClaimLocks:
    """Who computes a stage or a cell when several processes want it at once: the first takes the claim,
    the others wait for it to end and then reuse what it stored. File locks in the store's folder on one
    machine; advisory locks of the shared PostgreSQL server when `cache_url` is set."""

    def __init__(self, folder: Path, url: str | None = None):
        self.folder, self.url = Path(folder), url
        self._connection, self._lock = None, threading.Lock()

    @contextmanager
    def hold(self, namespace: str, key: str):
        if self.url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(self.folder / f"{key}.lock"):
                yield
            return
        with self._lock:
            if self._connection is None:
                self._connection = connect(self.url)
            db = self._connection
        pair = (NAMESPACES[namespace], lock_id(key))
        db.execute("SELECT pg_advisory_lock(%s, %s)", pair)  # waits while another session holds it
        try:
            yield
        finally:
            db.execute("SELECT pg_advisory_unlock(%s, %s)", pair)
