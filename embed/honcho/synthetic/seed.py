"""Load a synthetic Corpus into a database shaped like Honcho's, fast, with optional vectors.

Bulk loading uses binary COPY (40k rows in seconds); embeddings, when a `vectors` function is
given, are computed once per unique non-blank text in large batches (Honcho repeats the same
text across rows), and written the way Honcho records a sync: 'synced' with a vector, or
'failed' with NULL for blank text it could not embed. The labelled queries go to `embed_eval`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from embed.errors import EmbedError
from embed.honcho.synthetic.corpus import Corpus, Row
from embed.honcho.synthetic.schema import TABLES, check_dims, create_schema

Vectors = Callable[[list[str]], np.ndarray]
EVAL_SCHEMA = "embed_eval"

# Column -> Postgres type for binary COPY, in COPY order. Identity ids of message_embeddings are
# left to the database; messages keep the corpus ids that documents' internal_metadata cite.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "workspaces": (
        ("id", "text"),
        ("name", "text"),
        ("created_at", "timestamptz"),
        ("metadata", "jsonb"),
        ("internal_metadata", "jsonb"),
        ("configuration", "jsonb"),
    ),
    "peers": (
        ("id", "text"),
        ("name", "text"),
        ("metadata", "jsonb"),
        ("internal_metadata", "jsonb"),
        ("created_at", "timestamptz"),
        ("workspace_name", "text"),
        ("configuration", "jsonb"),
    ),
    "sessions": (
        ("id", "text"),
        ("name", "text"),
        ("is_active", "bool"),
        ("metadata", "jsonb"),
        ("internal_metadata", "jsonb"),
        ("created_at", "timestamptz"),
        ("workspace_name", "text"),
        ("configuration", "jsonb"),
    ),
    "collections": (
        ("id", "text"),
        ("observer", "text"),
        ("observed", "text"),
        ("created_at", "timestamptz"),
        ("metadata", "jsonb"),
        ("internal_metadata", "jsonb"),
        ("workspace_name", "text"),
    ),
    "messages": (
        ("id", "int8"),
        ("public_id", "text"),
        ("session_name", "text"),
        ("content", "text"),
        ("metadata", "jsonb"),
        ("internal_metadata", "jsonb"),
        ("token_count", "int4"),
        ("seq_in_session", "int8"),
        ("created_at", "timestamptz"),
        ("peer_name", "text"),
        ("workspace_name", "text"),
    ),
    "documents": (
        ("id", "text"),
        ("internal_metadata", "jsonb"),
        ("content", "text"),
        ("level", "text"),
        ("times_derived", "int4"),
        ("embedding", "vector"),
        ("source_ids", "jsonb"),
        ("created_at", "timestamptz"),
        ("observer", "text"),
        ("observed", "text"),
        ("workspace_name", "text"),
        ("session_name", "text"),
        ("deleted_at", "timestamptz"),
        ("sync_state", "text"),
        ("last_sync_at", "timestamptz"),
        ("sync_attempts", "int4"),
    ),
    "message_embeddings": (
        ("content", "text"),
        ("embedding", "vector"),
        ("message_id", "text"),
        ("workspace_name", "text"),
        ("session_name", "text"),
        ("peer_name", "text"),
        ("created_at", "timestamptz"),
        ("sync_state", "text"),
        ("last_sync_at", "timestamptz"),
        ("sync_attempts", "int4"),
    ),
}
EVAL_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "queries": (
        ("qid", "text"),
        ("text", "text"),
        ("lang", "text"),
        ("doc_langs", "text"),
        ("fact_type", "text"),
        ("workspace_name", "text"),
        ("observer", "text"),
        ("observed", "text"),
    ),
    "qrels": (("qid", "text"), ("doc_id", "text"), ("relevance", "int4")),
}
_EVAL_DDL = (
    "CREATE SCHEMA IF NOT EXISTS embed_eval",
    """CREATE TABLE IF NOT EXISTS embed_eval.queries (
        qid text PRIMARY KEY,
        text text NOT NULL,
        lang text NOT NULL CHECK (lang IN ('pl', 'en')),
        doc_langs text NOT NULL,
        fact_type text NOT NULL,
        workspace_name text NOT NULL,
        observer text NOT NULL,
        observed text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS embed_eval.qrels (
        qid text NOT NULL REFERENCES embed_eval.queries (qid) ON DELETE CASCADE,
        doc_id text NOT NULL,
        relevance integer NOT NULL,
        PRIMARY KEY (qid, doc_id))""",
)


def create_eval_schema(conn: psycopg.Connection) -> None:
    """embed_eval.queries / embed_eval.qrels: the labelled set, kept out of Honcho's schema."""
    with conn.transaction():
        for stmt in _EVAL_DDL:
            conn.execute(stmt)


def _blank(text: str) -> bool:
    return not text.strip()


def embed_texts(corpus: Corpus, dims: int, vectors: Vectors, batch: int) -> dict[str, np.ndarray]:
    """One vector per unique non-blank text of documents and message_embeddings.

    `vectors` is called once per `batch` unique texts, never twice for the same text, and must
    return a finite (len(texts), dims) array; rows are stored as float32 as returned.
    """
    unique: dict[str, None] = {}
    for rows in (corpus.documents, corpus.message_embeddings):
        for r in rows:
            if not _blank(r["content"]):
                unique.setdefault(r["content"], None)
    texts = list(unique)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        arr = np.asarray(vectors(chunk), dtype=np.float32)
        if arr.shape != (len(chunk), dims):
            raise EmbedError(
                f"vectors() returned shape {arr.shape} for {len(chunk)} texts; expected ({len(chunk)}, {dims})"
            )
        if not np.isfinite(arr).all():
            raise EmbedError("vectors() returned NaN or infinite values")
        out.update(zip(chunk, arr, strict=True))
    return out


def _with_sync(rows: Iterable[Row], emb: dict[str, np.ndarray] | None) -> Iterable[Row]:
    """Rows with embedding and sync columns set as Honcho's sync would have left them."""
    for r in rows:
        if emb is None:
            yield {**r, "embedding": None}
            continue
        vec = emb.get(r["content"])
        yield {
            **r,
            "embedding": vec,
            "sync_state": "failed" if vec is None else "synced",
            "last_sync_at": r["created_at"],
            "sync_attempts": 1,
        }


def _copy(
    conn: psycopg.Connection, schema: str, table: str, cols: Sequence[tuple[str, str]], rows: Iterable[Row]
) -> int:
    names = [c for c, _ in cols]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    n = 0
    with conn.cursor() as cur, cur.copy(stmt) as cp:
        cp.set_types([t for _, t in cols])
        for r in rows:
            cp.write_row([r[c] for c in names])
            n += 1
    return n


def _secondary_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the non-constraint indexes on Honcho's tables."""
    rows = conn.execute(
        "SELECT ic.relname, pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = 'public' AND t.relname = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        " ORDER BY ic.relname",
        (list(TABLES),),
    ).fetchall()
    return [(str(name), str(d)) for name, d in rows]


def _first_nonempty(conn: psycopg.Connection) -> str | None:
    targets = [("public", t) for t in TABLES] + [(EVAL_SCHEMA, t) for t in EVAL_COLUMNS]
    for schema, table in targets:
        q = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, table))
        row = conn.execute(q).fetchone()
        if row and row[0]:
            return f"{schema}.{table}"
    return None


