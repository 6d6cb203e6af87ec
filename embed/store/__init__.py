"""The writer-owned store: schema `embed_store`, one vector table per (source, space), bookkeeping.

SQLMesh only manages views over these tables (rows written into a SQLMesh-managed table are
lost at its next model version), so the tables are created and owned here.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import psycopg
from psycopg import sql

from embed.config import Config, Source
from embed.db import locks
from embed.db.idents import PG_MAX_IDENT
from embed.errors import EmbedError
from embed.spaces import Space
from embed.store import migrations

SCHEMA = "embed_store"


def actor() -> str:
    """Who did it: OS user at host (recorded with every event)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def table_name(source: Source, space: Space) -> str:
    """`<source>__<space>_<fp8>`: the fingerprint in the name keeps two specs in two tables."""
    name = f"{source.name}__{space.ident}"
    if len(name) > PG_MAX_IDENT:
        raise EmbedError(f"store table name {name!r} exceeds {PG_MAX_IDENT} characters: shorten the names")
    return name


def table_ident(source: Source, space: Space) -> sql.Identifier:
    return sql.Identifier(SCHEMA, table_name(source, space))


def create_store_table(conn: psycopg.Connection, source: Source, space: Space) -> None:
    """One typed vector table, tagged with its space both in a column and in a CHECK constraint."""
    conn.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {tbl} (
                source_id      {id_type} PRIMARY KEY,
                content_sha256 bytea NOT NULL CHECK (octet_length(content_sha256) = 32),
                space_fp       text NOT NULL CONSTRAINT space_tag CHECK (space_fp = {fp}),
                embedding      {vtype}({dims}) NOT NULL,
                tokens         integer,
                truncated      boolean NOT NULL DEFAULT false,
                embedded_at    timestamptz NOT NULL DEFAULT now(),
                run_id         bigint
            )"""
        ).format(
            tbl=table_ident(source, space),
            id_type=sql.SQL(source.id_type),
            fp=sql.Literal(space.fingerprint),
            vtype=sql.SQL(space.storage),
            dims=sql.Literal(space.dims),
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            table_ident(source, space),
            sql.Literal(f"embed store: source {source.name}, space {space.name} ({space.fingerprint})"),
        )
    )


def check_storage(conn: psycopg.Connection, source: Source, space: Space) -> None:
    """Refuse a store table whose vector type is not the space's `storage`: changing it would
    need a rewrite of every vector, and a store never holds two storages at once."""
    have = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' AND NOT a.attisdropped",
        (f"{SCHEMA}.{table_name(source, space)}",),
    ).fetchone()
    if have and have[0] != space.column_type:
        raise EmbedError(
            f"{SCHEMA}.{table_name(source, space)} stores {have[0]} but space {space.name} declares storage "
            f"{space.storage}: a store's storage cannot change in place; set storage back to "
            f"{have[0].split('(')[0]}, or drop that table and backfill the space again"
        )


def init(conn: psycopg.Connection, cfg: Config) -> tuple[list[str], list[str]]:
    """Create the schema, bookkeeping and every (source, space) table; idempotent. Returns the
    tables created and the spaces newly declared.

    Runs in one transaction under an advisory lock, so two concurrent `embed init` agree.
    """
    created: list[str] = []
    declared: list[str] = []
    with conn.transaction():
        locks.xact(conn, locks.INIT)
        migrations.migrate(conn)
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,)
            ).fetchall()
        }
        for space in cfg.spaces.values():
            new = conn.execute(
                sql.SQL(
                    "INSERT INTO {}.spaces (fingerprint, name, dims, spec, state) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint"
                ).format(sql.Identifier(SCHEMA)),
                # the legacy space is what production reads from the start
                (space.fingerprint, space.name, space.dims, json.dumps(space.spec()),
                 "active" if space.fingerprint == cfg.legacy_space.fingerprint else "declared"),
            ).fetchone()
            if new:
                declared.append(space.name)
                record_event(conn, "declared", "ok", space=space, details={"spec": space.spec()})
            if retired(conn, space):
                continue  # its tables were dropped on purpose: re-declaring it is a new decision
            for source in cfg.sources.values():
                name = table_name(source, space)
                if name not in existing:
                    create_store_table(conn, source, space)
                    created.append(name)
                else:
                    check_storage(conn, source, space)
    return created, declared


def record_smoke(conn: psycopg.Connection, space: Space, evidence: dict[str, Any]) -> int:
    """Store smoke evidence (ids and hashes only, no text) and log the event; returns its id."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.smoke_runs (space_fp, actor, passed, endpoint_class, evidence) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id"
        ).format(sql.Identifier(SCHEMA)),
        (space.fingerprint, actor(), evidence["passed"], evidence["endpoint_class"], json.dumps(evidence)),
    ).fetchone()
    record_event(
        conn, "smoke", "ok" if evidence["passed"] else "failed", space=space,
        details={"smoke_run": row[0], "endpoint_class": evidence["endpoint_class"]},
        move="smoke-passed" if evidence["passed"] else "smoke-failed",
    )
    return row[0]


def retired(conn: psycopg.Connection, space: Space) -> bool:
    row = conn.execute(
        sql.SQL("SELECT state = 'retired' FROM {}.spaces WHERE fingerprint = %s").format(sql.Identifier(SCHEMA)),
        (space.fingerprint,),
    ).fetchone()
    return bool(row and row[0])


def space_states(conn: psycopg.Connection) -> dict[str, str]:
    """fingerprint -> lifecycle state, for the spaces this database has seen."""
    rows = conn.execute(sql.SQL("SELECT fingerprint, state FROM {}.spaces").format(sql.Identifier(SCHEMA)))
    return dict(rows.fetchall())


def is_initialized(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('embed_store.spaces') IS NOT NULL").fetchone()[0]


from embed.store.events import record_event  # noqa: E402  -- the event log's home; callers say store.record_event
