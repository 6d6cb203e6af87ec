"""`embed retire` / pin / unpin / history against a real database: each refusal, then a retire
that drops the store tables and a Honcho in-place cutover's old column, one event per object."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from embed import store
from embed.config import Config
from embed.cutover import inplace_queue
from embed.db.connection import connect, ensure_pgvector
from embed.errors import EmbedError
from embed.honcho.synthetic.schema import create_schema
from embed.safety.backup import take_backup
from embed.safety.retire import pin, retire, retire_plan, unpin
from embed.store import migrations, serving
from embed.store.events import history
from tests.test_backup import cli_run

SPACE = "qwen3_emb_06b"


@pytest.fixture
def store_db(db_url: str, cfg: Config) -> str:
    """Empty Honcho tables, embed_store for every declared space, one vector in the retiree's table."""
    ensure_pgvector(db_url)
    with connect(db_url) as conn:
        create_schema(conn, dims=cfg.legacy_space.dims)
        store.init(conn, cfg)
        sp = cfg.space(SPACE)
        conn.execute(
            sql.SQL("INSERT INTO {} (source_id, content_sha256, space_fp, embedding) VALUES "
                    "('x', %s, %s, array_fill(0.1, ARRAY[%s])::vector)").format(
                store.table_ident(cfg.source("documents"), sp)),
            (b"\x00" * 32, sp.fingerprint, sp.dims),
        )
    return db_url


def moved_away(url: str, cfg: Config, name: str, days_ago: float, to: str = "e5_small") -> None:
    """What cutover/rollback record: an ok event with details.from_fp (and to_fp), backdated."""
    with connect(url, autocommit=True) as conn:
        eid = store.record_event(conn, "cutover", "ok", space=cfg.space(to), source="documents",
                                 details={"from_fp": cfg.space(name).fingerprint, "to_fp": cfg.space(to).fingerprint})
        conn.execute("UPDATE embed_store.events SET at = now() - make_interval(secs => %s) WHERE id = %s",
                     (days_ago * 86400, eid))


def declared_ago(url: str, cfg: Config, name: str, days: float) -> None:
    with connect(url, autocommit=True) as conn:
        conn.execute("UPDATE embed_store.spaces SET declared_at = now() - make_interval(secs => %s) "
                     "WHERE fingerprint = %s", (days * 86400, cfg.space(name).fingerprint))


def refusal(cfg: Config, url: str, name: str = SPACE) -> str:
    with pytest.raises(EmbedError) as e:
        retire(cfg, url, name, confirm=lambda _p: True)
    assert "\n" not in str(e.value)
    return str(e.value)


def store_tables(url: str, ident: str) -> list[str]:
    with connect(url, vector=False) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'embed_store' "
                                           "AND right(tablename, %s) = %s ORDER BY 1",
                                           (len(ident) + 2, f"__{ident}")).fetchall()]


def test_active_space_is_refused(store_db: str, cfg: Config) -> None:
    declared_ago(store_db, cfg, "minilm_l6", 30)
    msg = refusal(cfg, store_db, "minilm_l6")
    assert "is what production reads for source(s) documents, message_embeddings" in msg
    with connect(store_db, vector=False) as conn:  # a refused retire is on the record, and nothing moved
        assert conn.execute("SELECT outcome FROM embed_store.events WHERE kind = 'retire'").fetchall() == [("blocked",)]
    assert len(store_tables(store_db, cfg.space("minilm_l6").ident)) == 2
    r = cli_run(store_db, "retire", "--space", "minilm_l6", "--dry-run")
    assert r.exit_code == 1 and "DROP TABLE" in r.output and "  blocked: space minilm_l6 is what production reads" in r.output
    assert r.output.splitlines()[-1].startswith("embed: error: cannot retire minilm_l6: space minilm_l6 is what production reads")


def test_legacy_space_still_in_the_source_columns_is_refused(store_db: str, cfg: Config) -> None:
    with connect(store_db) as conn, conn.transaction():  # production reads e5_small through the views
        serving.ensure(conn, cfg)
        for s in cfg.sources:
            serving.switched(conn, cfg, s, to_fp=cfg.space("e5_small").fingerprint, mode="view", kind="cutover",
                             legacy_column="embedding", event_id=None, views_done=True)
    moved_away(store_db, cfg, "minilm_l6", 30)
    msg = refusal(cfg, store_db, "minilm_l6")
    assert "is the legacy space of gateway local" in msg and "documents, message_embeddings" in msg


