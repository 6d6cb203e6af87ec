"""Spaces the database has seen: the one resolver of a space by fingerprint or by name.

Config.space (a declared name) and Config.space_by_fp (a declared fingerprint) answer from
config.yaml alone. Once vectors exist, a space can outlive its declaration (renamed, its spec
changed, removed from config.yaml to be retired): embed_store.spaces keeps every spec it was
given, and these functions fall back to it.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from embed.config import Config
from embed.errors import EmbedError
from embed.spaces import Space, parse_space
from embed.store import SCHEMA

SPACES = sql.Identifier(SCHEMA, "spaces")


def by_fp(conn: psycopg.Connection | None, cfg: Config, fp: str) -> Space:
    """A space by fingerprint: declared in config.yaml, else as embed_store recorded it."""
    for sp in cfg.spaces.values():
        if sp.fingerprint == fp:
            return sp
    row = conn.execute(sql.SQL("SELECT name, spec FROM {} WHERE fingerprint = %s").format(SPACES),
                       (fp,)).fetchone() if conn is not None else None
    if row is None:
        raise EmbedError(f"space {fp[:12]} is neither declared in config.yaml nor recorded in embed_store")
    return parse_space(row[0], row[1])


def name_of(conn: psycopg.Connection | None, cfg: Config, fp: str | None) -> str | None:
    """The name of a fingerprint for a report; None when nobody knows it."""
    if fp is None:
        return None
    try:
        return by_fp(conn, cfg, fp).name
    except EmbedError:
        return None


def by_name(conn: psycopg.Connection, cfg: Config, name: str) -> Space:
    """A declared space by name, else one the database has seen: by `<name>_<fp8>`, or by a
    name that only one fingerprint ever had (so a space removed from config.yaml can be retired)."""
    if name in cfg.spaces:
        return cfg.spaces[name]
    rows = conn.execute(
        sql.SQL("SELECT name, spec FROM {} WHERE name || '_' || left(fingerprint, 8) = %s OR name = %s "
                "ORDER BY declared_at").format(SPACES),
        (name, name),
    ).fetchall()
    rows = [r for r in rows if r[0] != name] or rows  # an exact `<name>_<fp8>` wins
    if not rows:
        raise EmbedError(f"unknown space {name!r}: neither declared in config.yaml nor recorded in embed_store")
    spaces = [parse_space(r[0], r[1]) for r in rows]
    if len(spaces) > 1:
        raise EmbedError(f"space name {name!r} matches several specs: use one of {', '.join(s.ident for s in spaces)}")
    return spaces[0]
