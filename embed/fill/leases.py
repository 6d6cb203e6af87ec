"""Work sharing through Postgres: a pass over a source is a plan of id-range chunks, claimed
with session advisory locks.

`embed_store.leases` holds one row per chunk of a pass (`kind` backfill or sync, `gen` the pass
number): the exclusive lower and inclusive upper id bounds, who claimed it, when it was done.
The ranges tile the whole id space (first and last are open-ended), so rows inserted later
still fall into some chunk. A process claims a chunk by taking a session advisory lock keyed
by (plan, chunk): the lock dies with the connection, so a kill -9 or a server restart frees
its chunks at once, with no expiry to wait for. `done_at` is set in the same transaction as
the chunk's last write, so a chunk is done exactly when its rows are in the store.

Correctness never depends on the locks: every write is an idempotent, all-or-nothing upsert
keyed by (source_id, content hash). The locks only keep several processes from doing the
same work twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg
from psycopg import sql

from embed.db import locks
from embed.store import SCHEMA
from embed.store.target import Target

LEASES = sql.Identifier(SCHEMA, "leases")
# Namespace of the run-liveness lock: (RUN_LOCK, run id) is held by a running process, so
# `status` can tell a live run from one whose process died (pg_locks shows who holds what).
RUN_LOCK = 0x454D4252  # "EMBR"


@dataclass(frozen=True)
class Chunk:
    gen: int
    index: int
    lo: str | None
    hi: str | None




def _plan_key(target: Target, kind: str) -> list[object]:
    return [target.source.name, target.space.fingerprint, kind]


def open_plan(conn: psycopg.Connection, target: Target, kind: str, chunk_rows: int) -> tuple[int, bool]:
    """Join the unfinished pass of this kind, or cut a new one; returns (gen, created).

    Chunk bounds are every `chunk_rows`-th id of the source in id order (all rows, live or
    not: the bounds only need to tile the id space). Old finished passes are dropped.
    """
    key = _plan_key(target, kind)
    with conn.transaction():
        locks.xact(conn, locks.PLAN + ":".join(map(str, key)))
        row = conn.execute(
            sql.SQL(
                "SELECT max(gen) FILTER (WHERE done_at IS NULL), max(gen) FROM {}"
                " WHERE source = %s AND space_fp = %s AND kind = %s"
            ).format(LEASES),
            key,
        ).fetchone()
        if row[0] is not None:
            return int(row[0]), False
        gen = int(row[1] or 0) + 1
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE source = %s AND space_fp = %s AND kind = %s").format(LEASES), key
        )
        bounds = [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "SELECT id::text FROM (SELECT {id} AS id, row_number() OVER (ORDER BY {id}) AS rn FROM {src}) q"
                    " WHERE rn %% %s = 0 ORDER BY id"
                ).format(id=target.id, src=target.src),
                (chunk_rows,),
            )
        ]
        edges: list[str | None] = [None, *bounds, None]
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (source, space_fp, kind, gen, chunk, lo, hi) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(LEASES),
                [(*key, gen, i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)],
            )
    return gen, True


class Leases:
    """Claims chunks of one plan on a dedicated autocommit connection (its session locks)."""

    def __init__(self, conn: psycopg.Connection, target: Target, kind: str, gen: int, holder: str) -> None:
        self.conn = conn
        self.target = target
        self.kind = kind
        self.gen = gen
        self.holder = holder
        self._lock = threading.Lock()
        self._key1 = conn.execute(
            "SELECT hashtext(%s)", (f"embed-lease:{target.source.name}:{target.space.fingerprint}:{kind}:{gen}",)
        ).fetchone()[0]

    def _where(self) -> sql.Composed:
        return sql.SQL("source = {} AND space_fp = {} AND kind = {} AND gen = {}").format(
            sql.Literal(self.target.source.name),
            sql.Literal(self.target.space.fingerprint),
            sql.Literal(self.kind),
            sql.Literal(self.gen),
        )

    def claim(self, skip: set[int], run_id: int) -> Chunk | None:
        """The first undone chunk not in `skip` (those this pipeline already took) that no
        other session holds, locked for us; None when there is none. A chunk whose holder
        died is free again, so it is picked up here too."""
        with self._lock:
            todo = self.conn.execute(
                sql.SQL("SELECT chunk FROM {} WHERE {} AND done_at IS NULL ORDER BY chunk").format(
                    LEASES, self._where()
                )
            ).fetchall()
            for (idx,) in todo:
                if idx in skip:  # session locks are re-entrant: never re-take our own chunk
                    continue
                if not self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._key1, idx)).fetchone()[0]:
                    continue
                # Someone may have finished it between our SELECT and our lock.
                row = self.conn.execute(
                    sql.SQL(
                        "UPDATE {} SET holder = %s, run_id = %s, claimed_at = now() WHERE {} AND chunk = %s"
                        " AND done_at IS NULL RETURNING lo, hi"
                    ).format(LEASES, self._where()),
                    (self.holder, run_id, idx),
                ).fetchone()
                if row is None:
                    self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._key1, idx))
                    continue
                return Chunk(self.gen, idx, row[0], row[1])
            return None

    def release(self, chunk: Chunk) -> None:
        with self._lock:
            self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._key1, chunk.index))

    def done_sql(self, chunk: Chunk) -> tuple[sql.Composed, int]:
        """The UPDATE that marks `chunk` done (params: rows written, chunk index) and the index:
        the writer runs it inside the transaction of the chunk's last write."""
        return (
            sql.SQL("UPDATE {} SET done_at = now(), rows_written = rows_written + %s WHERE {} AND chunk = %s").format(
                LEASES, self._where()
            ),
            chunk.index,
        )

    def mark_done(self, chunk: Chunk) -> None:
        """Mark a chunk done that needed no write at all."""
        stmt, idx = self.done_sql(chunk)
        with self._lock:
            self.conn.execute(stmt, (0, idx))

    def remaining(self) -> int:
        """Chunks of this plan not yet done (held by someone or not)."""
        with self._lock:
            return self.conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {} AND done_at IS NULL").format(LEASES, self._where())
            ).fetchone()[0]


def hold_run(conn: psycopg.Connection, run_id: int) -> None:
    """Mark run `run_id` alive for as long as `conn` lives."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK, run_id % 2**31))


def run_alive_sql() -> sql.SQL:
    """A predicate on `r.id` (a runs row): true while the process of that run holds its lock."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        f" AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        f" AND l.classid = {RUN_LOCK}::oid AND l.objid = mod(r.id, 2147483648)::oid AND l.objsubid = 2)"
    )
