"""`embed cutover --mode honcho-inplace` and its rollback end to end: gates, the column swap,
the views following it (embed_active and the legacy view's renamed column), events, and the
CLI printing the Honcho settings. The swap engine itself is tested in tests/test_inplace.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from embed import mesh
from embed.cli import cli
from embed.config import Config
from embed.cutover.preview import switch_preview
from embed.cutover.switch import cutover, rollback
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.safety.retire import retire_plan
from embed.store import migrations, serving
from tests.support.gate import plant_gates
from tests.support.inplace import LEGACY, NEW, Writer, fill_store, honcho_db, put_vectors, schema_snapshot

pytestmark = pytest.mark.timeout(600)


def vectors(url: str, view: str) -> dict[str, str]:
    """id -> text form of the vector served by a view (or a table column)."""
    with connect(url) as conn:
        return {str(i): str(v) for i, v in conn.execute(f"SELECT source_id, embedding FROM {view}")}


def live_column(url: str) -> dict[str, str]:
    with connect(url) as conn:
        return {str(i): str(v) for i, v in conn.execute(
            "SELECT id, embedding FROM documents WHERE deleted_at IS NULL AND embedding IS NOT NULL")}


def test_inplace_cutover_moves_honcho_and_the_views_together_and_rolls_back(db_url: str, project: Path) -> None:
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=160, messages=60)
    fill_store(db_url, cfg, NEW)
    mesh.plan(cfg, db_url)
    legacy_before = vectors(db_url, f"embed.documents__{LEGACY}")
    new_store = vectors(db_url, f"embed.documents__{NEW}")
    assert legacy_before == live_column(db_url)

    with pytest.raises(EmbedError, match="cutover blocked, nothing changed"):
        cutover(cfg, db_url, NEW, mode="honcho-inplace")  # no gate inputs yet
    with connect(db_url) as conn:
        before_refusals = schema_snapshot(conn)
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'documents' "
                            "AND column_name LIKE 'embedding\\_\\_%'").fetchone()[0] == 0

    plant_gates(db_url, cfg, cfg.space(NEW))
    runner = CliRunner()
    for extra in ([], ["--stage-only"]):  # Honcho needs both tables at the same dims: one source alone is refused
        r = runner.invoke(cli, ["--project", str(project), "--db", db_url, "cutover", "--space", NEW,
                                "--mode", "honcho-inplace", "--source", "documents", *extra])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
        assert "both tables at the same dims): drop --source" in r.output and "nothing changed" in r.output
    with connect(db_url) as conn:
        assert schema_snapshot(conn) == before_refusals
    settings = project / "honcho.env"
    r = runner.invoke(cli, ["--project", str(project), "--db", db_url, "cutover", "--space", NEW,
                            "--mode", "honcho-inplace", "--writers-stopped", "--settings-out", str(settings), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["outcome"] == "switched"
    # Nothing was written since staging, and the rows without a vector already had the sync_state
    # the swap gives them: the lock checked no row at all (it never scans the tables).
    assert sum(s["rows_without_vector"] + s["rows_skipped"] for s in out["swap"]["sources"].values()) > 0
    assert out["swap"]["rows_checked_in_lock"] == 0
    assert out["honcho_settings"]["env"]["EMBEDDING_VECTOR_DIMENSIONS"] == "384"
    assert out["switched"]["documents"] == {"from": LEGACY, "to": NEW}
    assert "EMBEDDING_VECTOR_DIMENSIONS=384\n" in settings.read_text() and settings.stat().st_mode & 0o777 == 0o600

    with connect(db_url) as conn:
        st = serving.read(conn, cfg)["documents"]
    tagged = st.legacy_column
    assert (cfg.label(st.space_fp), st.mode, st.views_behind, st.untold) == (NEW, "honcho-inplace", False, False)
    assert tagged.startswith(f"embedding__{LEGACY}_")
    # Honcho's column now holds the new space; the legacy view still serves exactly the old vectors
    # (from the renamed column), and the active view the new ones.
    assert live_column(db_url) == new_store
    assert vectors(db_url, f"embed.documents__{LEGACY}") == legacy_before
    assert vectors(db_url, "embed.documents_active") == new_store
    with connect(db_url) as conn:
        kinds = conn.execute("SELECT details ->> 'mode', details ->> 'to_fp' FROM embed_store.events "
                             "WHERE kind = 'cutover' AND outcome = 'ok'").fetchall()
    assert kinds and {k for k in kinds} == {("honcho-inplace", cfg.space(NEW).fingerprint)}
    assert any("not allowed" in b or "retention" in b for b in retire_plan(cfg, db_url, LEGACY).blockers)
    assert not any("legacy space" in b for b in retire_plan(cfg, db_url, LEGACY).blockers)
    assert cutover(cfg, db_url, NEW, mode="honcho-inplace").outcome == "already"

    with pytest.raises(EmbedError, match=r"both tables at the same dims\): drop --source"):
        rollback(cfg, db_url, sources=["documents"], writers_policy="writers-stopped")
    with connect(db_url) as conn:
        before_preview = schema_snapshot(conn)
    shown = [s.sql for s in switch_preview(cfg, db_url, "rollback").statements]  # the swap back, changing nothing
    assert 'LOCK TABLE "public"."documents", "public"."message_embeddings" IN ACCESS EXCLUSIVE MODE' in shown
    assert f'ALTER TABLE "public"."documents" RENAME COLUMN "{tagged}" TO "embedding"' in shown
    assert not any(x.startswith(("VACUUM", "CREATE INDEX")) for x in shown)  # the parked column is ready
    with connect(db_url) as conn:
        assert schema_snapshot(conn) == before_preview
    back = rollback(cfg, db_url, writers_policy="writers-stopped")
    assert back.mode == "honcho-inplace" and back.switched["documents"] == (NEW, LEGACY)
    with connect(db_url) as conn:
        st = serving.read(conn, cfg)["documents"]
    assert (cfg.label(st.space_fp), st.legacy_column, st.views_behind) == (LEGACY, "embedding", False)
    assert live_column(db_url) == legacy_before
    assert vectors(db_url, "embed.documents_active") == legacy_before
    assert vectors(db_url, f"embed.documents__{LEGACY}") == legacy_before
    assert back.honcho and "EMBEDDING_VECTOR_DIMENSIONS=384" in back.honcho.env_block()
    assert rollback(cfg, db_url).outcome == "already"  # not a toggle
    assert live_column(db_url) == legacy_before


def _ready_to_swap(db_url: str, project: Path) -> Config:
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=80, messages=30)
    fill_store(db_url, cfg, NEW)
    mesh.plan(cfg, db_url)
    plant_gates(db_url, cfg, cfg.space(NEW))
    return cfg


def test_a_cutover_staged_ahead_catches_up_only_what_changed(db_url: str, project: Path) -> None:
    """Staged ahead (`--stage-only`), the cutover goes straight to the swap: no second pass over
    every row and no second VACUUM; the rows written since staging come from the change queue."""
    cfg = _ready_to_swap(db_url, project)
    ahead = cutover(cfg, db_url, NEW, mode="honcho-inplace", stage_only=True)
    assert ahead.rows_staged > 0
    with connect(db_url) as conn:
        edited = conn.execute("SELECT min(id) FROM documents WHERE deleted_at IS NULL AND embedding IS NOT NULL"
                              ).fetchone()[0]
        conn.execute("UPDATE documents SET content = content || ' (edited)' WHERE id = %s", (edited,))
        conn.commit()
        put_vectors(conn, cfg, "documents", [edited])  # the sync pass: its vector for the new content
        conn.commit()
        vacuums = conn.execute("SELECT sum(vacuum_count) FROM pg_stat_user_tables"
                               " WHERE relname IN ('documents', 'message_embeddings')").fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM embed_store.inplace_changed WHERE source = 'documents'"
                              " AND space_fp = %s", (cfg.space(NEW).fingerprint,)).fetchone()[0]
    assert queued < 10  # the edited row and the rows still waiting for a vector (blank texts)
    shown = switch_preview(cfg, db_url, "cutover", NEW, mode="honcho-inplace")  # what the cutover does now
    sqls = [st.sql for st in shown.statements]
    assert not any(x.startswith(("VACUUM", "CREATE INDEX", "ALTER TABLE \"public\".\"documents\" ADD"))
                   for x in sqls)
    assert shown.rows["documents"] == queued
    assert any(f"the {queued} row(s) the change queue names" in st.repeats for st in shown.statements)
    out = cutover(cfg, db_url, NEW, mode="honcho-inplace", writers_policy="writers-stopped")
    assert out.outcome == "switched" and out.staged is None
    docs = out.swap["sources"]["documents"]
    assert docs["full_pass_before_lock"] == [] and docs["rows_checked_before_lock"] == queued
    with connect(db_url) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        assert conn.execute("SELECT sum(vacuum_count) FROM pg_stat_user_tables"
                            " WHERE relname IN ('documents', 'message_embeddings')").fetchone()[0] == vacuums
    # the edited row holds the store's vector for its new content, caught up from the queue
    assert live_column(db_url) == vectors(db_url, f"embed.documents__{NEW}")
    assert docs["rows_caught_up"] == 1


def _views_fail_after_the_swap(project: Path, db_url: str, tmp_path: Path, *args: str) -> tuple[str, str]:
    """Run `embed ARGS` until its swap has committed, rename SQLMesh's state schema away (the
    views' plan, built before the swap, now fails to apply), let it go on, then put it back."""
    resume = tmp_path / "resume"
    resume.unlink(missing_ok=True)
    env = {**os.environ, "EMBED_TEST_PAUSE_AT": "switch_committed", "EMBED_TEST_RESUME_FILE": str(resume)}
    p = subprocess.Popen([sys.executable, "-m", "embed", "--project", str(project), "--db", db_url, *args],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    for line in p.stderr:
        if "paused at switch_committed" in line:
            break
    with connect(db_url) as conn:
        conn.execute("ALTER SCHEMA sqlmesh RENAME TO sqlmesh_away")
        conn.commit()
    resume.touch()
    out, err = p.communicate(timeout=300)
    with connect(db_url) as conn:
        conn.execute("ALTER SCHEMA sqlmesh_away RENAME TO sqlmesh")
        conn.commit()
    assert p.returncode == 1 and "Traceback" not in err, (out, err)
    return out, err


def test_a_views_plan_failing_after_the_swap_commits_is_finished_or_undone(
        db_url: str, project: Path, tmp_path: Path) -> None:
    """A real fault between the committed swap and the views' plan. The command says what
    production reads and prints the settings Honcho needs now, `embed status` repeats them, the
    same cutover finishes it, and (after the same fault again) `embed rollback` undoes it."""
    cfg = _ready_to_swap(db_url, project)
    settings = tmp_path / "honcho.env"
    cut = ["cutover", "--space", NEW, "--mode", "honcho-inplace", "--writers-stopped", "--settings-out", str(settings)]
    out, err = _views_fail_after_the_swap(project, db_url, tmp_path, *cut)
    assert f"Honcho's columns now hold {NEW} (committed, recorded)" in err and "`embed rollback` undoes it" in err
    assert "EMBEDDING_VECTOR_DIMENSIONS=384" in out and settings.read_text().count("\nEMBEDDING_") >= 5

    with connect(db_url) as conn:
        st = serving.read(conn, cfg)["documents"]
    assert (cfg.label(st.space_fp), cfg.label(st.views_fp), st.views_behind) == (NEW, LEGACY, True)
    r = CliRunner().invoke(cli, ["--project", str(project), "--db", db_url, "status", "--json"])
    shown = json.loads(r.output)
    assert shown["serving"]["documents"]["reads"] == NEW and "embed plan" in shown["serving"]["documents"]["next"]
    assert shown["honcho_settings"] and "EMBEDDING_VECTOR_DIMENSIONS=384" in shown["honcho_settings"][0]
    done = cutover(cfg, db_url, NEW, mode="honcho-inplace", writers_policy="writers-stopped")
    assert done.outcome == "finished" and done.honcho is not None
    assert vectors(db_url, "embed.documents_active") == live_column(db_url)

    legacy = vectors(db_url, f"embed.documents__{LEGACY}")
    _, err = _views_fail_after_the_swap(project, db_url, tmp_path, "rollback", "--writers-stopped")
    assert f"Honcho's columns now hold {LEGACY} (committed, recorded)" in err
    assert cutover(cfg, db_url, NEW, mode="honcho-inplace").outcome != "already"  # a gated cutover undoes it...
    assert rollback(cfg, db_url, writers_policy="writers-stopped").outcome == "switched"  # ...or back again
    assert live_column(db_url) == legacy == vectors(db_url, "embed.documents_active")
    assert rollback(cfg, db_url).outcome == "already"


def test_the_swap_names_who_is_connected_and_refuses_writers(db_url: str, project: Path) -> None:
    cfg = _ready_to_swap(db_url, project)
    with connect(db_url) as conn:
        before = schema_snapshot(conn)
    with psycopg.connect(db_url, application_name="honcho-api") as idle:
        idle.execute("SELECT 1")
        idle.commit()
        with pytest.raises(EmbedError, match=r"other sessions are connected .*honcho-api.*--writers-stopped"):
            cutover(cfg, db_url, NEW, mode="honcho-inplace")
        writer = Writer(db_url)
        writer.start()
        try:
            with pytest.raises(EmbedError, match="written to although --writers-stopped was given"):
                cutover(cfg, db_url, NEW, mode="honcho-inplace", writers_policy="writers-stopped")
        finally:
            writer.stop.set()
            writer.join(10)
        with connect(db_url) as conn:
            assert schema_snapshot(conn) == before
        with connect(db_url) as conn, conn.transaction():  # the writer's rows, as `embed sync` would
            put_vectors(conn, cfg, "documents", writer.docs)
            put_vectors(conn, cfg, "message_embeddings", writer.msgs)
        r = cutover(cfg, db_url, NEW, mode="honcho-inplace", writers_policy="allow-live-writers")
    assert r.outcome == "switched" and any(s.application == "honcho-api" for s in r.writers.sessions)


def test_a_store_switched_by_an_older_embed_is_adopted_whoever_migrates_first(db_url: str, project: Path) -> None:
    """A store an older embed switched in place has no embed_store.serving; its records (the
    in-place column records, the events) say what production reads. A command that creates the
    table first (here the migrations alone, as `embed backfill` or `embed backup` would) must not
    make every reader take production for the legacy space."""
    cfg = _ready_to_swap(db_url, project)
    cutover(cfg, db_url, NEW, mode="honcho-inplace", writers_policy="writers-stopped")
    with connect(db_url) as conn:  # what a store made before embed_store.serving looks like
        conn.execute("DROP TABLE embed_store.serving")
        conn.execute("DELETE FROM embed_store.migrations WHERE name IN ('005_serving', %s)", (serving.ADOPTED,))
        conn.commit()
        migrations.migrate(conn)  # another command got there first: the table exists, empty
        st = serving.read(conn, cfg)["documents"]
    assert (cfg.label(st.space_fp), st.mode, cfg.label(st.from_fp)) == (NEW, "honcho-inplace", LEGACY)
    back = rollback(cfg, db_url, writers_policy="writers-stopped")
    assert back.outcome == "switched" and back.switched["documents"] == (NEW, LEGACY)
