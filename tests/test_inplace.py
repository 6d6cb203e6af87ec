"""The Honcho in-place cutover (embed.cutover.inplace) on the real embedded Postgres + pgvector.

Spaces: legacy minilm_l6 and candidate e5_small, both 384-d (dims do not identify a space).
Vectors are synthetic and salted per space (tests/support/inplace.py) except where a real
model must embed rows written after the cutover (swap_back uses the real minilm_l6 model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from embed.config import Config
from embed.cutover import inplace, inplace_queue, inplace_sql
from embed.cutover.inplace_sql import index_name, tagged_column
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.honcho.settings import API_KEY_PLACEHOLDER, honcho_settings
from embed.store.target import Target
from tests.support.backfill import EMBED, cli_env, insert_doc
from tests.support.inplace import (
    HONCHO_QUERY,
    LEGACY,
    NEW,
    Writer,
    fill_store,
    honcho_db,
    honcho_query,
    insert_message,
    put_vectors,
    schema_snapshot,
    scopes,
    store_ranking,
    synthetic,
)

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("documents", "message_embeddings")


@pytest.fixture
def honcho(db_url: str, cfg: Config) -> str:
    """600 documents and 300 message chunks with legacy vectors; a complete e5_small store."""
    honcho_db(db_url, cfg, documents=600, messages=300)
    fill_store(db_url, cfg)
    return db_url


def col(cfg: Config, space: str, source: str = "documents") -> str:
    return tagged_column(cfg.source(source), cfg.space(space))


def refusal(fn, *args, **kw) -> str:
    with pytest.raises(EmbedError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def explain(conn: psycopg.Connection, scope: dict[str, str], q: np.ndarray) -> str:
    rows = conn.execute("EXPLAIN " + HONCHO_QUERY.format(extra=""), {**scope, "q": q, "k": 10}).fetchall()
    return "\n".join(r[0][:120] for r in rows)


def same_ranking(got: list[tuple[str, float]], exact: list[tuple[str, float]], k: int = 10) -> bool:
    """Equal top-k up to the order of ties (the corpus repeats texts: equal vectors, equal
    distances): the same distances in order, every (id, distance) one the exact ranking has."""
    return [d for _, d in got] == [d for _, d in exact[:k]] and set(got) <= set(exact)


def assert_only_current_vectors(conn: psycopg.Connection, cfg: Config, space: str = NEW) -> None:
    """Every live row holds the space's store vector for its current content, or is NULL and
    waiting for Honcho ('pending'; 'failed' only for text embed could not embed either)."""
    for name in TABLES:
        src = cfg.source(name)
        store = f"embed_store.{name}__{cfg.space(space).ident}"
        wrong = conn.execute(
            f"SELECT count(*) FROM {src.table} AS x LEFT JOIN {store} AS t ON t.source_id = x.id"
            " AND t.content_sha256 = sha256(convert_to(x.content, 'UTF8'))"
            f" WHERE ({src.live_filter}) AND x.embedding IS NOT NULL"
            " AND (t.source_id IS NULL OR t.embedding IS DISTINCT FROM x.embedding)"
        ).fetchone()[0]
        assert wrong == 0, f"{name}: {wrong} live rows with a vector that is not the current {space} vector"
        states = dict(conn.execute(
            f"SELECT sync_state, count(*) FROM {src.table} WHERE ({src.live_filter}) AND embedding IS NULL GROUP BY 1"
        ).fetchall())
        assert set(states) <= {"pending", "failed"}, states
        failed_not_blank = conn.execute(
            f"SELECT count(*) FROM {src.table} WHERE ({src.live_filter}) AND embedding IS NULL"
            " AND sync_state = 'failed' AND content !~ '^[[:space:]]*$'"
        ).fetchone()[0]
        assert failed_not_blank == 0


# ----------------------------------------------------------------------------- stage and swap
def test_stage_and_swap_under_writers_serve_only_the_new_space(honcho: str, cfg: Config) -> None:
    url = honcho
    with connect(url) as conn:
        before = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        # The rows edited below are picked from these, never from the writer's (a writer row has
        # no vector and stays 'pending': picked as the "synced" edit, it made this test flaky).
        seeded = [r[0] for r in conn.execute(
            "SELECT id FROM documents WHERE deleted_at IS NULL AND content !~ '^[[:space:]]*$' ORDER BY id LIMIT 3")]
    writer = Writer(url)
    writer.start()
    try:
        assert writer.wrote.wait(60)  # a row with no store vector exists before stage (rows_missing)
        staged = inplace.stage(cfg, url, NEW, batch_rows=100, progress=False)
        docs = staged.sources["documents"]
        assert docs.column == col(cfg, NEW) and docs.index.valid and docs.index.built
        assert docs.index.name == index_name("documents", col(cfg, NEW))
        assert docs.rows_staged > 500 and docs.rows_missing >= 1  # the writer's rows have no vector yet
        # Changes between stage and swap: new rows with store vectors, an edit that sync caught,
        # an edit it did not, a soft delete.
        with connect(url, autocommit=True) as conn:
            fresh = [insert_doc(conn, f"fresh memory {i}: moved to Gdańsk") for i in range(3)]
            put_vectors(conn, cfg, "documents", fresh)
            synced_edit, lagging_edit, deleted = seeded
            conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = ANY(%s)",
                         ([synced_edit, lagging_edit],))
            put_vectors(conn, cfg, "documents", [synced_edit])
            conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (deleted,))
        swapped = inplace.swap(cfg, url, NEW)
        time.sleep(0.2)  # the writer keeps going after the swap
    finally:
        writer.stop.set()
        writer.join(30)
    print(f"\nswap lock held {swapped['lock_ms']} ms (600 documents + 300 chunks, writer running); "
          f"writer: {len(writer.docs)} docs + {len(writer.msgs)} messages, longest insert {writer.max_wait * 1000:.0f} ms")
    assert not writer.errors, writer.errors
    assert writer.docs and writer.msgs
    d = swapped["sources"]["documents"]
    assert d["rows_caught_up"] + d["rows_caught_up_in_lock"] >= 4  # 3 fresh rows + the synced edit
    assert d["old_column"] == col(cfg, LEGACY) and d["live_index"] == "ix_documents_embedding_hnsw"

    with connect(url) as conn:
        after = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        assert after == {"documents": before["documents"] + len(writer.docs) + 3,
                         "message_embeddings": before["message_embeddings"] + len(writer.msgs)}
        assert_only_current_vectors(conn, cfg)
        got = {i: (has, st) for i, has, st in conn.execute(
            "SELECT id, embedding IS NOT NULL, sync_state FROM documents WHERE id = ANY(%s)",
            ([*fresh, synced_edit, lagging_edit, *writer.docs[:3]],)).fetchall()}
        assert all(got[i] == (True, "pending") for i in fresh)  # vector in place; Honcho marks it synced
        assert got[synced_edit] == (True, "synced") and got[lagging_edit] == (False, "pending")
        assert all(got[i] == (False, "pending") for i in writer.docs[:3])
        # Both tables at the new space's dims (what Honcho checks at startup), legacy kept aside.
        dims = conn.execute("SELECT array_agg(DISTINCT atttypmod) FROM pg_attribute WHERE attname = 'embedding'"
                            " AND attrelid IN ('documents'::regclass, 'message_embeddings'::regclass)").fetchone()[0]
        assert dims == [384]
        mixed = conn.execute(f'SELECT count(*) FROM documents WHERE embedding = "{col(cfg, LEGACY)}"').fetchone()[0]
        assert mixed == 0

        # Honcho's query: exactly the new space's ranking, through the HNSW index on `embedding`.
        for scope in scopes(conn, 3):
            for text in ("where does she live", "kawa czy herbata"):
                q = synthetic(NEW, [text])[0]
                expected = store_ranking(conn, cfg, scope, q, k=30)
                assert same_ranking(honcho_query(conn, scope, q), expected)  # the planner's choice: btree + sort
                with conn.transaction():
                    # Collections here hold a few dozen rows, so the planner rightly sorts the
                    # tenant's rows (btree) instead of walking the HNSW graph; with sort off the
                    # only ordered path left is that index: it exists on the live column, valid,
                    # with the operator class Honcho's `<=>` needs.
                    conn.execute("SET LOCAL enable_sort = off")
                    conn.execute("SET LOCAL hnsw.ef_search = 1000")  # >= rows: the graph walk is exact
                    conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                    assert "Index Scan using ix_documents_embedding_hnsw on documents" in explain(conn, scope, q)
                    assert same_ranking(honcho_query(conn, scope, q), expected)

    st = inplace.state(cfg, url)["sources"]["documents"]
    assert (st["live_space"], st["previous_space"], st["live_index"]) == (
        NEW, LEGACY, {"name": "ix_documents_embedding_hnsw", "valid": True})
    assert st["columns"] == [{"column": col(cfg, LEGACY), "space_fp": cfg.space(LEGACY).fingerprint,
                              "space": LEGACY, "dims": 384, "index": index_name("documents", col(cfg, LEGACY)),
                              "index_valid": True}]


def test_swap_back_restores_the_old_space_exactly(db_url: str, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    url = honcho_db(db_url, cfg, documents=300, messages=100)
    fill_store(url, cfg)
    with connect(url) as conn:
        sc = scopes(conn, 3)
        queries = synthetic(LEGACY, ["where does she live", "kawa czy herbata"])
        before = [honcho_query(conn, s, q, k=30) for s in sc for q in queries]
        legacy = conn.execute("SELECT md5(string_agg(id || embedding::text, ',' ORDER BY id)) FROM documents"
                              " WHERE embedding IS NOT NULL").fetchone()[0]
    inplace.stage(cfg, url, NEW, progress=False)
    inplace.swap(cfg, url, NEW)
    texts = ["Anna lubi zieloną herbatę", "Tom moved to Lisbon in May"]
    with connect(url, autocommit=True) as conn:
        post = [insert_doc(conn, t) for t in texts]
        insert_message(conn, "Remind me about the dentist on Friday", 20_000_000)
    late: list[str] = []
    real_sync = inplace._sync

    def sync_then_write(*args, **kw):
        out = real_sync(*args, **kw)
        with connect(url, autocommit=True) as c:  # a write between the sync and the swap
            late.append(insert_doc(c, "A memory written during the rollback"))
        return out

    monkeypatch.setattr(inplace, "_sync", sync_then_write)
    back = inplace.swap_back(cfg, url, cfg.space(LEGACY))
    print(f"\nswap back: lock held {back['lock_ms']} ms, {back['rows_caught_up']} rows embedded with minilm_l6 "
          "and caught up before the swap")
    assert back["space"] == LEGACY
    synced, per = back["embedded_before_swap"], back["sources"]
    assert synced["documents"]["rows_embedded"] == 2  # the real model ran for exactly those
    assert synced["message_embeddings"]["rows_embedded"] == 1
    # from the change queue (no pass over every row): the three rows written since the cutover
    # and the late one, which the sync did not see
    assert per["documents"]["full_pass_before_lock"] == [] and per["message_embeddings"]["full_pass_before_lock"] == []
    assert (per["documents"]["rows_caught_up"], per["message_embeddings"]["rows_caught_up"]) == (2, 1)
    assert per["documents"]["rows_without_vector"] == 1  # the late row: NULL + pending

    from embed.embedders import get_embedder

    with get_embedder(cfg.space(LEGACY)) as emb:
        want = emb.embed([*texts, "A memory written during the rollback"], "passage").vectors
    with connect(url) as conn:
        again = [honcho_query(conn, s, q, exclude=post) for s in sc for q in queries]
        assert all(same_ranking(a, b) for a, b in zip(again, before, strict=True))
        assert conn.execute("SELECT md5(string_agg(id || embedding::text, ',' ORDER BY id)) FROM documents"
                            " WHERE embedding IS NOT NULL AND NOT id = ANY(%s)", (post,)).fetchone()[0] == legacy
        got = dict(conn.execute("SELECT id, embedding FROM documents WHERE id = ANY(%s)", (post,)).fetchall())
        for i, doc in enumerate(post):
            np.testing.assert_allclose(got[doc].to_numpy(), want[i], atol=1e-5)
        assert conn.execute("SELECT embedding IS NULL, sync_state FROM documents WHERE id = %s",
                            (late[0],)).fetchone() == (True, "pending")
        cols = {r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'documents'::regclass"
                                           " AND attname LIKE 'embedding%'")}
        assert cols == {"embedding", col(cfg, NEW)}  # the new space kept under its tagged name
    st = inplace.state(cfg, url)["sources"]["documents"]
    assert (st["live_space"], st["previous_space"]) == (LEGACY, NEW)
    assert st["columns"][0]["column"] == col(cfg, NEW) and st["columns"][0]["index_valid"]

    monkeypatch.undo()
    fill = [EMBED, "--db", url, "fill-column", "--space", LEGACY, "--json"]  # right after: the late row
    after = json.loads(subprocess.run(fill, cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                                      check=True).stdout)
    assert after["sources"]["documents"]["live"] and after["sources"]["documents"]["rows_filled"] == 1
    again = json.loads(subprocess.run(fill, cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                                      check=True).stdout)
    assert again["rows_filled"] == 0 and again["rows_without_vector"] == 0  # a retry is not a new action
    with connect(url) as conn:
        vec, state = conn.execute("SELECT embedding, sync_state FROM documents WHERE id = %s", (late[0],)).fetchone()
    np.testing.assert_allclose(vec.to_numpy(), want[2], atol=1e-5)
    assert state == "synced"


def test_a_row_edited_then_soft_deleted_keeps_no_vector_of_its_old_text(db_url: str, cfg: Config) -> None:
    """Found by the rehearsal: a document Honcho edited and then soft-deleted while the other
    space sat in its tagged column came back, after the swap, with a vector of its old text
    (no reader reads a deleted row, but a vector in a column is always its row's text's)."""
    url = honcho_db(db_url, cfg, documents=100, messages=20)
    fill_store(url, cfg)
    inplace.stage(cfg, url, NEW, progress=False)

    def edit_and_delete(conn: psycopg.Connection, offset: int) -> str:
        doc = conn.execute("SELECT id FROM documents WHERE deleted_at IS NULL AND btrim(content) <> '' ORDER BY id "
                           "OFFSET %s LIMIT 1", (offset,)).fetchone()[0]
        conn.execute("UPDATE documents SET content = content || ' (edited)', embedding = NULL, "
                     "sync_state = 'pending' WHERE id = %s", (doc,))
        conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (doc,))
        return doc

    with connect(url, autocommit=True) as conn:  # between staging and the swap: the new space's column
        before_swap = edit_and_delete(conn, 3)
    inplace.swap(cfg, url, NEW)
    with connect(url, autocommit=True) as conn:  # after the cutover: the old space's column
        after_swap = edit_and_delete(conn, 5)
    inplace.swap_back(cfg, url, cfg.space(LEGACY))
    with connect(url) as conn:
        held = dict(conn.execute(f"SELECT id, {col(cfg, NEW)} IS NOT NULL FROM documents WHERE id = %s",
                                 (before_swap,)).fetchall())
        held.update(conn.execute("SELECT id, embedding IS NOT NULL FROM documents WHERE id = %s",
                                 (after_swap,)).fetchall())
        records = conn.execute(  # the record of each cleared value went with it
            "SELECT count(*) FROM embed_store.inplace_staged WHERE (source_id, space_fp) IN ((%s, %s), (%s, %s))",
            (before_swap, cfg.space(NEW).fingerprint, after_swap, cfg.space(LEGACY).fingerprint)).fetchone()[0]
    assert held == {before_swap: False, after_swap: False} and records == 0


def test_the_swap_lock_checks_only_the_rows_changed_since_the_last_check(
        db_url: str, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The locked part of a swap (and of its rollback) examines exactly the rows written since
    the catch-up before the lock (its last round over every source), plus the live rows whose
    sync_state it must still set: what the change queue names, never a scan of the table (the
    lock's cost is what changed)."""
    url = honcho_db(db_url, cfg, documents=200, messages=60)
    fill_store(url, cfg)
    inplace.stage(cfg, url, NEW, progress=False)
    expected: dict[str, int] = {}
    real = inplace._settle

    def settle_then_write(conn: psycopg.Connection, plans, *args, **kw) -> None:
        real(conn, plans, *args, **kw)
        for p in plans:
            write(p)

    def write(p) -> None:
        src, col_ = cfg.source(p.source.name), tagged_column(p.source, p.new)
        with connect(url, autocommit=True) as c:  # Honcho writes between the catch-up and the lock
            edited = [] if src.name != "documents" else [r[0] for r in c.execute(
                f'SELECT id FROM documents WHERE ({src.live_filter}) AND "{col_}" IS NOT NULL ORDER BY id LIMIT 5')]
            c.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = ANY(%s)", (edited,))
            put_vectors(c, cfg, "documents", edited[:3], space=p.new.name)
            # Live rows whose column has no current record and that are not just waiting for a
            # vector (NULL with the sync_state the swap gives them): the lock must still act on them.
            todo = c.execute(
                f"SELECT count(*) FROM {src.table} AS x WHERE ({src.live_filter}) AND NOT EXISTS (SELECT 1 FROM"
                " embed_store.inplace_staged AS k WHERE k.source = %(s)s AND k.space_fp = %(fp)s"
                f" AND k.source_id = x.id::text) AND NOT (\"{col_}\" IS NULL AND sync_state = CASE WHEN EXISTS ("
                " SELECT 1 FROM embed_store.skipped AS k WHERE k.source = %(s)s AND k.space_fp = %(fp)s AND"
                " k.source_id = x.id::text AND k.content_sha256 = sha256(convert_to(x.content, 'UTF8')))"
                " THEN 'failed' ELSE 'pending' END) AND NOT x.id::text = ANY(%(edited)s)",
                {"s": src.name, "fp": p.new.fingerprint, "edited": edited}).fetchone()[0]
        expected[src.name] = todo + len(edited)

    monkeypatch.setattr(inplace, "_settle", settle_then_write)
    scanned: dict[str, tuple[int, int]] = {}
    real_locked = inplace._swap_locked

    def count_scans(conn: psycopg.Connection, p, *args):  # inside the locked transaction
        # pg_stat_xact_* also shows counts of this session's earlier transactions not flushed yet:
        # the difference across the source's locked work is that work alone.
        def now() -> tuple[int, int]:
            return conn.execute("SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables"
                                " WHERE relid = %s::regclass", (p.source.table,)).fetchone()
        s0 = now()
        out = real_locked(conn, p, *args)
        s1 = now()
        scanned[p.source.name] = (s1[0] - s0[0], s1[1] - s0[1])
        return out

    monkeypatch.setattr(inplace, "_swap_locked", count_scans)
    with connect(url) as conn:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    for swap in (lambda: inplace.swap(cfg, url, NEW),
                 lambda: inplace.swap_back(cfg, url, cfg.space(LEGACY), embed_missing=False)):
        out = swap()
        for name in TABLES:
            got = out["sources"][name]
            assert got["full_pass_before_lock"] == []  # the queue counted from stage on
            assert got["rows_checked_in_lock"] == expected[name], (name, got, expected)
            # No sequential scan of the table in the lock, and index reads bounded per checked row
            # (each is read by a fixed handful of statements: about 7 fetches a row; a scan reads all).
            seq, fetched = scanned[name]
            assert seq == 0 and fetched <= 10 * expected[name], (name, scanned)
        docs = out["sources"]["documents"]
        print(f"\n{out['space']}: lock {out['lock_ms']} ms, rows checked in it {expected} of {rows}, "
              f"(seq scans, index rows fetched) {scanned}")
        assert (docs["rows_caught_up_in_lock"], docs["rows_cleared_in_lock"]) == (3, 2)
        with connect(url) as conn:
            assert_only_current_vectors(conn, cfg, out["space"])


