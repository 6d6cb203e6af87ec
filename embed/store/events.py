"""The event log, `embed_store.events`: every step embed takes, who took it and how it went.

Written in the caller's transaction (so an event commits with what it records, or not at all),
read by `embed history`. Events carry ids, counts and hashes written by embed itself, never
memory text. A move named with an event applies to the space's lifecycle (embed.store.lifecycle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from embed.config import Config
from embed.db.connection import connect
from embed.errors import NotInitialized
from embed.result import Result
from embed.spaces import Space
from embed.store import SCHEMA, actor, is_initialized, lifecycle, registry


def record_event(
    conn: psycopg.Connection,
    kind: str,
    outcome: str,
    *,
    space: Space | None = None,
    source: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    move: str | None = None,
) -> int:
    """Append to the event log (and apply a lifecycle move to the space, embed.store.lifecycle) in the
    caller's transaction."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.events (actor, kind, space_fp, source, outcome, reason, details) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
        ).format(sql.Identifier(SCHEMA)),
        (actor(), kind, space.fingerprint if space else None, source, outcome, reason, json.dumps(details or {})),
    ).fetchone()
    if move and space:
        lifecycle.move(conn, space.fingerprint, move)
    return row[0]



@dataclass(frozen=True)
class Event(Result):
    id: int
    at: datetime
    actor: str
    kind: str
    space: str | None
    space_fp: str | None
    source: str | None
    outcome: str
    reason: str | None
    details: dict[str, Any]


def history(cfg: Config, url: str, name: str | None = None, limit: int | None = None) -> list[Event]:
    """The event log, oldest first (the last `limit`): about space `name` includes the switches
    away from it and to it."""
    with connect(url, vector=False) as conn:
        if not is_initialized(conn):
            raise NotInitialized()
        fps = [registry.by_name(conn, cfg, name).fingerprint] if name is not None else None
        rows = conn.execute(
            sql.SQL(
                """SELECT * FROM (
                     SELECT e.id, e.at, e.actor, e.kind, s.name, e.space_fp, e.source, e.outcome, e.reason, e.details
                     FROM {schema}.events e LEFT JOIN {schema}.spaces s ON s.fingerprint = e.space_fp
                     WHERE %(fps)s::text[] IS NULL OR e.space_fp = ANY(%(fps)s)
                        OR e.details ->> 'from_fp' = ANY(%(fps)s) OR e.details ->> 'to_fp' = ANY(%(fps)s)
                     ORDER BY e.at DESC, e.id DESC LIMIT %(limit)s) AS recent
                   ORDER BY at, id"""
            ).format(schema=sql.Identifier(SCHEMA)),
            {"fps": fps, "limit": limit},
        ).fetchall()
    return [Event(*r) for r in rows]
