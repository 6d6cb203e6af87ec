"""Run records: every backfill/sync pass is a row in embed_store.runs and events at start and end."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.fill import leases as lease_mod
from embed.store.target import Target

BACKFILL = "backfill"


def start_run(conn: psycopg.Connection, target: Target, kind: str, params: dict[str, Any]) -> int:
    """Record a run (and its start event); runs of this pair whose process died are closed."""
    sp = target.space
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.runs AS r SET status = 'failed', finished_at = clock_timestamp(),"
                " stats = r.stats || '{{\"abandoned\": true}}'::jsonb"
                " WHERE r.status = 'running' AND r.source = %s AND r.space_fp = %s AND NOT {}"
            ).format(sql.Identifier(store.SCHEMA), lease_mod.run_alive_sql()),
            (target.source.name, sp.fingerprint),
        )
        run_id = conn.execute(
            sql.SQL(
                "INSERT INTO {}.runs (kind, space_fp, source, actor, params) VALUES (%s, %s, %s, %s, %s) RETURNING id"
            ).format(sql.Identifier(store.SCHEMA)),
            (kind, sp.fingerprint, target.source.name, store.actor(), json.dumps(params)),
        ).fetchone()[0]
        store.record_event(
            conn, kind, "info", space=sp, source=target.source.name, reason="started",
            details={"run_id": run_id, **params}, move="backfill" if kind == BACKFILL else None,
        )
    return run_id


def finish_run(
    conn: psycopg.Connection, target: Target, kind: str, run_id: int, ok: bool, stats: dict[str, Any],
    reason: str | None = None,
) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.runs SET status = %s, finished_at = clock_timestamp(), stats = %s WHERE id = %s"
            ).format(sql.Identifier(store.SCHEMA)),
            ("ok" if ok else "failed", json.dumps(stats, default=str), run_id),
        )
        store.record_event(
            conn, kind, "ok" if ok else "failed", space=target.space, source=target.source.name,
            reason=reason, details={"run_id": run_id, **stats},
        )
