"""Helpers for tests/test_inplace.py (no tests here).

Vectors are synthetic (conftest.hashed_unit_vectors of "<space>:<text>"), so the legacy column
and each store table hold a different, deterministic geometry per space: the two 384-d spaces
rank differently, which is what the tests must be able to see. Rows are written by binary COPY
(embed.store.writer.encode_copy), small deltas by an upsert.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embed import store
from embed.config import Config
from embed.db.connection import connect, ensure_pgvector
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.store.target import Target, content_hash
from embed.store.writer import Rows, copy_statement, encode_copy
from tests.conftest import hashed_unit_vectors
from tests.support.backfill import NANOID, insert_doc

LEGACY = "minilm_l6"
NEW = "e5_small"
HONCHO_QUERY = """SELECT id, embedding <=> %(q)s AS d FROM documents
    WHERE workspace_name = %(ws)s AND observer = %(observer)s AND observed = %(observed)s
      AND deleted_at IS NULL AND embedding IS NOT NULL {extra}
    ORDER BY embedding <=> %(q)s LIMIT %(k)s"""


def synthetic(space: str, texts: list[str], dims: int = 384) -> np.ndarray:
    return hashed_unit_vectors([f"{space}:{t}" for t in texts], dims)


def honcho_db(url: str, cfg: Config, *, documents: int, messages: int) -> str:
    """Honcho tables seeded with legacy-space (synthetic) vectors, then embed_store."""
    ensure_pgvector(url)
    with connect(url) as conn:
        seed(conn, generate(seed=7, documents=documents, messages=messages), dims=384,
             vectors=lambda texts: synthetic(LEGACY, texts))
        store.init(conn, cfg)
    return url


def live_rows(conn: psycopg.Connection, cfg: Config, source: str) -> list[tuple[Any, str]]:
    t = Target(cfg.source(source), cfg.space(NEW))
    return conn.execute(t.live_rows()).fetchall()


def fill_store(url: str, cfg: Config, space: str = NEW) -> dict[str, int]:
    """Store vectors for every live non-blank row of both sources (COPY into empty tables),
    skip records for blank ones: what a complete backfill leaves."""
    sp = cfg.space(space)
    out = {}
    with connect(url) as conn, conn.transaction():
        for name in ("documents", "message_embeddings"):
            t = Target(cfg.source(name), sp)
            rows = live_rows(conn, cfg, name)
            keep = [(i, x) for i, x in rows if x.strip()]
            data = Rows(ids=[i for i, _ in keep], hashes=[content_hash(x) for _, x in keep],
                        vectors=synthetic(space, [x for _, x in keep]), truncated=np.zeros(len(keep), bool))
            with conn.cursor() as cur, cur.copy(copy_statement(t.store)) as cp:
                cp.write(encode_copy(data, t.source.id_type, sp.fingerprint, 0, half=sp.storage == "halfvec"))
            blank = [(name, sp.fingerprint, str(i), content_hash(x), "empty") for i, x in rows if not x.strip()]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO embed_store.skipped (source, space_fp, source_id, content_sha256, reason)"
                                " VALUES (%s, %s, %s, %s, %s)", blank)
            out[name] = len(keep)
    return out


def put_vectors(conn: psycopg.Connection, cfg: Config, source: str, ids: list[Any], space: str = NEW) -> None:
    """Upsert store vectors for these rows' current content (what a sync pass would write)."""
    sp = cfg.space(space)
    t = Target(cfg.source(source), sp)
    rows = conn.execute(
        sql.SQL("SELECT {id}, {text} FROM {src} WHERE {id} = ANY(%s)").format(id=t.id, text=t.text, src=t.src), (ids,)
    ).fetchall()
    vecs = synthetic(space, [x for _, x in rows])
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (source_id, content_sha256, space_fp, embedding) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (source_id) DO UPDATE SET content_sha256 = EXCLUDED.content_sha256,"
                    " embedding = EXCLUDED.embedding").format(t.store),
            [(i, content_hash(x), sp.fingerprint, v) for (i, x), v in zip(rows, vecs, strict=True)],
        )


def nanoid() -> str:
    return "".join(secrets.choice(NANOID) for _ in range(21))


