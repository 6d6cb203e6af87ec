"""`embed sync` against a real server and model: edits, inserts and deletes made while a
backfill runs are all reflected after one sync; `--watch` ends cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.fill.backfill import PassResult, backfill
from embed.fill.status import status
from embed.fill.sync import sync, sync_once
from tests.support.backfill import SPACE, Proc, assert_exact, count, insert_doc, make_db, seeded, store_table


def test_one_sync_after_a_backfill_disturbed_by_writers_matches_the_source(
    pg_server: LocalServer, cfg: Config
) -> None:
    url = seeded(make_db(pg_server), cfg, documents=60)
    with connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM documents WHERE deleted_at IS NULL ORDER BY id")]
    result: dict = {}

    def run() -> None:
        result["out"] = backfill(cfg, url, SPACE, sources=["documents"], chunk_rows=4, progress=False)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 120
    while count(url, store_table(cfg)) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Honcho writing while the backfill runs: early rows are already embedded, late ones not yet.
    with connect(url) as conn:
        for i in (ids[0], ids[-1], ids[30]):
            conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = %s", (i,))
        for i in (ids[1], ids[-2], ids[31]):
            conn.execute("UPDATE documents SET deleted_at = now() WHERE id = %s", (i,))
        conn.execute("DELETE FROM documents WHERE id = %s", (ids[2],))
        conn.execute("UPDATE documents SET content = '   ' WHERE id = %s", (ids[3],))
        new = [insert_doc(conn, f"Nowa notatka numer {k}: lubi herbatę z cytryną.") for k in range(3)]
        conn.commit()
    th.join(180)
    assert result["out"].sources["documents"]["rows_written"] > 0

    out = sync_once(cfg, url, SPACE, sources=["documents"])
    s = out.sources["documents"]
    assert s["store_rows_deleted"] >= 2  # the early soft-deleted and hard-deleted rows
    assert s["lag"]["rows_pending"] == 0 and out.rows_pending == 0
    got = assert_exact(url, cfg)
    assert set(new) <= set(got) and ids[1] not in got and ids[2] not in got
    p = status(cfg, url, spaces=[SPACE], sources=["documents"]).pairs[0].as_dict()
    assert (p["coverage_pct"], p["stale"], p["orphans"], p["pending"]) == (100.0, 0, 0, 0)

    again = sync_once(cfg, url, SPACE, sources=["documents"])  # in step: nothing to do
    assert (again.rows_written, again.texts_embedded, again.store_rows_deleted) == (0, 0, 0)


def test_sync_reuses_stored_vectors_for_known_content(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=16, messages=1)
    backfill(cfg, db_url, SPACE, sources=["documents"], progress=False)
    with connect(db_url) as conn:
        a, b = [r[0] for r in conn.execute(
            "SELECT id FROM documents WHERE deleted_at IS NULL ORDER BY id LIMIT 2")]
        text = conn.execute("SELECT content FROM documents WHERE id = %s", (b,)).fetchone()[0]
        conn.execute("UPDATE documents SET content = %s WHERE id = %s", (text, a))
        insert_doc(conn, text)
        conn.commit()
    out = sync_once(cfg, db_url, SPACE, sources=["documents"])
    assert (out.rows_written, out.texts_embedded, out.rows_reused) == (2, 0, 2)
    assert_exact(db_url, cfg)


def test_watch_runs_passes_until_sigterm_and_exits_cleanly(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=12, messages=1)
    proc = Proc(db_url, "sync", "--space", SPACE, "--source", "documents", "--watch", "0.3", "--json", "--no-progress")
    proc.wait_for('"passes": 1', where="out", timeout=120)
    with connect(db_url) as conn:
        new = insert_doc(conn, "Ma psa o imieniu Burek.")
        conn.commit()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        passes = [json.loads(ln) for ln in proc.out if ln.startswith("{")]
        if any(p["rows_written"] == 1 for p in passes[1:]):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the new row was never synced")
    proc.p.send_signal(signal.SIGTERM)
    proc.p.wait(30)
    assert proc.p.returncode == 0, proc.err[-5:]
    assert any("SIGTERM received" in ln for ln in proc.err)
    assert new in assert_exact(db_url, cfg)
    with connect(db_url) as conn:
        kinds = conn.execute("SELECT DISTINCT kind FROM embed_store.runs").fetchall()
    assert kinds == [("sync",)]


def test_sync_api_watch_stops_on_event(db_url: str, cfg: Config) -> None:
    seeded(db_url, cfg, documents=6, messages=1)
    stop = threading.Event()
    seen: list[PassResult] = []

    def on_pass(out: PassResult, passes: int) -> None:
        seen.append(out)
        if passes == 2:
            stop.set()

    out, passes = sync(cfg, db_url, SPACE, sources=["documents"], watch=0.1, stop=stop, on_pass=on_pass,
                       progress=False)
    assert passes == 2 and seen[1].rows_written == 0 and out is seen[1]
    assert_exact(db_url, cfg)
