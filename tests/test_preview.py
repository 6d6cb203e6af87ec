"""`--dry-run` previews (embed/preview.py, embed/cutover/preview.py) and the spend cap: a preview
names the rows, the statements in order with their locks, time, storage and cost, and changes
nothing (the database is compared before and after); `--budget-usd` refuses at preview time and
stops a backfill before the embed call that would pass it, keeping what was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from embed import mesh
from embed.cli import cli
from embed.config import Config
from embed.cutover.preview import switch_preview
from embed.db.connection import connect
from embed.errors import Blocked
from embed.fill.backfill import backfill
from embed.preview import backfill_preview
from tests.support.backfill import SPACE, expected, seeded
from tests.support.inplace import NEW, fill_store, honcho_db

pytestmark = pytest.mark.timeout(600)


def database(url: str) -> list[tuple]:
    """Every relation of the schemas embed and SQLMesh touch (views with their definition), every
    column, and every table's row count: what a dry run must leave exactly as it was."""
    with psycopg.connect(url) as conn:
        rels = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind, CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'i')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2").fetchall()
        cols = conn.execute("SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
                            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3").fetchall()
        counts = [(s, r, conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, r))).fetchone()[0])
                  for s, r, kind, _ in rels if kind == "r"]
    return [*rels, *cols, *counts]


def priced(project: Path, usd_per_mtok: float) -> Config:
    """The project with a price declared on e5_small (an operational option)."""
    path = project / "config.yaml"
    text = path.read_text()
    path.write_text(text.replace('      passage_prefix: "passage: "\n      max_tokens: 512\n',
                                 f'      passage_prefix: "passage: "\n      max_tokens: 512\n'
                                 f'      price_per_mtok: {usd_per_mtok}\n', 1))
    return Config.load(project, "local")


def test_backfill_preview_changes_nothing_and_the_budget_caps_the_spend(pg_server, project: Path) -> None:
    from tests.support.backfill import make_db

    plain = Config.load(project, "local")
    cfg = priced(project, 1000.0)
    assert cfg.space(SPACE).option("price_per_mtok") == 1000.0
    assert cfg.space(SPACE).fingerprint == plain.space(SPACE).fingerprint  # a price is not part of the space
    url = seeded(make_db(pg_server), cfg, documents=80, messages=1)
    keep, empty = expected(url, cfg)
    before = database(url)

    p = backfill_preview(cfg, url, SPACE, sources=["documents"])
    assert database(url) == before
    assert p.rows == {"documents": len(keep) + len(empty)} and p.tokens and p.tokens > len(keep)
    assert p.cost_usd == pytest.approx(p.tokens * 1000.0 / 1e6) and p.price_per_mtok == 1000.0
    sqls = [s.sql for s in p.statements]
    assert sqls[0].startswith('COPY "embed_store"."documents__e5_small_') and "FROM STDIN (FORMAT BINARY)" in sqls[0]
    assert sqls[1].startswith('CREATE INDEX ON "embed_store"."documents__e5_small_') and "USING hnsw" in sqls[1]
    assert p.statements[0].lock.startswith("ROW EXCLUSIVE") and p.bytes_added > len(keep) * 384 * 4

    runner = CliRunner()
    base = ["--db", url, "--project", str(project), "backfill", "--space", SPACE, "--source", "documents"]
    r = runner.invoke(cli, [*base, "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["tokens"] == p.tokens and json.loads(r.output)["allowed"] is True
    r = runner.invoke(cli, [*base, "--budget-usd", f"{p.cost_usd / 2:.6f}"])  # refused at preview time
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "over --budget-usd" in r.output, r.output
    assert database(url) == before

    # before each embed call: the call that would pass the cap is not sent; what was written stays
    with pytest.raises(Blocked, match=r"stopped before an embed call: .* over --budget-usd"):
        backfill(cfg, url, SPACE, sources=["documents"], budget_usd=p.cost_usd * 0.9, chunk_rows=32, progress=False)
    with connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM embed_store.documents__" + cfg.space(SPACE).ident).fetchone()[0]
    assert 0 < stored < len(keep)
    rest = backfill(cfg, url, SPACE, sources=["documents"], budget_usd=p.cost_usd, progress=False)
    assert rest.complete and stored + rest.rows_written == len(keep)


def test_cutover_and_rollback_previews_list_the_statements_in_order_and_change_nothing(
        db_url: str, project: Path) -> None:
    cfg = Config.load(project, "local")
    honcho_db(db_url, cfg, documents=40, messages=20)
    fill_store(db_url, cfg, NEW)
    mesh.plan(cfg, db_url)
    before = database(db_url)

    p = switch_preview(cfg, db_url, "cutover", NEW, mode="honcho-inplace")
    sqls = [s.sql for s in p.statements]
    add = [i for i, s in enumerate(sqls) if s.startswith('ALTER TABLE "public"."documents" ADD COLUMN')]
    lock = sqls.index('LOCK TABLE "public"."documents", "public"."message_embeddings" IN ACCESS EXCLUSIVE MODE')
    rename = sqls.index(f'ALTER TABLE "public"."documents" RENAME COLUMN "embedding__{cfg.space(NEW).ident}" '
                        'TO "embedding"')
    view = next(i for i, s in enumerate(sqls) if s.startswith("CREATE OR REPLACE VIEW embed.documents_active AS"))
    assert add and add[0] < lock < rename < view  # staging, the swap's lock, its renames, then the views
    assert p.statements[lock].lock.startswith("ACCESS EXCLUSIVE") and p.bytes_added > 0
    assert any("CREATE INDEX CONCURRENTLY" in s for s in sqls[:lock])
    vacuum = sqls.index('VACUUM (ANALYZE) "public"."documents"')  # stage's last step, before the swap
    assert add[0] < vacuum < lock and "SHARE UPDATE EXCLUSIVE" in p.statements[vacuum].lock
    assert p.rows["documents"] > 0 and any(b.startswith("documents.smoke") for b in p.blockers)  # no gate input yet

    r = CliRunner().invoke(cli, ["--db", db_url, "--project", str(project), "cutover", "--space", NEW, "--dry-run",
                                 "--json"])
    assert r.exit_code == 0, r.output
    view_mode = json.loads(r.output)
    shown = [s["sql"].split(" AS ")[0].split(" (")[0] for s in view_mode["statements"]]
    builds = [s for s in shown if s.startswith("CREATE VIEW sqlmesh__embed.embed__")]  # new versions, built first
    assert shown[len(builds):] == ["CREATE OR REPLACE VIEW embed.documents_active",
                                   "CREATE OR REPLACE VIEW embed.message_embeddings_active"]
    back = switch_preview(cfg, db_url, "rollback")
    assert back.statements == () and "nothing to do" in back.seconds_basis
    assert database(db_url) == before
