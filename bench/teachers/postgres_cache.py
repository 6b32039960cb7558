"""The generation cache on a PostgreSQL server, for a grid across nodes (`cache_url=postgresql://...`): the
same keys and the same guarantees as the SQLite cache of one machine (bench/teachers/cache.py) — an
answer is committed before it is used, each request is paid once across every process and host, a dead
claimant's requests are asked again — with claims that need no lease: a claim is a session-level
advisory lock (bench/database.py), which the server releases the moment the claimant's session ends.
A server restart is waited out (bench/database.py Session, up to cache_outage_s): an answer received
meanwhile is stored once the server is back, and this process's claims are taken again."""

import json
import threading
import time

from bench.database import NAMESPACES, OUTAGE_S, Session, lock_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
)
"""
NAMESPACE = NAMESPACES["generation"]


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

    def put(self, key: str, request: dict, response: dict) -> None:
        """Store an answer (committed), then end this process's claim on it."""
        self._connection().execute(
            "INSERT INTO generations (key, request, response, created) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET request = EXCLUDED.request, response = EXCLUDED.response, "
            "created = EXCLUDED.created",
            (key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False),
             time.time()))
        self.release([key])

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
        """Give up claims without an answer (it failed, or the budget refused it): another may ask."""
        with self._claims_lock:
            for key in [k for k in keys if k in self._held]:
                self._claims.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, lock_id(key)))
                self._held.discard(key)

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0]
