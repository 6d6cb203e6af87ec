"""Indexes on store tables: the HNSW index reads use, and the content-hash btree reuse uses.

Indexes are unnamed (Postgres derives a unique name), so two physical tables never collide,
and built after bulk loads, CONCURRENTLY when the table already serves reads.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.spaces import Space
from embed.store.target import Target

HNSW_MAX_DIMS = 2000  # pgvector cannot build HNSW on a `vector` wider than this
OPCLASS = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}
HALFVEC_HNSW_MAX_DIMS = 4000  # the same limit on a `halfvec`
DEFAULT_BUILD_MEMORY_KB = 512 * 1024  # config.DEFAULT_BUILD_MEMORY, for params built without a Config


def opclass(space: Space) -> str:
    """The HNSW operator class for the space's metric on its storage type (vector_/halfvec_...)."""
    return OPCLASS[space.metric].replace("vector_", f"{space.storage}_", 1)


def hnsw_max_dims(space: Space) -> int:
    return HALFVEC_HNSW_MAX_DIMS if space.storage == "halfvec" else HNSW_MAX_DIMS




def column_indexes(conn: psycopg.Connection, target: Target, column: str, am: str) -> list[tuple[str, bool]]:
    """(name, valid) of single-column indexes of access method `am` on the store column."""
    return conn.execute(
        """SELECT c.relname, i.indisvalid FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
           JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = i.indkey[0]
           WHERE i.indrelid = to_regclass(%s) AND i.indnatts = 1 AND att.attname = %s AND a.amname = %s
           ORDER BY c.relname""",
        (f"{store.SCHEMA}.{target.table}", column, am),
    ).fetchall()


def build_memory(params: dict[str, int]) -> sql.Composed:
    """`SET maintenance_work_mem` for one build, from embed_index (config: maintenance_work_mem)."""
    kb = int(params.get("maintenance_work_mem_kb", DEFAULT_BUILD_MEMORY_KB))
    return sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{kb}kB"))


def ensure_index(
    conn: psycopg.Connection, target: Target, column: str, am: str, method: sql.Composable, *, concurrently: bool,
    memory: sql.Composable | None = None,
) -> dict[str, Any]:
    """Make sure one valid index exists; drop invalid leftovers (an interrupted CONCURRENTLY
    build leaves one). Indexes are unnamed (Postgres derives a unique name), so two physical
    tables never collide. `conn` must be in autocommit mode; an advisory lock keeps two
    processes from building the same index."""
    key = f"embed-index:{target.table}:{column}"
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    try:
        found = column_indexes(conn, target, column, am)
        valid = [name for name, ok in found if ok]
        for name, ok in found:
            if not ok:
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(store.SCHEMA, name)))
        if valid:
            return {"state": "valid", "name": valid[0], "built": False}
        t0 = time.monotonic()
        conn.execute(memory or build_memory({}))
        mem = conn.execute("SHOW maintenance_work_mem").fetchone()[0]  # what the build below gets
        conn.execute(
            sql.SQL("CREATE INDEX {conc} ON {tbl} USING {method}").format(
                conc=sql.SQL("CONCURRENTLY") if concurrently else sql.SQL(""), tbl=target.store, method=method
            )
        )
        conn.execute("RESET maintenance_work_mem")
        found = [name for name, ok in column_indexes(conn, target, column, am) if ok]
        return {
            "state": "valid" if found else "missing",
            "name": found[0] if found else None,
            "built": True,
            "concurrently": concurrently,
            "maintenance_work_mem": mem,
            "seconds": round(time.monotonic() - t0, 3),
        }
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def hnsw_method(target: Target, params: dict[str, int]) -> sql.Composed:
    return sql.SQL("hnsw (embedding {ops}) WITH (m = {m}, ef_construction = {ef})").format(
        ops=sql.SQL(opclass(target.space)),
        m=sql.Literal(int(params["m"])),
        ef=sql.Literal(int(params["ef_construction"])),
    )


def ensure_hnsw(conn: psycopg.Connection, target: Target, params: dict[str, int], *, concurrently: bool) -> dict[str, Any]:
    if target.space.dims > hnsw_max_dims(target.space):
        return {"state": "not built", "reason": f"pgvector builds HNSW on {target.space.storage} columns up to "
                f"{hnsw_max_dims(target.space)} dims"}
    out = ensure_index(conn, target, "embedding", "hnsw", hnsw_method(target, params), concurrently=concurrently,
                       memory=build_memory(params))
    out.update(m=params["m"], ef_construction=params["ef_construction"], opclass=opclass(target.space))
    return out


def ensure_hash_index(conn: psycopg.Connection, target: Target, *, concurrently: bool) -> dict[str, Any]:
    """A btree on content_sha256: reuse of stored vectors looks rows up by content hash."""
    return ensure_index(
        conn, target, "content_sha256", "btree", sql.SQL("btree (content_sha256)"), concurrently=concurrently
    )
