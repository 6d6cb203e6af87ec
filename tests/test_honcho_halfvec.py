"""Honcho on a `storage: halfvec` space after the in-place swap: its columns are halfvec(D).

Honcho v3.0.12 talks to them through SQLAlchemy + psycopg with pgvector's `Vector(D)` type, which
binds a vector as its text form ('[0.1,...]', a str: psycopg sends it untyped) and parses the text
it reads back; its startup validator compares `pg_attribute.atttypmod` of both `embedding` columns
with EMBEDDING_VECTOR_DIMENSIONS. Run with Honcho's own stack (SQLAlchemy 2.0.49, pgvector 0.4.2,
psycopg 3.3.4) against a halfvec(1024) column, all of it works: the validator reads 1024, ORM
inserts (one row, and add_all) are cast to halfvec, reads come back as float32 arrays, and
`cosine_distance` orders by `'[…]'::halfvec` through the halfvec HNSW index. This test replays the
statements that stack emits, on a plain psycopg connection without pgvector's adapters (so every
vector travels as untyped text, as Honcho's do), on real Honcho-shaped tables after a real swap.
"""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector import Vector

from embed.config import Config
from embed.cutover import inplace
from tests.support.inplace import LEGACY, NEW, fill_store, honcho_db, nanoid, scopes, synthetic
from tests.test_halfvec import column_type, half  # noqa: F401 (half: the fixture, a halfvec e5_small)

# src/startup/embedding_validator.py (_introspect_pgvector_dims_once), verbatim but for bind style
VALIDATOR = """
        SELECT c.relname AS table_name, a.atttypmod AS typmod
        FROM pg_attribute a
        JOIN pg_class c ON a.attrelid = c.oid
        JOIN pg_namespace n ON c.relnamespace = n.oid
        WHERE n.nspname = %(schema)s
          AND c.relname = ANY(%(tables)s)
          AND a.attname = 'embedding'
        """
# What SQLAlchemy 2.0.49's psycopg dialect emits for Honcho's models (pgvector's Vector binds no cast)
INSERT_DOC = ("INSERT INTO documents (id, content, observer, observed, workspace_name, session_name, embedding)"
              " VALUES (%(id)s::VARCHAR, %(content)s::VARCHAR, %(observer)s::VARCHAR, %(observed)s::VARCHAR,"
              " %(workspace_name)s::VARCHAR, %(session_name)s::VARCHAR, %(embedding)s)")
INSERT_MSG = ("INSERT INTO message_embeddings (content, embedding, message_id, workspace_name, session_name, peer_name)"
              " VALUES (%(content)s::VARCHAR, %(embedding)s, %(message_id)s::VARCHAR, %(workspace_name)s::VARCHAR,"
              " %(session_name)s::VARCHAR, %(peer_name)s::VARCHAR)")
# crud/document.py _query_documents_pgvector (semantic dedup passes max_distance=0.05)
QUERY_DOCS = ("SELECT documents.id, documents.embedding FROM documents WHERE documents.workspace_name ="
              " %(workspace_name_1)s::VARCHAR AND documents.observer = %(observer_1)s::VARCHAR AND documents.observed ="
              " %(observed_1)s::VARCHAR AND documents.embedding IS NOT NULL AND documents.deleted_at IS NULL"
              " {dedup}ORDER BY documents.embedding <=> %(embedding_2)s LIMIT %(param_2)s::INTEGER")
DEDUP = "AND (documents.embedding <=> %(embedding_1)s) <= %(param_1)s "


def text_of(v: np.ndarray) -> str:
    """What pgvector's SQLAlchemy `Vector` binds (Vector._to_db of Honcho's list[float])."""
    return Vector(v.tolist()).to_text()


