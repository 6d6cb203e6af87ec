"""Seeding a real Postgres+pgvector with the synthetic Honcho corpus: schema, counts, vectors,
determinism across databases, and refusal to seed twice."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
import pytest

from embed.db.localpg import LocalServer
from embed.errors import EmbedError
from embed.honcho.synthetic.corpus import Corpus, generate
from embed.honcho.synthetic.schema import TABLES, create_schema
from embed.honcho.synthetic.seed import seed
from tests.conftest import hashed_unit_vectors

DIMS = 8


@pytest.fixture(scope="module")
def pg_url_honcho_tmp(pg_server: LocalServer) -> str:
    """Admin URL of the session's embedded server."""
    return pg_server.url("postgres")


def fresh_db(admin_url: str) -> str:
    name = f"honcho_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def text_vectors(texts: list[str]) -> np.ndarray:
    return hashed_unit_vectors(texts, DIMS)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate()


@pytest.fixture(scope="module")
def seeded(pg_url_honcho_tmp: str, corpus: Corpus) -> tuple[str, dict[str, int], list[list[str]]]:
    """One database seeded with vectors, shared by the read-only tests below."""
    url = fresh_db(pg_url_honcho_tmp)
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return text_vectors(texts)

    with psycopg.connect(url) as conn:
        counts = seed(conn, corpus, dims=DIMS, vectors=counting, batch=1000)
    return url, counts, calls


def table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        got = {t: conn.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0] for t in TABLES}
        for t in ("queries", "qrels"):
            got[f"embed_eval.{t}"] = conn.execute(f"SELECT count(*) FROM embed_eval.{t}").fetchone()[0]
    return got


def expected_counts(c: Corpus) -> dict[str, int]:
    s = c.sizes()
    return {**{t: s[t] for t in TABLES}, "embed_eval.queries": s["queries"], "embed_eval.qrels": s["qrels"]}


def test_seed_without_vectors_loads_every_row_pending(pg_url_honcho_tmp: str, corpus: Corpus) -> None:
    url = fresh_db(pg_url_honcho_tmp)
    with psycopg.connect(url) as conn:
        counts = seed(conn, corpus, dims=DIMS)
    assert counts == expected_counts(corpus) == table_counts(url)
    with psycopg.connect(url) as conn:
        for t in ("documents", "message_embeddings"):
            states = conn.execute(f"SELECT sync_state, count(embedding) FROM {t} GROUP BY 1").fetchall()
            assert states == [("pending", 0)]
        # messages keep the corpus ids, and the identity continues after them
        new_id = conn.execute(
            "INSERT INTO messages (public_id, session_name, content, token_count, seq_in_session, peer_name,"
            " workspace_name) SELECT 'x' || repeat('y', 20), session_name, 'hi', 1, 100000, peer_name,"
            " workspace_name FROM messages LIMIT 1 RETURNING id"
        ).fetchone()[0]
        assert new_id == len(corpus.messages) + 1
        conn.rollback()


def test_seed_with_vectors_embeds_unique_texts_once(seeded: tuple[str, dict[str, int], list[list[str]]], corpus: Corpus) -> None:
    url, counts, calls = seeded
    assert counts == expected_counts(corpus) == table_counts(url)
    sent = [t for call in calls for t in call]
    assert len(sent) == len(set(sent))  # each text embedded once, across both tables
    assert all(t.strip() for t in sent)  # blank text is never sent to the model
    assert len(calls) == -(-len(sent) // 1000) and all(len(c) <= 1000 for c in calls)
    unique = {r["content"] for r in corpus.documents + corpus.message_embeddings if r["content"].strip()}
    assert set(sent) == unique


@pytest.mark.parametrize("table", ["documents", "message_embeddings"])
def test_vectors_have_the_dims_and_blank_text_stays_null(seeded: tuple[str, dict[str, int], list[list[str]]], table: str) -> None:
    url, _, _ = seeded
    with psycopg.connect(url) as conn:
        dims = conn.execute(f"SELECT DISTINCT vector_dims(embedding) FROM {table} WHERE embedding IS NOT NULL").fetchall()
        assert dims == [(DIMS,)]
        blank = conn.execute(
            f"SELECT count(*), count(embedding), bool_and(sync_state = 'failed') FROM {table} WHERE content ~ '^\\s*$'"
        ).fetchone()
        assert blank[0] >= 2 and blank[1] == 0 and blank[2]
        rest = conn.execute(
            f"SELECT count(*) = count(embedding), bool_and(sync_state = 'synced'), bool_and(last_sync_at IS NOT NULL)"
            f" FROM {table} WHERE content !~ '^\\s*$'"
        ).fetchone()
        assert rest == (True, True, True)
        # identical content, identical vector
        spread = conn.execute(
            f"SELECT max(n) FROM (SELECT count(DISTINCT embedding::text) n FROM {table} GROUP BY content) s"
        ).fetchone()[0]
        assert spread == 1
        stored = conn.execute(f"SELECT content, embedding::text FROM {table} WHERE embedding IS NOT NULL LIMIT 1").fetchone()
        want = text_vectors([stored[0]])[0]
        got = np.array([float(x) for x in stored[1].strip("[]").split(",")], dtype=np.float32)
        assert np.allclose(got, want, atol=1e-6)


def test_same_seed_in_two_databases_is_identical(pg_url_honcho_tmp: str, seeded: tuple[str, dict[str, int], list[list[str]]]) -> None:
    url_a, _, _ = seeded
    url_b = fresh_db(pg_url_honcho_tmp)
    with psycopg.connect(url_b) as conn:
        seed(conn, generate(), dims=DIMS, vectors=text_vectors, batch=5000)
    queries = (
        "SELECT md5(string_agg(id || content, ',' ORDER BY id)) FROM documents",
        "SELECT md5(string_agg(id || coalesce(embedding::text, '-'), ',' ORDER BY id)) FROM documents",
        "SELECT md5(string_agg(id::text || message_id || content, ',' ORDER BY id)) FROM message_embeddings",
        "SELECT md5(string_agg(qid || doc_id, ',' ORDER BY qid, doc_id)) FROM embed_eval.qrels",
    )
    for q in queries:
        with psycopg.connect(url_a) as a, psycopg.connect(url_b) as b:
            assert a.execute(q).fetchone() == b.execute(q).fetchone(), q


def test_seeding_twice_is_refused_and_changes_nothing(seeded: tuple[str, dict[str, int], list[list[str]]], corpus: Corpus) -> None:
    url, _, _ = seeded
    before = table_counts(url)
    with psycopg.connect(url) as conn, pytest.raises(EmbedError, match="already seeded"):
        seed(conn, corpus, dims=DIMS)
    assert table_counts(url) == before


def test_hnsw_indexes_match_honchos(seeded: tuple[str, dict[str, int], list[list[str]]]) -> None:
    url, _, _ = seeded
    with psycopg.connect(url) as conn:
        rows = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexdef ILIKE '%USING hnsw%'").fetchall())
        assert set(rows) == {"ix_documents_embedding_hnsw", "ix_message_embeddings_embedding_hnsw"}
        for d in rows.values():
            assert "(embedding vector_cosine_ops)" in d and "m='16'" in d and "ef_construction='64'" in d
        # a Honcho-shaped read can use it
        conn.execute("SET enable_seqscan = off")
        q = text_vectors(["Anna mieszka w Krakowie."])[0]
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM documents WHERE deleted_at IS NULL ORDER BY embedding <=> %s::vector LIMIT 5",
                (str(q.tolist()),),
            ).fetchall()
        )
        assert "ix_documents_embedding_hnsw" in plan