def seed(
    conn: psycopg.Connection, corpus: Corpus, *, dims: int, vectors: Vectors | None = None, batch: int = 5000
) -> dict[str, int]:
    """Create the schema and load `corpus` into empty tables; returns rows written per table.

    Refuses (EmbedError) when any target table already has rows, so a second run can never mix
    two corpora. Registers the pgvector adapters on `conn`.
    """
    check_dims(dims)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise EmbedError(f"batch must be a positive integer, got {batch!r}")
    create_schema(conn, dims=dims)
    create_eval_schema(conn)
    with conn.transaction():
        taken = _first_nonempty(conn)
    if taken:
        raise EmbedError(f"{taken} already seeded; drop the tables or use another database")
    # Embed before the load transaction so no lock is held while a model runs.
    emb = embed_texts(corpus, dims, vectors, batch) if vectors is not None else None
    counts: dict[str, int] = {}
    with conn.transaction():
        taken = _first_nonempty(conn)  # someone may have loaded meanwhile
        if taken:
            raise EmbedError(f"{taken} already seeded; drop the tables or use another database")
        register_vector(conn)
        # The tables are empty: building each index once after the load beats maintaining it
        # row by row (most of all HNSW), as pg_restore does. Constraint indexes stay.
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        indexes = _secondary_indexes(conn)
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", name)))
        plain: dict[str, Iterable[Row]] = {
            "workspaces": corpus.workspaces,
            "peers": corpus.peers,
            "sessions": corpus.sessions,
            "collections": corpus.collections,
            "messages": corpus.messages,
            "documents": _with_sync(corpus.documents, emb),
            "message_embeddings": _with_sync(corpus.message_embeddings, emb),
        }
        for table in TABLES:
            counts[table] = _copy(conn, "public", table, COLUMNS[table], plain[table])
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('public.messages', 'id'), max(id)) FROM public.messages"
            " HAVING max(id) IS NOT NULL"
        )
        qrels: list[dict[str, Any]] = [
            {"qid": qid, "doc_id": doc, "relevance": rel}
            for qid, docs in corpus.qrels.items()
            for doc, rel in docs.items()
        ]
        counts[f"{EVAL_SCHEMA}.queries"] = _copy(conn, EVAL_SCHEMA, "queries", EVAL_COLUMNS["queries"], corpus.queries)
        counts[f"{EVAL_SCHEMA}.qrels"] = _copy(conn, EVAL_SCHEMA, "qrels", EVAL_COLUMNS["qrels"], qrels)
        for _, indexdef in indexes:
            conn.execute(sql.SQL(indexdef))  # type: ignore[arg-type]  # server-generated DDL
        for table in ("documents", "message_embeddings"):  # the searched tables; autovacuum does the rest
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("public", table)))
    return counts
