"""Honcho `documents` with chosen collection sizes, for the filtered-recall sweep (no tests here).

Honcho's tables (embed.honcho.synthetic.schema), one workspace, the (observer, observed)
collections given, each filled with seeded unit vectors written by binary COPY before Honcho's
HNSW index is built (m=16, ef_construction=64, as Honcho builds it). The vectors are a mixture
of `clusters` Gaussian blobs shared by every collection, like memories on common topics: a
tenant's nearest rows in the whole table are mostly other tenants' rows, which is what starves a
filtered HNSW scan with iterative_scan off.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import numpy as np
import psycopg
from psycopg import sql

from embed.db.connection import connect, ensure_pgvector
from embed.honcho.synthetic.schema import create_hnsw_indexes, create_schema, hnsw_index_name
from tests.support.backfill import NANOID

WORKSPACE = "ws-filtered"


def _id() -> str:
    return "".join(secrets.choice(NANOID) for _ in range(21))


def unit_mixture(n: int, centres: np.ndarray, rng: np.random.Generator, spread: float = 0.35) -> np.ndarray:
    """n unit vectors drawn around the given centres (spread: noise per dimension relative to a centre's)."""
    out = centres[rng.integers(len(centres), size=n)]
    out = out + spread * rng.standard_normal(out.shape).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def tenant_documents(
    url: str, collections: Mapping[tuple[str, str], int], *, dims: int = 384, clusters: int = 64, seed: int = 11,
    chunk: int = 20_000,
) -> dict[tuple[str, str], int]:
    """Honcho's schema, then `collections[(observer, observed)]` live documents each in WORKSPACE,
    HNSW-indexed and analyzed; returns the sizes written."""
    peers = sorted({p for pair in collections for p in pair})
    ensure_pgvector(url)
    with connect(url) as conn:
        create_schema(conn, dims=dims)
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("public", hnsw_index_name("documents"))))
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, %s)", (_id(), WORKSPACE))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO peers (id, name, workspace_name) VALUES (%s, %s, %s)",
                            [(_id(), p, WORKSPACE) for p in peers])
            cur.executemany(
                "INSERT INTO collections (id, observer, observed, workspace_name) VALUES (%s, %s, %s, %s)",
                [(_id(), o, d, WORKSPACE) for o, d in collections])
        stmt = sql.SQL("COPY documents (id, content, embedding, observer, observed, workspace_name, sync_state)"
                       " FROM STDIN (FORMAT BINARY)")
        centres = np.random.default_rng([seed, 0]).standard_normal((clusters, dims)).astype(np.float32)
        for c, ((observer, observed), n) in enumerate(collections.items()):
            for lo in range(0, n, chunk):
                vecs = unit_mixture(min(chunk, n - lo), centres, np.random.default_rng([seed, 1 + c, lo]))
                with conn.cursor() as cur, cur.copy(stmt) as cp:
                    cp.set_types(["text", "text", "vector", "text", "text", "text", "text"])
                    for i, v in enumerate(vecs):
                        cp.write_row((_id(), f"memory {lo + i} of {observer}/{observed}", v, observer, observed,
                                      WORKSPACE, "synced"))
        conn.commit()
    with connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        create_hnsw_indexes(conn)
        conn.execute("ANALYZE documents")
    return dict(collections)


def explain(conn: psycopg.Connection, observer: str, observed: str, q: np.ndarray, k: int = 10) -> str:
    """The plan of Honcho's documents read for one collection, as one string."""
    rows = conn.execute(
        "EXPLAIN SELECT id FROM documents WHERE workspace_name = %s AND observer = %s AND observed = %s"
        " AND embedding IS NOT NULL AND deleted_at IS NULL ORDER BY embedding <=> %s LIMIT %s",
        (WORKSPACE, observer, observed, q, k),
    ).fetchall()
    return "\n".join(r[0] for r in rows)