def test_qrels_point_at_live_documents(seeded: tuple[str, dict[str, int], list[list[str]]]) -> None:
    url, _, _ = seeded
    with psycopg.connect(url) as conn:
        bad = conn.execute(
            "SELECT count(*) FROM embed_eval.qrels r JOIN embed_eval.queries q USING (qid)"
            " LEFT JOIN documents d ON d.id = r.doc_id AND d.deleted_at IS NULL AND d.embedding IS NOT NULL"
            " AND (d.workspace_name, d.observer, d.observed) = (q.workspace_name, q.observer, q.observed)"
            " WHERE d.id IS NULL"
        ).fetchone()[0]
        assert bad == 0
        pairs = conn.execute(
            "SELECT DISTINCT q.lang, d.internal_metadata->'synthetic'->>'lang' FROM embed_eval.qrels r"
            " JOIN embed_eval.queries q USING (qid) JOIN documents d ON d.id = r.doc_id"
        ).fetchall()
        assert {("pl", "pl"), ("pl", "en"), ("en", "pl"), ("en", "en")} <= set(pairs)


def test_wrong_vector_shape_is_refused_before_loading(pg_url_honcho_tmp: str) -> None:
    url = fresh_db(pg_url_honcho_tmp)
    small = generate(seed=2, documents=80, messages=20)
    with psycopg.connect(url) as conn, pytest.raises(EmbedError, match="shape"):
        seed(conn, small, dims=DIMS, vectors=lambda texts: np.zeros((len(texts), DIMS + 1), np.float32))
    assert table_counts(url)["documents"] == 0


def test_create_schema_is_idempotent_and_guards_dims(pg_url_honcho_tmp: str) -> None:
    url = fresh_db(pg_url_honcho_tmp)
    with psycopg.connect(url) as conn:
        create_schema(conn, dims=DIMS)
        create_schema(conn, dims=DIMS)
        with pytest.raises(EmbedError, match=r"vector\(8\), not vector\(16\)"):
            create_schema(conn, dims=16)
        for bad in (0, 16001, True, 1.5, "8"):
            with pytest.raises(EmbedError, match="dims"):
                create_schema(conn, dims=bad)  # type: ignore[arg-type]
        with pytest.raises(EmbedError, match="2000"):
            create_schema(conn, dims=3072)  # pgvector's HNSW index stops at 2000 dims
        cols = conn.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name IN ('embedding', 'deleted_at', 'sync_state')"
            " ORDER BY 1, 2"
        ).fetchall()
        assert cols == [
            ("documents", "deleted_at", "YES"), ("documents", "embedding", "YES"), ("documents", "sync_state", "NO"),
            ("message_embeddings", "embedding", "YES"), ("message_embeddings", "sync_state", "NO"),
        ]
        fk = conn.execute(
            "SELECT confdeltype FROM pg_constraint WHERE conname = 'fk_message_embeddings_message_id_messages'"
        ).fetchone()
        assert fk == ("c",)  # ON DELETE CASCADE
