"""embed_store: typed per-(source, space) tables, idempotent and concurrent-safe init."""

from __future__ import annotations

import threading

from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.store import SCHEMA, migrations, serving, table_name


def test_init_creates_typed_tables_once(db_url: str, cfg: Config) -> None:
    first = init_store(cfg, db_url)
    assert len(first.created_tables) == len(cfg.spaces) * len(cfg.sources)
    assert sorted(first.declared_spaces) == sorted(cfg.spaces)
    second = init_store(cfg, db_url)
    assert second.created_tables == () and second.declared_spaces == ()
    with connect(db_url) as conn:
        for src in cfg.sources.values():
            for sp in cfg.spaces.values():
                typ = conn.execute(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = 'embedding'",
                    (f"{SCHEMA}.{table_name(src, sp)}",),
                ).fetchone()[0]
                assert typ == f"vector({sp.dims})"
        declared = conn.execute(f"SELECT count(*) FROM {SCHEMA}.events WHERE kind = 'declared'").fetchone()[0]
        assert declared == len(cfg.spaces)


def test_concurrent_inits_agree(db_url: str, cfg: Config) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            init_store(cfg, db_url)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with connect(db_url) as conn:
        n = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE '%%\\_\\_%%'",
                         (SCHEMA,)).fetchone()[0]
        assert n == len(cfg.spaces) * len(cfg.sources)
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.spaces").fetchone()[0] == len(cfg.spaces)


def test_the_schema_is_named_migrations_applied_once_in_order(db_url: str, cfg: Config) -> None:
    init_store(cfg, db_url)
    with connect(db_url) as conn:
        names = [r[0] for r in conn.execute(f"SELECT name FROM {SCHEMA}.migrations ORDER BY at, name")
                 if r[0] != serving.ADOPTED]  # that row records the once-only adoption, not a DDL step
        assert names == [n for n, _ in migrations.STEPS]
        assert migrations.migrate(conn) == []  # a second run applies nothing
        # a store made before the migrations table existed adopts every step (idempotent DDL)
        conn.execute(f"DROP TABLE {SCHEMA}.migrations")
        conn.commit()
        assert migrations.migrate(conn) == names
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,))}
    assert {"spaces", "events", "backups", "pins", "leases", "inplace_columns", "serving", "migrations"} <= tables