def test_honcho_reads_and_writes_a_halfvec_column_after_the_swap(db_url: str, half: Config) -> None:  # noqa: F811
    cfg, url = half, db_url
    dims = cfg.space(NEW).dims
    honcho_db(url, cfg, documents=60, messages=20)
    fill_store(url, cfg, NEW)
    inplace.stage(cfg, url, NEW, batch_rows=100, progress=False)
    inplace.swap(cfg, url, NEW)

    with psycopg.connect(url, autocommit=True) as conn:  # Honcho's: no pgvector adapters registered
        for table in ("documents", "message_embeddings"):
            assert column_type(conn, f"public.{table}", "embedding") == f"halfvec({dims})"
        # The startup validator: the typmod of a halfvec column is its dimension, as for vector.
        typmods = dict(conn.execute(VALIDATOR, {"schema": "public", "tables": ["documents", "message_embeddings"]}))
        assert typmods == {"documents": dims, "message_embeddings": dims}

        # Writes: the untyped text is cast to halfvec, one row and a batch (add_all's executemany).
        scope = scopes(conn, 1)[0]
        session = conn.execute("SELECT session_name FROM documents WHERE workspace_name = %s"
                               " AND session_name IS NOT NULL LIMIT 1", (scope["ws"],)).fetchone()[0]
        texts = [f"honcho writes after the swap {i}" for i in range(4)]
        vecs = synthetic(NEW, texts)
        rows = [{"id": nanoid(), "content": t, "observer": scope["observer"], "observed": scope["observed"],
                 "workspace_name": scope["ws"], "session_name": session, "embedding": text_of(v)}
                for t, v in zip(texts, vecs, strict=True)]
        conn.execute(INSERT_DOC, rows[0])
        with conn.cursor() as cur:
            cur.executemany(INSERT_DOC, rows[1:])
        msg = conn.execute("SELECT public_id, workspace_name, session_name, peer_name FROM messages LIMIT 1").fetchone()
        conn.execute(INSERT_MSG, {"content": texts[0], "embedding": text_of(vecs[0]), "message_id": msg[0],
                                  "workspace_name": msg[1], "session_name": msg[2], "peer_name": msg[3]})

        # Reads: the text Honcho's result processor parses, within fp16 rounding of what it wrote.
        got = conn.execute("SELECT embedding FROM documents WHERE id = %s", (rows[2]["id"],)).fetchone()[0]
        assert isinstance(got, str)
        back = Vector.from_text(got).to_numpy()
        assert back.shape == (dims,) and float(np.abs(back - vecs[2]).max()) < 1e-3

        # Queries: `embedding <=> <untyped text>` resolves to halfvec and uses the halfvec HNSW index.
        q = {"workspace_name_1": scope["ws"], "observer_1": scope["observer"], "observed_1": scope["observed"],
             "embedding_1": text_of(vecs[1]), "param_1": 0.05, "embedding_2": text_of(vecs[1]), "param_2": 10}
        dedup = conn.execute(QUERY_DOCS.format(dedup=DEDUP), q).fetchall()
        assert [r[0] for r in dedup] == [rows[1]["id"]]  # semantic dedup finds the row it wrote, only it
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")  # ~60 rows: the planner would rightly sort them;
            conn.execute("SET LOCAL enable_sort = off")  # with these off, the HNSW index is the ordered path left
            index = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                                 " WHERE i.indrelid = 'public.documents'::regclass"
                                 " AND pg_get_indexdef(i.indexrelid) LIKE '%%(embedding halfvec_cosine_ops)%%'"
                                 ).fetchone()[0]
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + QUERY_DOCS.format(dedup=""), q))
        assert f"Index Scan using {index} on documents" in plan and "::halfvec" in plan and "Sort" not in plan, plan
        top = conn.execute(QUERY_DOCS.format(dedup=""), q).fetchall()
        assert top[0][0] == rows[1]["id"] and len(top) == 10

    inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False)  # Honcho's halfvec rows do not block it
    with psycopg.connect(url) as conn:
        assert column_type(conn, "public.documents", "embedding") == f"vector({cfg.space(LEGACY).dims})"