def staged_reads(conn: psycopg.Connection, stmt: sql.Composable, params: tuple | None = None) -> list[str]:
    """The plan's reads of embed_store.inplace_staged that are not by the listed rows' own keys
    (an index condition on source_id, or the row versions those found): empty when the statement
    costs its id list, not the records."""
    def nodes(n: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield n
        for child in n.get("Plans", []):
            yield from nodes(child)
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + stmt, params).fetchone()[0][0]["Plan"]
    return [f"{n['Node Type']} {n.get('Index Cond', n.get('Filter', ''))}" for n in nodes(plan)
            if n.get("Relation Name") == "inplace_staged" and n["Node Type"] not in ("ModifyTable", "Tid Scan")
            and "source_id" not in n.get("Index Cond", n.get("Recheck Cond", ""))]


def test_the_checks_of_an_id_list_look_up_only_its_records(db_url: str, cfg: Config) -> None:
    """Every statement that checks the rows of an id list (the swap's catch-up and its locked
    check: the change queue's batches) reads embed_store.inplace_staged by those rows' keys, with
    many records there: whether the statistics count them (ANALYZE after filling) or undercount
    them (records added since the last ANALYZE, the planner then reads all of a space's records
    through the primary key: 100-200 ms a batch of 500 at 200k records, seconds at Honcho's millions)."""
    url = honcho_db(db_url, cfg, documents=500, messages=20)
    fill_store(url, cfg)
    inplace.stage(cfg, url, NEW, progress=False)
    many = 100_000
    fake = ("INSERT INTO embed_store.inplace_staged (source, space_fp, source_id, content_sha256, row_xmin)"
            " SELECT s, %s, 'x' || g, sha256(g::text::bytea), '1'::xid FROM unnest(%s::text[]) AS s,"
            " generate_series(1, %s::bigint) AS g")
    with connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE embed_store.inplace_staged SET (autovacuum_enabled = false)")  # stats as set here
        conn.execute(fake, (cfg.space(LEGACY).fingerprint, list(TABLES), many))
        conn.execute("ANALYZE embed_store.inplace_staged")
        conn.execute(fake, (cfg.space(NEW).fingerprint, list(TABLES), many))  # not counted yet
        for stats in ("undercounted", "analyzed"):
            if stats == "analyzed":
                conn.execute("ANALYZE embed_store.inplace_staged")
            for name in TABLES:
                src = cfg.source(name)
                new, old = Target(src, cfg.space(NEW)), Target(src, cfg.space(LEGACY))
                ids = [r[0] for r in conn.execute(sql.SQL("SELECT {}::text FROM {} ORDER BY 1 LIMIT %s").format(
                    new.id, new.src), (inplace.BATCH_ROWS,))]
                staged = tagged_column(src, new.space)
                statements = {
                    "stale": inplace_sql.stale(new, staged, inplace_sql.among(new, ids), states=True),
                    "touch": inplace_sql.touch(new, staged, inplace_sql.among(new, ids)),
                    "clear_dead": inplace_sql.clear_dead(new, staged, inplace_sql.among(new, ids)),
                    "requeue": inplace_queue.requeue(new, staged, inplace_sql.among(new, ids), states=True),
                    "adopt": inplace_sql.adopt(old, "embedding", inplace_sql.trusted("embedding", True),
                                               inplace_sql.among(old, ids)),
                    "requeue live": inplace_queue.requeue(old, "embedding", inplace_sql.among(old, ids), states=True),
                }
                for what, stmt in statements.items():
                    assert staged_reads(conn, stmt) == [], (stats, name, len(ids), what)
                refresh = inplace_sql.refresh(new, staged), (ids, [bytes(32)] * len(ids))
                assert staged_reads(conn, *refresh) == [], (stats, name, "refresh")