def test_retention_counts_from_the_last_move_away(store_db: str, cfg: Config) -> None:
    msg = refusal(cfg, store_db)  # declared a moment ago, never active
    assert "retention window of 14 day(s)" in msg and "declared (never active)" in msg
    declared_ago(store_db, cfg, SPACE, 40)
    moved_away(store_db, cfg, SPACE, 20)
    moved_away(store_db, cfg, SPACE, 3)  # rolled back to it and away again: the clock restarts
    msg = refusal(cfg, store_db)
    assert "retention window" in msg and "last cutover/rollback away from it" in msg


def test_retention_days_come_from_config(store_db: str, project: Path) -> None:
    raw = yaml.safe_load((project / "config.yaml").read_text())
    raw["variables"]["embed_retention"] = {"days": 2}
    (project / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = Config.load(project, "local")
    moved_away(store_db, cfg, SPACE, 3)
    plan = retire_plan(cfg, store_db, SPACE)
    assert plan.retention_days == 2 and not any("retention" in b for b in plan.blockers)
    raw["variables"]["embed_retention"] = {"days": "two"}
    (project / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(EmbedError, match=r"embed_retention\.days must be"):
        retire_plan(Config.load(project, "local"), store_db, SPACE)


def test_pin_blocks_until_unpinned(store_db: str, cfg: Config, tmp_path: Path) -> None:
    moved_away(store_db, cfg, SPACE, 15)
    take_backup(cfg, store_db, tmp_path / "bk", scope="honcho")
    r = cli_run(store_db, "pin", "--space", SPACE, "--reason", "legal hold until the audit closes")
    assert r.exit_code == 0 and "pinned qwen3_emb_06b" in r.output
    msg = refusal(cfg, store_db)
    assert "is pinned by" in msg and "legal hold until the audit closes" in msg
    with pytest.raises(EmbedError, match="--reason must say why"):
        pin(cfg, store_db, SPACE, "   ")
    unpin(cfg, store_db, SPACE)
    with pytest.raises(EmbedError, match="is not pinned"):
        unpin(cfg, store_db, SPACE)
    assert retire_plan(cfg, store_db, SPACE).allowed


def test_backup_must_be_verified_newer_and_complete(store_db: str, cfg: Config, tmp_path: Path) -> None:
    moved_away(store_db, cfg, SPACE, 15)
    assert "no verified backup newer than" in refusal(cfg, store_db)
    m = take_backup(cfg, store_db, tmp_path / "bk", scope="honcho")
    with connect(store_db, autocommit=True) as conn:  # a backup from before the cutover does not count
        conn.execute("UPDATE embed_store.backups SET at = now() - interval '16 days' WHERE id = %s", (m.registered,))
    assert "no verified backup newer than" in refusal(cfg, store_db)
    with connect(store_db, autocommit=True) as conn:  # a newer but unverified one does not either
        conn.execute("UPDATE embed_store.backups SET at = now(), verified = false")
    assert "no verified backup" in refusal(cfg, store_db)
    with connect(store_db, autocommit=True) as conn:  # nor one that lacks a table we would drop
        conn.execute("UPDATE embed_store.backups SET verified = true, manifest = jsonb_set(manifest, "
                     "'{database,tables}', '{\"public.documents\": 0}')")
    assert "does not hold embed_store." in refusal(cfg, store_db)


def test_a_view_over_the_table_blocks_the_drop(store_db: str, cfg: Config, tmp_path: Path) -> None:
    moved_away(store_db, cfg, SPACE, 15)
    tbl = store.table_name(cfg.source("documents"), cfg.space(SPACE))
    with connect(store_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE VIEW public.reader AS SELECT source_id FROM {}").format(
            sql.Identifier("embed_store", tbl)))
    take_backup(cfg, store_db, tmp_path / "bk", scope="honcho")
    msg = refusal(cfg, store_db)
    assert "is still read by view(s) reader" in msg and "sqlmesh janitor" in msg


def test_retire_drops_tables_and_the_old_column(store_db: str, cfg: Config, tmp_path: Path) -> None:
    sp = cfg.space(SPACE)
    old_col = f"embedding__{sp.ident}"
    with connect(store_db, autocommit=True) as conn:  # what a Honcho in-place cutover leaves behind
        conn.execute(sql.SQL("ALTER TABLE public.documents ADD COLUMN {} vector(4)").format(sql.Identifier(old_col)))
        conn.execute(sql.SQL("CREATE INDEX ON public.documents USING hnsw ({} vector_cosine_ops)").format(
            sql.Identifier(old_col)))
        conn.execute(sql.SQL("ALTER TABLE public.documents ADD COLUMN {} vector(4)").format(
            sql.Identifier(f"embedding__{sp.ident}_x")))  # named like the space, but nobody recorded it for it
        migrations.migrate(conn)
        conn.execute("INSERT INTO embed_store.inplace_columns (source, column_name, space_fp) VALUES "
                     "('documents', %s, %s)", (old_col, sp.fingerprint))
        inplace_queue.ensure(conn, cfg.source("documents"), cfg.legacy_space.fingerprint)  # stage's change trigger
    moved_away(store_db, cfg, SPACE, 15)
    take_backup(cfg, store_db, tmp_path / "bk")

    r = cli_run(store_db, "retire", "--space", SPACE, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    names = {t["name"]: t for t in plan["targets"]}
    assert set(names) == {
        f"embed_store.documents__{sp.ident}", f"embed_store.message_embeddings__{sp.ident}",
        f"public.documents.{old_col}",
    }
    assert names[f"embed_store.documents__{sp.ident}"]["bytes"] > 0 and plan["bytes"] > 0 and plan["allowed"]
    assert names[f"public.documents.{old_col}"]["kind"] == "column"
    assert len(store_tables(store_db, cfg.space(SPACE).ident)) == 2  # a dry run changes nothing

    r = cli_run(store_db, "retire", "--space", SPACE, input="n\n")
    assert r.exit_code == 1 and "DROP TABLE" in r.output and "nothing dropped" in r.output
    assert len(store_tables(store_db, cfg.space(SPACE).ident)) == 2

    r = cli_run(store_db, "retire", "--space", SPACE, input="y\n")
    assert r.exit_code == 0, r.output
    assert "retired qwen3_emb_06b" in r.output and "dropped 3 object(s)" in r.output
    assert store_tables(store_db, cfg.space(SPACE).ident) == []
    with connect(store_db, vector=False) as conn:
        assert conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.documents'::regclass "
                            "AND attname = %s AND NOT attisdropped", (old_col,)).fetchone()[0] == 0
        events = conn.execute("SELECT outcome, details ->> 'object', source FROM embed_store.events "
                              "WHERE kind = 'retire' ORDER BY id").fetchall()
        assert sorted(e[1] for e in events) == sorted(names) and {e[0] for e in events} == {"ok"}
        assert conn.execute("SELECT count(*) FROM embed_store.inplace_columns WHERE column_name <> 'embedding'"
                            ).fetchone()[0] == 0
        # the change trigger went with the last tagged column, and its bookkeeping with it
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (inplace_queue.TRIGGER,)
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM embed_store.inplace_triggers").fetchone()[0] == 0
        assert store.space_states(conn)[sp.fingerprint] == "retired"
        assert len(store_tables(store_db, cfg.space("bge_m3").ident)) == 2  # other spaces untouched
    assert "already retired" in refusal(cfg, store_db)
    with pytest.raises(EmbedError, match="already retired"):
        pin(cfg, store_db, SPACE, "too late")
    with connect(store_db) as conn:  # a later `embed init` does not bring the dropped tables back
        assert table_name_for_retired_not_recreated(conn, cfg)


def table_name_for_retired_not_recreated(conn: psycopg.Connection, cfg: Config) -> bool:
    out = store.init(conn, cfg)
    conn.commit()
    return not [t for t in out[0] if cfg.space(SPACE).ident in t]


def test_history_lists_events_with_space_and_fingerprint(store_db: str, cfg: Config) -> None:
    moved_away(store_db, cfg, SPACE, 0)
    pin(cfg, store_db, SPACE, "keep for the quarterly review")
    r = cli_run(store_db, "history", "--space", SPACE)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    fp12 = cfg.space(SPACE).fingerprint[:12]
    assert [ln.split()[3] for ln in lines] == ["declared", "cutover", "pin"]
    assert f"{SPACE} {fp12}" in lines[0] and "e5_small" in lines[1] and "keep for the quarterly review" in lines[2]
    rows = history(cfg, store_db, limit=2)
    assert [x.kind for x in rows] == ["cutover", "pin"]
    r = cli_run(store_db, "history", "--json")
    data = json.loads(r.output)
    assert len(data) == len(cfg.spaces) + 2 and {"id", "at", "actor", "space_fp", "details"} <= set(data[0])
    r = cli_run(store_db, "history", "--space", "nope")
    assert r.exit_code == 1 and "unknown space 'nope'" in r.output


def test_a_space_removed_from_config_is_found_by_name_and_fingerprint(store_db: str, project: Path) -> None:
    old = Config.load(project, "local").space(SPACE)
    raw = yaml.safe_load((project / "config.yaml").read_text())
    del raw["variables"]["embed_spaces"][SPACE]
    (project / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = Config.load(project, "local")
    for name in (SPACE, old.ident):
        plan = retire_plan(cfg, store_db, name)
        assert plan.fingerprint == old.fingerprint and len(plan.targets) == 2
