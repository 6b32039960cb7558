"""The generation cache: one SQLite file keyed on everything that determines a response — backend,
endpoint (a remote server's URL), model, rendered messages, sampling parameters and sample index — and
nothing else, so k samples of one prompt stay distinct and a changed parameter invalidates only what it
touches. WAL mode lets several processes (joblib workers, array jobs, cells of one machine) share it; a row
is committed before its response is used, so a run killed at any point resumes without paying twice.

Exactly once across processes: before asking, a process *claims* the keys it is about to ask (a row in
`claims` naming it, with a lease it renews while it lives); another process wanting a claimed key waits
for the answer instead of paying for it again. A claim whose process died (same host: its pid is gone;
any host: its lease ran out) is taken over, so a killed claimant's requests are asked again."""

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from bench.errors import BenchError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    requests TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    created REAL NOT NULL
);
"""
# user_version 2: a remote backend's keys hold its endpoint. Files of version 0 keep working for
# in-process backends (their keys did not change); answers they hold from a server are refused, since
# which server gave them is not known.
VERSION = 2
REMOTE_BACKENDS = ("openai",)
LEASE_S = 60.0  # a claim not renewed for this long is another host's dead process: taken over
_HOST = socket.gethostname()
_BOOT = uuid.uuid4().hex[:8]  # tells a process from a later one that got the same pid


def cache_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _owner() -> str:
    return f"{_HOST}:{os.getpid()}:{_BOOT}"


def _dead(owner: str) -> bool:
    """A claimant on this host whose process is gone (another host's: only its lease can tell)."""
    host, pid, _ = owner.rsplit(":", 2)
    if host != _HOST:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def when_unlocked(work, timeout_s: float = 60.0):
    """`work()`, asked again while SQLite says 'database is locked' at once: it does so without waiting
    its busy timeout for a journal-mode switch or a lock it will not wait for (two processes opening a
    new cache at once, say)."""
    deadline, delay = time.monotonic() + timeout_s, 0.01
    while True:
        try:
            return work()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


class GenerationCache:
    def __init__(self, path: str | Path, lease_s: float = LEASE_S):
        self.path = Path(path)
        self.lease_s = lease_s
        self._local = threading.local()  # one connection per thread: sqlite3 objects are not shareable
        self._held: set = set()  # keys this process has claimed and not yet answered or released
        self._held_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise IsADirectoryError(21, "a folder is in its place")
            db = self._connection()
            when_unlocked(lambda: db.executescript(_SCHEMA))
            when_unlocked(lambda: self._check_version(db))
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise self._unreadable(error) from None
            raise BenchError(f"the generation cache {self.path} stayed locked by another process for over "
                             f"60 s: find it (fuser {self.path}) and let it finish, or stop it") from None
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from None
        except OSError as error:
            raise BenchError(f"cannot create the generation cache {self.path} ({error.strerror}); point "
                             "cache_path (or store_dir, or BENCH_CACHE_DIR) at a writable folder") from None

    def _unreadable(self, error: sqlite3.DatabaseError) -> BenchError:
        return BenchError(f"the generation cache {self.path} cannot be read ({error}); move it aside "
                          f"(mv {self.path} {self.path}.bad) and run again: its answers will be asked anew")

    def _check_version(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == VERSION:
            return
        if version > VERSION:
            raise BenchError(f"the generation cache {self.path} was written by a newer version of the suite "
                             f"(format {version}, this one reads {VERSION}); update the suite, or point "
                             "cache_path at another file")
        remote = db.execute(
            "SELECT COUNT(*) FROM generations WHERE json_extract(request, '$.backend') IN "
            f"({', '.join('?' * len(REMOTE_BACKENDS))}) AND json_extract(request, '$.endpoint') IS NULL",
            REMOTE_BACKENDS,
        ).fetchone()[0]
        if remote:
            raise BenchError(
                f"the generation cache {self.path} holds {remote} answers from servers, keyed without the "
                "server's URL (an older format), so they could be served for the wrong server; move it "
                f"aside (mv {self.path} {self.path}.old) and run again: its answers will be asked anew"
            )
        db.execute(f"PRAGMA user_version = {VERSION}")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            when_unlocked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            # WAL + NORMAL: a committed row survives kill -9 (only a power cut can lose the last few);
            # FULL would fsync every row and cap a fast server at a few hundred answers a second
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key: str) -> dict | None:
        row = self._connection().execute("SELECT response FROM generations WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: list) -> dict:
        """{key: response} of the keys the cache holds."""
        db, found = self._connection(), {}
        for start in range(0, len(keys), 500):  # SQLite's limit on a statement's parameters
            chunk = list(dict.fromkeys(keys[start:start + 500]))
            found.update((key, json.loads(response)) for key, response in db.execute(
                f"SELECT key, response FROM generations WHERE key IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def put(self, key: str, request: dict, response: dict) -> None:
        """Store an answer and end this process's claim on it, in one transaction."""
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO generations (key, request, response, created) VALUES (?, ?, ?, ?)",
                (key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False),
                 time.time()),
            )
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, _owner()))
        with self._held_lock:
            self._held.discard(key)

    async def aput(self, key: str, request: dict, response: dict) -> None:
        """`put` for an event loop: a local file's commit is quick enough to make in it."""
        self.put(key, request, response)

    def delete(self, key: str) -> None:
        self._connection().execute("DELETE FROM generations WHERE key = ?", (key,))

    # -- batch jobs: the provider's id of the job that asks a set of requests (bench/teachers/batch.py) ----

    def batch_of(self, requests: str) -> str | None:
        row = self._connection().execute("SELECT batch_id FROM batches WHERE requests = ?",
                                         (requests,)).fetchone()
        return row[0] if row else None

    def remember_batch(self, requests: str, batch_id: str) -> None:
        self._connection().execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)",
                                   (requests, batch_id, time.time()))

    def forget_batch(self, requests: str) -> None:
        self._connection().execute("DELETE FROM batches WHERE requests = ?", (requests,))

    # -- claims: one process asks, the others wait ----------------------------------------------------------

    def claim(self, keys: list) -> tuple[set, set]:
        """(keys now claimed by this process, keys another live process is asking). A key already
        answered is in neither; read it with `get`."""
        mine, theirs, now, me = set(), set(), time.time(), _owner()
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: two processes never both win a key
            for key in dict.fromkeys(keys):
                if db.execute("SELECT 1 FROM generations WHERE key = ?", (key,)).fetchone():
                    continue
                row = db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
                if row and row[0] != me and row[1] > now and not _dead(row[0]):
                    theirs.add(key)
                    continue
                db.execute("INSERT OR REPLACE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                           (key, me, now + self.lease_s))
                mine.add(key)
        if mine:
            with self._held_lock:
                self._held |= mine
            self._keep_alive()
        return mine, theirs

    def release(self, keys) -> None:
        """Give up claims without an answer (it failed, or the budget refused it): another may ask."""
        keys = list(keys)
        if not keys:
            return
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", [(k, _owner()) for k in keys])
        with self._held_lock:
            self._held -= set(keys)

    def _keep_alive(self) -> None:
        """Renew this process's claims every third of a lease while it holds any."""
        if self._heartbeat is not None:
            return

        def renew() -> None:  # for the life of the process: it is a daemon thread
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            while True:
                time.sleep(self.lease_s / 3)
                with self._held_lock:
                    holding = bool(self._held)
                if holding:
                    db.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                               (time.time() + self.lease_s, _owner()))

        self._heartbeat = threading.Thread(target=renew, name="cache-claims", daemon=True)
        self._heartbeat.start()

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0]