def test_writes_to_a_source_caught_up_first_are_drained_before_the_lock(
        db_url: str, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """documents is caught up before message_embeddings; what Honcho writes to documents
    meanwhile is checked in a last round over every source before the lock, not inside it."""
    url = honcho_db(db_url, cfg, documents=200, messages=60)
    fill_store(url, cfg)
    inplace.stage(cfg, url, NEW, progress=False)
    edits = 3 * inplace.CATCH_UP_LEFT
    real = inplace._catch_up

    def write_documents_meanwhile(conn: psycopg.Connection, cfg_: Config, p, **kw):
        if p.source.name == "message_embeddings":
            with connect(url, autocommit=True) as c:
                ids = [r[0] for r in c.execute("UPDATE documents SET content = content || ' (edited)' WHERE id IN "
                                                "(SELECT id FROM documents ORDER BY id LIMIT %s) RETURNING id", (edits,))]
                put_vectors(c, cfg, "documents", ids, space=NEW)  # embedded meanwhile: nothing left for the lock
        return real(conn, cfg_, p, **kw)

    monkeypatch.setattr(inplace, "_catch_up", write_documents_meanwhile)
    docs = inplace.swap(cfg, url, NEW)["sources"]["documents"]
    assert docs["rows_checked_in_lock"] < edits <= docs["rows_checked_before_lock"], docs
    with connect(url) as conn:
        assert_only_current_vectors(conn, cfg, NEW)


# ---------------------------------------------------------------------------------- refusals
def test_refusals_change_nothing(honcho: str, cfg: Config) -> None:
    url = honcho
    with connect(url) as conn:
        first = schema_snapshot(conn)
    assert "stage space e5_small first" in refusal(inplace.swap, cfg, url, NEW)
    assert "already live" in refusal(inplace.swap_back, cfg, url, cfg.space(LEGACY))
    assert "already live" in refusal(inplace.stage, cfg, url, LEGACY)
    inplace.stage(cfg, url, NEW, progress=False)
    with connect(url) as conn:
        staged = schema_snapshot(conn)
        live = conn.execute("SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM documents").fetchone()[0]
    assert staged != first

    # Another session holds documents: an open write, a long read, an exclusive lock.
    for hold in ("INSERT INTO documents (id, content, observer, observed, workspace_name) SELECT "
                 "'zzzzzzzzzzzzzzzzzzzzz', 'x', observer, observed, workspace_name FROM documents LIMIT 1",
                 "LOCK TABLE documents IN ACCESS SHARE MODE", "LOCK TABLE documents IN ACCESS EXCLUSIVE MODE"):
        with psycopg.connect(url) as other:
            other.execute(hold)
            t0 = time.monotonic()
            msg = refusal(inplace.swap, cfg, url, NEW, lock_timeout_s=0.5)
            assert time.monotonic() - t0 < 10
            assert "writers still hold the table" in msg and "pause Honcho's writers" in msg
            other.rollback()
        with connect(url) as conn:
            assert schema_snapshot(conn) == staged
            assert conn.execute("SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM documents"
                                ).fetchone()[0] == live

    # An interrupted CONCURRENTLY build leaves an invalid index: refused, rebuilt by stage.
    name = index_name("documents", col(cfg, NEW))
    with connect(url, autocommit=True) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (f"public.{name}",))
    assert "invalid" in refusal(inplace.swap, cfg, url, NEW)
    again = inplace.stage(cfg, url, NEW, progress=False)
    assert again.sources["documents"].index.built and again.sources["documents"].rows_written == 0
    assert again.sources["message_embeddings"].index.built is False
    inplace.swap(cfg, url, NEW)
    assert "already live" in refusal(inplace.swap, cfg, url, NEW)
    assert "already live" in refusal(inplace.stage, cfg, url, NEW)


