"""A PostgreSQL server shared by every node of a grid (`cache_url=postgresql://user@host:5432/db`): it holds
the generation cache (bench/teachers/postgres_cache.py) and the claims on stages and cells (ClaimLocks),
so a cluster coordinates through a real database rather than SQLite or file locks on a network disk.

Claims are session-level advisory locks: held by a database session, released when it ends, so a node
that dies (SIGKILL, a lost host: TCP keepalives end its session) gives its claims back by itself — the
session is the lease. The password comes from the environment (PGPASSWORD, or libpq's ~/.pgpass), never
from the URL, and is scrubbed from every log line like an API key."""

import hashlib
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock, Timeout

from bench.errors import BenchError, first_line
from bench.secrets import redact

# A lost host's session ends after ~30 s: without an answer to TCP keepalives (10 s idle, then 4 probes 5 s
# apart), or with sent data unacknowledged for 30 s (tcp_user_timeout: while data waits for its ACK the
# kernel retransmits for ~15 minutes instead of probing). The client's settings notice a lost server; the
# server's, set for each session (its defaults leave the kernel's 2 hours), end the session of a host that
# vanished, and with it its claims.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4,
              "tcp_user_timeout": 30000}
SERVER_KEEPALIVES = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4 "
                     "-c tcp_user_timeout=30000")
CONNECT_TIMEOUT_S = 30
SWEEP_CHECK_TIMEOUT_S = 5  # a sweep's one look at the server before any cell
OUTAGE_S = 300  # how long a lost server is waited for (a restart) before the cell fails: cache_outage_s
NAMESPACES = {"generation": 1, "stage": 2, "cell": 3}  # advisory locks: (namespace, key) pairs
CLAIM_POLL_S = 0.2  # how often a process waiting for a claim tries to take it
WAIT_REPORT_S = 60  # how often a waiting process says what it waits for

log = logging.getLogger(__name__)


def check_url(url: str) -> None:
    """A postgresql:// URL without a password in it (passwords belong in PGPASSWORD or ~/.pgpass)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"cache_url={redact(url)} is not a postgresql://user@host:port/database URL; "
                         "leave it unset for the SQLite cache of one machine")
    if parts.password:
        raise BenchError("cache_url holds a password, which would be written to .hydra/, the records and "
                         "W&B: remove it from the URL and export PGPASSWORD (or use ~/.pgpass)")


def _open(url: str, timeout_s: int):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=timeout_s, options=SERVER_KEEPALIVES,
                           application_name=f"synthbench {socket.gethostname()} pid {os.getpid()}",
                           **KEEPALIVES)


def server_of(url: str) -> str:
    return f"{urlsplit(url).hostname}:{urlsplit(url).port or 5432}"


def connect(url: str, timeout_s: int = CONNECT_TIMEOUT_S):
    """An autocommit connection, named after this host and process (what a waiting host reports); one
    line naming the fix when the server cannot be reached."""
    import psycopg

    check_url(url)
    try:
        return _open(url, timeout_s)
    except psycopg.Error as error:
        raise unreachable(url, error) from None


def unreachable(url: str, error: Exception) -> BenchError:
    return BenchError(f"cannot connect to the PostgreSQL server at {server_of(url)} "
                      f"({redact(first_line(error))}); start it (docs/sweeps.md shows one command), check "
                      "cache_url, and PGPASSWORD if it needs a password")


_reached: set = set()  # servers this process has reached: losing one is an outage to wait out
REACHED = "SYNTHBENCH_SERVER_REACHED"  # the server a sweep reached before its cells (they inherit it)


def reached_before(url: str) -> bool:
    return url in _reached or os.environ.get(REACHED) == url


class ServerGone(BenchError):
    """The shared PostgreSQL server stayed away longer than cache_outage_s."""


class Session:
    """A database session that rides out a server restart: a statement whose connection was lost
    (the server stopping, restarting, or out of reach) is sent again on a new connection, with backoff,
    for up to `outage_s` seconds; `on_reconnect` gives the new session back what the old one held (its
    claims: advisory locks end with their session). Past `outage_s`, one line naming the server."""

    def __init__(self, url: str, outage_s: float = OUTAGE_S, on_reconnect=None):
        import psycopg

        check_url(url)
        self.url, self.outage_s, self.on_reconnect, self.db = url, outage_s, on_reconnect, None
        try:
            self.db = _open(url, CONNECT_TIMEOUT_S)
        except psycopg.Error as error:
            if not reached_before(url) or not isinstance(error, psycopg.OperationalError):
                raise unreachable(url, error) from None  # never reached: a wrong address, not an outage
            self._reconnect(self._lost(error))
        _reached.add(url)

    def execute(self, statement: str, params=()):
        """The statement's cursor (its rows already fetched: the server sends them with the reply)."""
        import psycopg

        lost = None
        while True:
            try:
                return self.db.execute(statement, params)
            except psycopg.OperationalError as error:
                lost = lost or self._lost(error)
            self._reconnect(lost)

    def _lost(self, error) -> float:
        log.warning(f"lost the PostgreSQL server at {server_of(self.url)} ({redact(first_line(error))}): "
                    f"trying again for up to {self.outage_s:.0f} s (cache_outage_s); what is received "
                    "meanwhile is kept and stored when it is back")
        return time.monotonic()

    def _reconnect(self, since: float) -> None:
        """A new connection (and what the old session held), trying with backoff until `outage_s`."""
        import psycopg

        delay = 0.5
        while True:
            if time.monotonic() - since > self.outage_s:
                raise ServerGone(f"the PostgreSQL server at {server_of(self.url)} stayed away for "
                                 f"{self.outage_s:.0f} s (cache_outage_s): every answer, stage and cell "
                                 "stored before it left is kept there; rerun the same command once it is "
                                 "back")
            time.sleep(delay)
            delay = min(2 * delay, 5.0)
            try:
                if self.db is not None:
                    self.db.close()
                self.db = _open(self.url, CONNECT_TIMEOUT_S)
                if self.on_reconnect:
                    self.on_reconnect(self.db)
            except psycopg.OperationalError:
                continue
            log.info(f"the PostgreSQL server at {server_of(self.url)} is back after "
                     f"{time.monotonic() - since:.0f} s")
            return

    def transaction(self):
        return self.db.transaction()