def insert_message(conn: psycopg.Connection, content: str, seq: int) -> int:
    """A message and its (not yet embedded) message_embeddings row, in one transaction."""
    pid = nanoid()
    with conn.transaction():
        conn.execute(
            "INSERT INTO messages (public_id, session_name, content, token_count, seq_in_session, peer_name,"
            " workspace_name) SELECT %s, session_name, %s, 5, %s, peer_name, workspace_name FROM messages"
            " ORDER BY id LIMIT 1",
            (pid, content, seq),
        )
        return conn.execute(
            "INSERT INTO message_embeddings (content, message_id, workspace_name, session_name, peer_name)"
            " SELECT %s, public_id, workspace_name, session_name, peer_name FROM messages WHERE public_id = %s"
            " RETURNING id",
            (content, pid),
        ).fetchone()[0]


class Writer(threading.Thread):
    """Keeps inserting documents and messages like Honcho's API, each in its own transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.docs: list[str] = []
        self.msgs: list[int] = []
        self.errors: list[str] = []
        self.max_wait = 0.0
        self.wrote = threading.Event()  # set once a document and a message are in

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    self.docs.append(insert_doc(conn, f"writer memory {i}: likes tea number {i}"))
                    self.msgs.append(insert_message(conn, f"writer message {i}", 10_000_000 + i))
                    self.wrote.set()
                except psycopg.Error as e:
                    self.errors.append(type(e).__name__)
                self.max_wait = max(self.max_wait, time.monotonic() - t0)
                i += 1
                time.sleep(0.01)


def schema_snapshot(conn: psycopg.Connection) -> list[tuple]:
    """Columns (name, type) and indexes (name, definition, valid) of both Honcho vector tables,
    plus the in-place bookkeeping: what a refused swap must leave exactly as it was."""
    cols = conn.execute(
        "SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid IN ('public.documents'::regclass, 'public.message_embeddings'::regclass)"
        " AND attnum > 0 AND NOT attisdropped ORDER BY 1, 2"
    ).fetchall()
    idx = conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid IN ('public.documents'::regclass, 'public.message_embeddings'::regclass) ORDER BY 1"
    ).fetchall()
    book = conn.execute("SELECT source, column_name, space_fp, previous_fp FROM embed_store.inplace_columns"
                        " ORDER BY 1, 2").fetchall() if conn.execute(
        "SELECT to_regclass('embed_store.inplace_columns')").fetchone()[0] else []
    return [*cols, *idx, *book]


def scopes(conn: psycopg.Connection, n: int) -> list[dict[str, str]]:
    """The n (workspace, observer, observed) collections with the most live documents."""
    rows = conn.execute(
        "SELECT workspace_name, observer, observed FROM documents WHERE deleted_at IS NULL"
        " GROUP BY 1, 2, 3 ORDER BY count(*) DESC, 1, 2, 3 LIMIT %s", (n,)
    ).fetchall()
    return [{"ws": w, "observer": o, "observed": d} for w, o, d in rows]


def honcho_query(conn: psycopg.Connection, scope: dict[str, str], q: np.ndarray, k: int = 10,
                 exclude: list[str] | None = None) -> list[tuple[str, float]]:
    extra = "AND NOT id = ANY(%(exclude)s)" if exclude else ""
    return [(i, float(d)) for i, d in conn.execute(
        HONCHO_QUERY.format(extra=extra), {**scope, "q": q, "k": k, "exclude": exclude or []}).fetchall()]


def store_ranking(conn: psycopg.Connection, cfg: Config, scope: dict[str, str], q: np.ndarray, k: int = 10,
                  space: str = NEW) -> list[tuple[str, float]]:
    """The exact top-k of the same scope computed from the store table's current vectors."""
    t = Target(cfg.source("documents"), cfg.space(space))
    rows = conn.execute(
        sql.SQL(
            "SELECT v.source_id, v.embedding <=> %(q)s FROM {store} AS v JOIN documents AS d ON d.id = v.source_id"
            " AND sha256(convert_to(d.content, 'UTF8')) = v.content_sha256"
            " WHERE d.workspace_name = %(ws)s AND d.observer = %(observer)s AND d.observed = %(observed)s"
            " AND d.deleted_at IS NULL ORDER BY 2 LIMIT %(k)s"
        ).format(store=t.store),
        {**scope, "q": q, "k": k},
    ).fetchall()
    return [(i, float(d)) for i, d in rows]
