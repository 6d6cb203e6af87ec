"""How stage writes Honcho's tables (embed.cutover.inplace): one row a heap page per transaction
(HOT updates, no entry in Honcho's HNSW), a closing plain VACUUM (ANALYZE), and the HNSW build's
memory from embed_index.maintenance_work_mem. Structural: counts and catalog facts, never times."""

from __future__ import annotations

import copy
import uuid

import psycopg
import pytest

from embed.config import Config
from embed.cutover import inplace
from embed.cutover.inplace_sql import tagged_column
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.store.indexes import ensure_hnsw
from embed.store.target import Target
from tests.support.inplace import NEW, fill_store, honcho_db

TABLES = ("documents", "message_embeddings")


def with_index(cfg: Config, **options: object) -> Config:
    """The project's config with embed_index options changed (a copy: the fixture is shared)."""
    raw = copy.deepcopy(cfg.raw)
    raw["variables"]["embed_index"] = {**raw["variables"].get("embed_index", {}), **options}
    return Config(project=cfg.project, gateway=cfg.gateway, raw=raw)


def updates(url: str) -> dict[str, tuple[int, int, object]]:
    """(updates, HOT updates, last_vacuum) per table, this session's stats flushed first."""
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        rows = conn.execute("SELECT relname, n_tup_upd, n_tup_hot_upd, last_vacuum FROM pg_stat_user_tables"
                            " WHERE relname = ANY(%s)", (list(TABLES),)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_stage_fills_a_row_a_page_with_hot_updates_and_ends_with_a_vacuum(db_url: str, cfg: Config) -> None:
    honcho_db(db_url, cfg, documents=600, messages=300)
    fill_store(db_url, cfg)
    before = updates(db_url)
    mine = with_index(cfg, maintenance_work_mem="64MB")
    staged = inplace.stage(mine, db_url, NEW, batch_rows=40, progress=False)
    after = updates(db_url)
    for name, s in staged.sources.items():
        assert s.rows_filled_by_page > 0 and s.rows_written >= s.rows_filled_by_page
        hot = after[name][1] - before[name][1]
        assert hot > 0, name  # page by page: updates after a page's first find room on it, no index entry
        assert after[name][2] is not None and before[name][2] is None  # stage's own VACUUM ran
        v = s.vacuum
        assert v.skipped is None and v.dead_before > 0 and v.dead_after < v.dead_before
        assert v.heap_before > 0 and v.toast_before > s.size_before[1]  # the staged vectors live in TOAST
        assert s.index.built and s.index.maintenance_work_mem == "64MB"  # the configured build memory
    with connect(db_url) as conn:  # every staged value is the store's vector for the row's content now
        for name in TABLES:
            t = Target(cfg.source(name), cfg.space(NEW))
            wrong = conn.execute(
                f'SELECT count(*) FROM {name} AS x JOIN embed_store.{t.table} AS v ON v.source_id = x.id'
                f' WHERE x."{tagged_column(t.source, t.space)}" IS DISTINCT FROM v.embedding'
                " AND v.content_sha256 = sha256(convert_to(x.content, 'UTF8'))").fetchone()[0]
            assert wrong == 0, name

    again = inplace.stage(mine, db_url, NEW, batch_rows=40, progress=False)  # idempotent: nothing to write
    assert all(s.rows_written == 0 and s.rows_filled_by_page == 0 and not s.index.built
               for s in again.sources.values())


def test_a_role_that_may_stage_but_not_vacuum_skips_the_vacuum_in_one_line(db_url: str, cfg: Config) -> None:
    """A member of the tables' owner role stages (ALTER TABLE, CREATE INDEX go by ownership) but the
    owner revoked its own MAINTAIN: PostgreSQL would only warn and skip such a VACUUM, so stage asks
    first and says in one line that it did not run and what fixes it; nothing else is affected."""
    tag = uuid.uuid4().hex[:8]
    owner, member = f"honcho_{tag}", f"embed_{tag}"
    db = db_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as su:  # what a service console does once
        for role in (owner, member):
            su.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'secret'")
        su.execute("CREATE EXTENSION vector")
        su.execute(f'GRANT CREATE ON SCHEMA public TO "{owner}"')
        su.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{owner}"')
        su.execute(f'GRANT "{owner}" TO "{member}"')  # the GRANT embed names for "owner of <table>"

    def url(role: str) -> str:
        return db_url.replace("//postgres@", f"//{role}:secret@", 1)

    honcho_db(url(owner), cfg, documents=30, messages=10)
    fill_store(url(owner), cfg)
    with connect(url(owner), autocommit=True) as conn:
        conn.execute(f'REVOKE MAINTAIN ON {", ".join(TABLES)} FROM "{owner}"')
    staged = inplace.stage(cfg, url(member), NEW, progress=False)
    for name, s in staged.sources.items():
        assert s.vacuum.skipped == (f"not allowed: role {member} lacks MAINTAIN on public.{name}: autovacuum will do"
                                    f' it (or fix: GRANT MAINTAIN ON "public"."{name}" TO "{member}";)'), name
        assert s.size_line().endswith(f"VACUUM (ANALYZE) skipped: {s.vacuum.skipped}") and "\n" not in s.size_line()
        assert s.rows_written > 0 and s.rows_missing == 0 and s.index.built, name  # the rest of stage ran
    assert all(v[2] is None for v in updates(db_url).values())  # no VACUUM ran


def test_a_bad_build_memory_is_refused_in_one_line_before_anything_changes(db_url: str, cfg: Config) -> None:
    honcho_db(db_url, cfg, documents=40, messages=20)
    fill_store(db_url, cfg)
    for bad in ("lots", "512", "0MB", "-1GB"):
        with pytest.raises(EmbedError) as e:
            inplace.stage(with_index(cfg, maintenance_work_mem=bad), db_url, NEW, progress=False)
        assert "maintenance_work_mem" in str(e.value) and "\n" not in str(e.value)
    with connect(db_url) as conn:
        cols = {r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'documents'::regclass")}
    assert tagged_column(cfg.source("documents"), cfg.space(NEW)) not in cols


def test_the_store_hnsw_build_runs_with_the_configured_memory(db_url: str, cfg: Config) -> None:
    honcho_db(db_url, cfg, documents=40, messages=20)
    fill_store(db_url, cfg)
    mine = with_index(cfg, maintenance_work_mem="96MB")
    t = Target(cfg.source("documents"), cfg.space(NEW))
    with connect(db_url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX IF EXISTS embed_store.{t.table}_embedding_idx")
        for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'embed_store' AND tablename = %s"
                                    " AND indexdef ILIKE '%% USING hnsw %%'", (t.table,)).fetchall():
            conn.execute(f'DROP INDEX embed_store."{name}"')
        out = ensure_hnsw(conn, t, mine.index_params, concurrently=False)
        assert out["built"] and out["maintenance_work_mem"] == "96MB"
        assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] != "96MB"  # set for the build only
    assert cfg.index_params["maintenance_work_mem_kb"] == 512 * 1024  # the default, in no fingerprint
    assert mine.space(NEW).fingerprint == cfg.space(NEW).fingerprint