# filesystems where SQLite's WAL (its index in one host's shared memory) and file locks are not safe
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs",
                       "fuse.glusterfs", "ceph", "fuse.ceph", "fuse.sshfs", "9p", "afs", "fuse.s3fs",
                       "fuse.gcsfuse", "panfs", "orangefs", "wekafs", "fuse.juicefs")


def mount_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type of the mount holding `path`: the longest mount point above it in /proc/mounts
    (or in `mounts`, that file's text, for tests)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target, best, kind = Path(os.path.abspath(path)), -1, "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def refuse_network_filesystem(path: Path, mounts: str | None = None) -> None:
    kind = mount_type(Path(path).parent, mounts)
    if kind in NETWORK_FILESYSTEMS or kind.startswith("nfs"):
        raise BenchError(f"the generation cache {path} is on a network filesystem ({kind}), where SQLite's "
                         "locking is not safe: nodes could pay for one request twice or corrupt the file. "
                         "Share a PostgreSQL server instead (cache_url=postgresql://user@host/db; "
                         "docs/sweeps.md), or give each node a local cache_path")


def open_cache(cfg):
    """The generation cache a config names: PostgreSQL at cache_url (a grid across nodes), else the
    SQLite file at cache_path, refused on a network filesystem."""
    if cfg.cache_url:
        from bench.teachers.postgres_cache import PostgresCache

        return PostgresCache(cfg.cache_url, cfg.cache_outage_s)
    refuse_network_filesystem(Path(cfg.cache_path))
    return GenerationCache(cfg.cache_path)


def stored_answers(cfg) -> int | None:
    """How many answers the config's cache holds (its own count, SQLite or PostgreSQL alike), without
    creating one; None where it cannot be read now (after a Ctrl-C, say, with the server gone)."""
    try:
        if not cfg.cache_url and not Path(cfg.cache_path).is_file():
            return 0
        return len(open_cache(cfg))
    except (BenchError, sqlite3.Error, OSError):
        return None
