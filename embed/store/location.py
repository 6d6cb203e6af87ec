"""Where the vectors of space S for source X live: the one function that answers it.

- The source's live vector column (Honcho's `embedding`) holds the legacy space until an
  in-place swap puts another space there; `embed_store.inplace_columns`, written in the swap's
  transaction, says which.
- The legacy space, once swapped out, lives in the space-tagged column the live one was renamed
  to (`<vector_column>__<space>_<fp8>`), recorded the same way.
- Every other space lives in its store table `embed_store.<source>__<space>_<fp8>`. A column
  staged ahead of a swap is a copy of that table for the swap, not a place to read the space.

Readers (status, shadow, verify, the views' rendering, retire) all ask here, so none of them can
read one space's vectors as another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from embed.config import Config, Source
from embed.db.idents import column, qualified
from embed.errors import EmbedError
from embed.spaces import Space
from embed.store import SCHEMA, table_ident

LIVE, PARKED, STORE = "live", "parked", "store"

COLUMNS = sql.Identifier(SCHEMA, "inplace_columns")  # (source, column) -> the space it holds, and the one before


def live_column(source: Source) -> str:
    if not source.vector_column:
        raise EmbedError(f"source {source.name} has no vector_column: nothing to cut over in place")
    return source.vector_column


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    dims: int | None  # the vector typmod (None: not a typed vector)
    not_null: bool
    storage: str | None = None  # vector or halfvec (None: neither)


def columns(conn: psycopg.Connection, source: Source) -> dict[str, ColumnInfo]:
    """The live vector column and every tagged column of the source table."""
    schema, table = source.schema_table
    prefix = f"{live_column(source)}__"
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, NULL), a.atttypmod, a.attnotnull
           FROM pg_attribute a WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
             AND a.attnum > 0 AND NOT a.attisdropped AND (a.attname = %s OR left(a.attname, %s) = %s)""",
        (schema, table, live_column(source), len(prefix), prefix),
    ).fetchall()
    vec = ("vector", "halfvec")
    return {n: ColumnInfo(n, int(mod) if typ in vec and mod > 0 else None, bool(nn), typ if typ in vec else None)
            for n, typ, mod, nn in rows}


@dataclass(frozen=True)
class Location:
    """A space's vectors of one source: the relation and vector column to read them from."""

    source: Source
    space: Space
    kind: str  # LIVE: the application's own column; PARKED: a tagged source column; STORE: the store table
    column: str

    @property
    def relation(self) -> sql.Composable:
        return table_ident(self.source, self.space) if self.kind == STORE else qualified(self.source.table)

    @property
    def in_source(self) -> bool:
        return self.kind != STORE

    def describe(self) -> str:
        table = self.relation.as_string(None).replace('"', "")
        return f"{table}.{self.column}"


def recorded(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(source, column) -> (space_fp, previous_fp) of every column an in-place step recorded."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (COLUMNS.as_string(None),)).fetchone()[0]:
        return {}
    rows = conn.execute(sql.SQL("SELECT source, column_name, space_fp, previous_fp FROM {}").format(COLUMNS))
    return {(s, c): (fp, prev) for s, c, fp, prev in rows.fetchall()}


def live_fp(conn: psycopg.Connection, cfg: Config, src: Source) -> str:
    """The space in the source's live vector column: recorded by the last swap, else the legacy space."""
    got = recorded(conn).get((src.name, src.vector_column or ""))
    return got[0] if got else cfg.legacy_space.fingerprint


def locate(conn: psycopg.Connection, cfg: Config, source: Source, space: Space) -> Location:
    """Where `space`'s vectors of `source` are read from (see the module docstring)."""
    rec = recorded(conn)
    live = source.vector_column
    if live:
        column(live)
        in_live = (rec.get((source.name, live)) or (cfg.legacy_space.fingerprint, None))[0]
        if in_live == space.fingerprint:
            return Location(source, space, LIVE, live)
    if space.fingerprint != cfg.legacy_space.fingerprint:
        return Location(source, space, STORE, "embedding")
    if not live:
        raise EmbedError(f"source {source.name} declares no vector_column for the legacy space {space.name}")
    parked = _parked(rec, source, space)
    if len(parked) != 1:
        which = "no other column holds" if not parked else f"{len(parked)} other columns claim"
        raise EmbedError(f"{source.table}.{live} holds {cfg.label(in_live)}, and {which} the legacy space "
                         f"{space.name} (embed_store.inplace_columns)")
    column(parked[0])
    return Location(source, space, PARKED, parked[0])


def _parked(rec: dict[tuple[str, str], tuple[str, str | None]], source: Source, space: Space) -> list[str]:
    """The source's columns other than the live one recorded as holding `space`."""
    return [c for (s, c), (fp, _) in rec.items()
            if s == source.name and fp == space.fingerprint and c != source.vector_column]


def check_legacy(conn: psycopg.Connection, cfg: Config) -> None:
    """Refuse, with one line, a legacy space whose dimension does not fit the column holding it
    (e.g. the shipped 1536-d `honcho` gateway pointed at a 384-d Honcho)."""
    legacy = cfg.legacy_space
    for src in cfg.sources.values():
        if not src.vector_column:
            continue
        have = columns(conn, src)
        if not have:
            continue  # no such table (yet): nothing holds the legacy space to check
        if live_fp(conn, cfg, src) != legacy.fingerprint and not _parked(recorded(conn), src, legacy):
            continue  # swapped out and its column retired since: nothing holds it any more
        loc = locate(conn, cfg, src, legacy)
        info = have.get(loc.column)
        if info is None:
            raise EmbedError(f"{loc.describe()} does not exist: check source {src.name} in config.yaml")
        dims = info.dims
        if dims is None:  # an untyped `vector` column: ask a stored value
            row = conn.execute(sql.SQL("SELECT vector_dims({c}) FROM {t} WHERE {c} IS NOT NULL LIMIT 1").format(
                c=sql.Identifier(loc.column), t=loc.relation)).fetchone()
            dims = row[0] if row else None
        if dims is not None and dims != legacy.dims:
            raise EmbedError(
                f"{loc.describe()} holds {dims}-d vectors but the legacy space {legacy.name} has {legacy.dims} dims: "
                f"set embed_legacy_space of gateway {cfg.gateway} to the space that wrote them")
