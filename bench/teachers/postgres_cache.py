"""The generation cache on a PostgreSQL server, for a grid across nodes (`cache_url=postgresql://...`): the
same keys and the same guarantees as the SQLite cache of one machine (bench/teachers/cache.py) — an
answer is committed before it is used, each request is paid once across every process and host, a dead
claimant's requests are asked again — with claims that need no lease: a claim is a session-level
advisory lock (bench/database.py), which the server releases the moment the claimant's session ends.
A server restart is waited out (bench/database.py Session, up to cache_outage_s): an answer received
meanwhile is stored once the server is back, and this process's claims are taken again."""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.database import NAMESPACES, OUTAGE_S, Session, lock_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    requests TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
)
"""
NAMESPACE = NAMESPACES["generation"]


def row(key: str, request: dict, response: dict) -> tuple:
    return key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False)


class PostgresCache:
    def __init__(self, url: str, outage_s: float = OUTAGE_S):
        self.url, self.outage_s = url, outage_s
        self._local = threading.local()  # a connection per thread, as with SQLite
        self._held: set = set()
        self._claims = Session(url, outage_s, self._retake)  # the session that holds this process's claims
        self._claims_lock = threading.Lock()
        with self._claims.transaction():  # two first runs at once: one creates the table
            self._claims.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
            self._claims.execute(_SCHEMA)
        self._writes = Session(url, outage_s)  # the writer's own session, on the writer's thread
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        self._pending: list = []  # (row, future) of answers waiting for the next group
        self._writing = False

    def _connection(self) -> Session:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = Session(self.url, self.outage_s)
        return db

    def _retake(self, db) -> None:
        """After a server restart: this process's claims again, but for a request another took meanwhile."""
        for key in list(self._held):
            if not db.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, lock_id(key))).fetchone()[0]:
                self._held.discard(key)

    def get(self, key: str) -> dict | None:
        row = self._connection().execute("SELECT response FROM generations WHERE key = %s", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: list) -> dict:
        """{key: response} of the keys the cache holds, in one round trip."""
        if not keys:
            return {}
        rows = self._connection().execute("SELECT key, response FROM generations WHERE key = ANY(%s)",
                                          (list(dict.fromkeys(keys)),))
        return {key: json.loads(response) for key, response in rows}

    def put(self, key: str, request: dict, response: dict) -> None:
        """Store an answer (committed), then end this process's claim on it."""
        self._store([row(key, request, response)])

    async def aput(self, key: str, request: dict, response: dict) -> None:
        """`put` for the Sender's event loop: returns once the answer is committed, and the answers that
        arrive while a group is being written are written together as the next group (one statement and
        one unlock a group, not two round trips an answer), on a thread of its own so that no other
        request waits for the server."""
        loop = asyncio.get_running_loop()
        stored = loop.create_future()
        self._pending.append((row(key, request, response), stored))
        if not self._writing:
            self._writing = True
            loop.create_task(self._write_groups(loop))
        await stored

    async def _write_groups(self, loop) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    await loop.run_in_executor(self._writer, self._store, [r for r, _ in group])
                    error = None
                except Exception as failure:  # noqa: BLE001 (every answer of the group raises it)
                    error = failure
                for _, stored in group:
                    if error is None:
                        stored.set_result(None)
                    else:
                        stored.set_exception(error)
        finally:
            self._writing = False

    def _store(self, rows: list) -> None:
        """One INSERT for the rows (a statement commits whole), then their claims ended in one statement;
        a key twice keeps its last answer."""
        latest = list({key: (key, request, response) for key, request, response in rows}.values())
        keys, requests, responses = (list(column) for column in zip(*latest, strict=True))
        self._writes.execute(
            "INSERT INTO generations (key, request, response, created) "
            "SELECT key, request, response, %s FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "AS t(key, request, response) ON CONFLICT (key) DO UPDATE SET request = EXCLUDED.request, "
            "response = EXCLUDED.response, created = EXCLUDED.created",
            (time.time(), keys, requests, responses))
        self.release(keys)

    def batch_of(self, requests: str) -> str | None:
        row = self._connection().execute("SELECT batch_id FROM batches WHERE requests = %s",
                                         (requests,)).fetchone()
        return row[0] if row else None

    def remember_batch(self, requests: str, batch_id: str) -> None:
        self._connection().execute(
            "INSERT INTO batches VALUES (%s, %s, %s) ON CONFLICT (requests) DO UPDATE SET batch_id = "
            "EXCLUDED.batch_id, created = EXCLUDED.created", (requests, batch_id, time.time()))

    def forget_batch(self, requests: str) -> None:
        self._connection().execute("DELETE FROM batches WHERE requests = %s", (requests,))

    def delete(self, key: str) -> None:
        self._connection().execute("DELETE FROM generations WHERE key = %s", (key,))

    def claim(self, keys: list) -> tuple[set, set]:
        """(keys now claimed by this process, keys another live session is asking). A key already
        answered is in neither; read it with `get`. Three round trips for the whole batch."""
        with self._claims_lock:
            db, wanted = self._claims, list(dict.fromkeys(keys))
            mine = {k for k in wanted if k in self._held}
            answered = self._answered(db, [k for k in wanted if k not in mine])
            asked = [k for k in wanted if k not in mine and k not in answered]
            got = {row[0] for row in db.execute(
                "SELECT key FROM unnest(%s::text[], %s::int[]) AS t(key, id) "
                "WHERE pg_try_advisory_lock(%s, id)",
                (asked, [lock_id(k) for k in asked], NAMESPACE))} if asked else set()
            # answered between the look and the lock (its claimant stores, then unlocks): not ours to ask
            late = self._answered(db, list(got))
            for key in late:
                db.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, lock_id(key)))
            self._held |= got - late
            return mine | (got - late), set(asked) - got

    @staticmethod
    def _answered(db, keys: list) -> set:
        if not keys:
            return set()
        return {row[0] for row in db.execute("SELECT key FROM generations WHERE key = ANY(%s)", (keys,))}

    def release(self, keys) -> None:
        """End claims (answered, or given up: another may ask), in one statement."""
        with self._claims_lock:
            held = [k for k in dict.fromkeys(keys) if k in self._held]
            if held:
                self._claims.execute("SELECT pg_advisory_unlock(%s, id) FROM unnest(%s::int[]) AS t(id)",
                                     (NAMESPACE, [lock_id(k) for k in held]))
                self._held.difference_update(held)

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0]