def check_shared_store(url: str, timeout_s: int = SWEEP_CHECK_TIMEOUT_S) -> None:
    """Once for a sweep, before any cell: the server answers within `timeout_s`, takes writes, and a
    generations table already there is the generation cache's. One line naming the fix otherwise, so that
    no cell waits CONNECT_TIMEOUT_S to learn it."""
    where = server_of(url)
    with connect(url, timeout_s) as db:
        if db.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise BenchError(f"the PostgreSQL server at {where} is a read-only standby: point cache_url at "
                             "the primary")
        columns = {row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'generations' "
            "AND table_schema = current_schema()")}
        if columns and columns != {"key", "request", "response", "created"}:
            raise BenchError("the database in cache_url holds a table 'generations' that is not the "
                             f"generation cache (columns {', '.join(sorted(columns))}): name another "
                             "database in cache_url")
        writable = "has_table_privilege('generations', 'SELECT, INSERT, UPDATE, DELETE')" if columns else \
            "has_schema_privilege(current_schema(), 'CREATE')"
        if not db.execute(f"SELECT {writable}").fetchone()[0]:
            user = db.execute("SELECT current_user").fetchone()[0]
            raise BenchError(f"the PostgreSQL user {user} cannot write the generation cache in cache_url's "
                             f"database at {where}: GRANT it CREATE on the schema (or writes on "
                             "'generations')")
    os.environ[REACHED] = url  # the sweep's cells (this process or launched from it) wait out an outage


def lock_id(key: str) -> int:
    """A key as the signed 32-bit number an advisory lock pairs with its namespace."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big", signed=True)


class ClaimLocks:
    """Who computes a stage or a cell when several processes want it at once: the first takes the claim,
    the others wait for it to end and then reuse what it stored. File locks in the store's folder on one
    machine; advisory locks of the shared PostgreSQL server when `cache_url` is set. A process that waits
    says for what and for whom, once and then every WAIT_REPORT_S; `waited_s` adds up its waits."""

    waited_s = 0.0  # this process's seconds waiting for others' claims (a cell's record takes its share)

    def __init__(self, folder: Path, url: str | None = None, outage_s: float = OUTAGE_S):
        self.folder, self.url, self.outage_s = Path(folder), url, outage_s
        self._session, self._lock, self._held = None, threading.Lock(), set()

    def _retake(self, db) -> None:
        """After a server restart: the claims this process held, taken again (the old session's ended)."""
        for pair in list(self._held):
            if not db.execute("SELECT pg_try_advisory_lock(%s, %s)", pair).fetchone()[0]:
                log.warning(f"claim {pair} was taken by another process while the server was away")

    @contextmanager
    def hold(self, namespace: str, key: str):
        what = f"{namespace} {key[:16]}"
        if self.url is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock, holder = FileLock(self.folder / f"{key}.lock"), self.folder / f"{key}.holder"
            self._wait_for(what, lambda: _try_file_lock(lock), lambda: _file_holder(holder))
            try:
                holder.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "since": time.time()}))
                yield
            finally:
                holder.unlink(missing_ok=True)
                lock.release()
            return
        with self._lock:
            if self._session is None:
                self._session = Session(self.url, self.outage_s, self._retake)
            db = self._session
        pair = (NAMESPACES[namespace], lock_id(key))
        self._wait_for(what, lambda: db.execute("SELECT pg_try_advisory_lock(%s, %s)", pair).fetchone()[0],
                       lambda: _server_holder(db, pair))
        self._held.add(pair)
        try:
            yield
        finally:
            self._held.discard(pair)
            db.execute("SELECT pg_advisory_unlock(%s, %s)", pair)

    @staticmethod
    def _wait_for(what: str, take, holder) -> None:
        """Take the claim; while another holds it, poll, saying so once and then every WAIT_REPORT_S."""
        if take():
            return
        started = said = time.monotonic()
        log.info(f"waiting for {what} claimed by {holder()}")
        while not take():
            time.sleep(CLAIM_POLL_S)
            if time.monotonic() - said >= WAIT_REPORT_S:
                said = time.monotonic()
                log.info(f"still waiting for {what} claimed by {holder()} ({said - started:.0f} s so far)")
        ClaimLocks.waited_s += time.monotonic() - started


def _try_file_lock(lock: FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True


def _file_holder(holder: Path) -> str:
    try:
        held = json.loads(holder.read_text())
    except (OSError, ValueError):
        return "another process on this machine"
    return f"{held['host']}, pid {held['pid']}, since {_clock(held['since'])}"


def _server_holder(db, pair: tuple) -> str:
    """The session holding an advisory lock: its host and process (connect names them), and since when
    it last took or gave a claim (its session's last statement)."""
    row = db.execute(
        "SELECT a.application_name, a.client_addr, extract(epoch FROM a.state_change) FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 2",
        (pair[0], pair[1] & 0xFFFFFFFF)).fetchone()
    if row is None:
        return "another session (gone already)"
    name, address, since = row
    who = name.removeprefix("synthbench ").replace(" pid ", ", pid ") if name else "a session"
    return f"{who}{f' at {address}' if address else ''}, since {_clock(float(since))}"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")