# ------------------------------------------------------------------------------------ kill -9
def parked(url: str, call: str, point: str) -> subprocess.Popen[str]:
    """A real process running `embed.cutover.inplace.<call>` that parks at `point` (embed/db/hooks.py)."""
    code = (
        "import json, sys; from pathlib import Path; from embed.config import Config; from embed.cutover import inplace; "
        "cfg = Config.load(Path(sys.argv[1]), 'local'); "
        f"print(json.dumps(inplace.{call}, default=str))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env.update(EMBED_TEST_PAUSE_AT=point, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", code, str(ROOT), url], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = threading.Event()

    def watch() -> None:
        for line in p.stderr:  # type: ignore[union-attr]
            if f"paused at {point.split(':')[0]}" in line:
                seen.set()

    threading.Thread(target=watch, daemon=True).start()
    if not seen.wait(120):
        p.kill()
        raise AssertionError(f"never reached {point}: rc {p.poll()}")
    return p


def test_kill9_mid_stage_and_inside_the_swap_then_rerun(honcho: str, cfg: Config) -> None:
    url = honcho
    p = parked(url, f"stage(cfg, sys.argv[2], {NEW!r}, batch_rows=50, progress=False)", "inplace_stage_batch:3")
    p.kill()
    p.wait(30)
    with connect(url) as conn:
        partial = conn.execute(f'SELECT count("{col(cfg, NEW)}") FROM documents').fetchone()[0]
        assert 0 < partial <= 150
        assert index_name("documents", col(cfg, NEW)) not in {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'documents'")}
    done = inplace.stage(cfg, url, NEW, progress=False)
    with connect(url) as conn:
        live_with_vector = conn.execute(
            "SELECT count(*) FROM documents AS d JOIN embed_store.documents__" + cfg.space(NEW).ident + " AS t"
            " ON t.source_id = d.id AND t.content_sha256 = sha256(convert_to(d.content, 'UTF8'))"
            " WHERE d.deleted_at IS NULL").fetchone()[0]
        before = schema_snapshot(conn)
    assert done.sources["documents"].rows_staged == live_with_vector
    assert done.sources["documents"].rows_written == live_with_vector - partial
    assert done.sources["documents"].index.valid

    p = parked(url, f"swap(cfg, sys.argv[2], {NEW!r})", "inplace_locked")  # holds the exclusive lock now
    p.kill()
    p.wait(30)
    with connect(url) as conn:
        assert schema_snapshot(conn) == before  # all or nothing
    swapped = inplace.swap(cfg, url, NEW)
    assert swapped["sources"]["documents"]["old_column"] == col(cfg, LEGACY)


# ------------------------------------------------------------------------------- honcho scale
@pytest.mark.slow
def test_swap_lock_is_short_at_honcho_scale(db_url: str, cfg: Config) -> None:
    """26,141 documents + 13,558 message chunks: the lock checks what changed, not 40k rows.

    Honcho's HNSW indexes on the legacy column are dropped before stage: with them every staged
    row's UPDATE also inserts into that index (~2 ms a row on 2 cores here, so stage takes ~110 s
    at this scale instead of ~40 s; bench/inplace.py measures it with the index in place). The
    lock does not depend on it: inside it only the rows changed since stage are written, and
    index renames are catalog updates (the small tests rename Honcho's index)."""
    from embed.honcho.synthetic.corpus import SCALES
    from embed.honcho.synthetic.schema import hnsw_index_name

    t0 = time.monotonic()
    n_docs, n_msgs = SCALES["honcho"]
    honcho_db(db_url, cfg, documents=n_docs, messages=n_msgs)
    fill_store(db_url, cfg)
    seeded = time.monotonic() - t0
    with connect(db_url, autocommit=True) as conn:
        for t in TABLES:
            conn.execute(f"DROP INDEX {hnsw_index_name(t)}")
    staged = inplace.stage(cfg, db_url, NEW, progress=False, batch_rows=5000)
    with connect(db_url, autocommit=True) as conn:  # a write since stage: cleared and marked pending
        conn.execute("UPDATE documents SET content = content || '.' WHERE id = (SELECT min(id) FROM documents)")
    t1 = time.monotonic()
    swapped = inplace.swap(cfg, db_url, NEW)
    print(f"\nhoncho scale: seed {seeded:.0f} s, stage {staged.sources['documents'].seconds:.0f} s + "
          f"{staged.sources['message_embeddings'].seconds:.0f} s, swap {time.monotonic() - t1:.1f} s; "
          f"LOCK HELD {swapped['lock_ms']} ms over {staged.rows_staged} staged rows")
    assert staged.rows_staged > 38_000
    # The lock checked the edited row and the rows still without a vector, never the 40k others.
    without = sum(s.rows_missing + s.rows_skipped for s in staged.sources.values())
    assert swapped["rows_checked_in_lock"] <= without + 1 and all(
        s["full_pass_before_lock"] == [] for s in swapped["sources"].values())
    assert swapped["rows_marked_pending"] == 1
    with connect(db_url) as conn:
        assert_only_current_vectors(conn, cfg)


# --------------------------------------------------------------------------------- settings
def test_honcho_settings_from_the_space_and_the_latest_shadow_run(db_url: str, cfg: Config) -> None:
    honcho_db(db_url, cfg, documents=30, messages=10)
    e5 = honcho_settings(cfg, db_url, cfg.space(NEW))
    assert e5.as_dict()["env"] == {
        "EMBEDDING_VECTOR_DIMENSIONS": "384", "EMBEDDING_MODEL_CONFIG__TRANSPORT": "openai",
        "EMBEDDING_MODEL_CONFIG__MODEL": "intfloat/multilingual-e5-small",
        "EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY": API_KEY_PLACEHOLDER,
        "EMBEDDING_MODEL_CONFIG__DIMENSIONS_MODE": "never",
    }
    assert e5.thresholds == ()
    assert any("OpenAI-compatible" in n for n in e5.notes) and any("prefixes" in n for n in e5.notes)
    ollama = honcho_settings(cfg, db_url, cfg.space("bge_m3_ollama"))
    block = ollama.env_block()
    lines = block.splitlines()
    # exactly what Honcho's .env takes: VAR=value lines, each after the comment that says why
    values = [ln for ln in lines if not ln.startswith("#")]
    assert values == ["EMBEDDING_VECTOR_DIMENSIONS=1024", "EMBEDDING_MODEL_CONFIG__TRANSPORT=openai",
                      "EMBEDDING_MODEL_CONFIG__MODEL=bge-m3",
                      "EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL=http://127.0.0.1:11434/v1",
                      f"EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY={API_KEY_PLACEHOLDER}",
                      "EMBEDDING_MODEL_CONFIG__DIMENSIONS_MODE=never"]
    assert all(lines[lines.index(v) - 1].startswith("# ") for v in values)
    assert "{" not in block and not any(ln.startswith(("set ", "  set ")) for ln in lines)  # no dict reprs
    # a limit only where both accept it: e5's 512-token window must not lower Honcho's 8192 (HTTP 422)
    assert "EMBEDDING_MAX_INPUT_TOKENS=" not in e5.env_block() and any("8192" in n for n in e5.notes)
    openai = honcho_settings(cfg, db_url, cfg.space("openai_3_small")).as_dict()["env"]
    assert openai["EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY"] == "<the value of $OPENAI_API_KEY>"
    assert openai["EMBEDDING_MODEL_CONFIG__DIMENSIONS_MODE"] == "auto"

    sp, base = cfg.space(NEW), cfg.space(LEGACY)
    with connect(db_url, autocommit=True) as conn:
        ids = []
        for minutes_ago, value in ((60, 0.11), (5, 0.123)):
            ids.append(conn.execute(
                "INSERT INTO embed_store.shadow_runs (started_at, at, actor, source, baseline_fp, candidate_fps, result)"
                " VALUES (now(), now() - make_interval(mins => %s), 't', 'documents', %s, %s, '{}') RETURNING id",
                (minutes_ago, base.fingerprint, [sp.fingerprint])).fetchone()[0])
            conn.execute(
                "INSERT INTO embed_store.shadow_metrics VALUES (%s, %s, 'all', 'all', 'threshold:semantic_dedup',"
                " 500, %s, %s, %s), (%s, %s, 'lang', 'pl', 'threshold:semantic_dedup', 100, 0.5, 0.4, 0.6)",
                (ids[-1], sp.fingerprint, value, value - 0.01, value + 0.01, ids[-1], sp.fingerprint))
    got = honcho_settings(cfg, db_url, cfg.space(NEW)).thresholds
    assert [r["run_id"] for r in got] == [ids[1]]
    dedup = got[0]["values"]["semantic_dedup"]
    assert (dedup["value"], dedup["n"], dedup["baseline"]) == (0.123, 500, 0.05)
    assert "src/crud/document.py" in dedup["where"]
    assert json.dumps(got)  # plain JSON for the CLI


def test_names_are_deterministic_and_fit_postgres() -> None:
    assert index_name("documents", "embedding") == "ix_documents_embedding_hnsw"  # Honcho's own name
    long = index_name("message_embeddings", "embedding__qwen3_emb_06b_with_a_long_suffix_x_12345678")
    assert len(long) <= 63 and long.endswith("_hnsw")
    assert long == index_name("message_embeddings", "embedding__qwen3_emb_06b_with_a_long_suffix_x_12345678")
    assert long != index_name("message_embeddings", "embedding__qwen3_emb_06b_with_a_long_suffix_y_12345678")
