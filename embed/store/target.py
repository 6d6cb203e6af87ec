"""One (source, space) pair as SQL pieces: the store table, the source's live rows, the content hash.

Backfill, sync and status all ask the same questions of the same two tables ("which live rows
lack a current vector?"), so the SQL fragments live here once. Every identifier is validated
by the config and quoted with psycopg.sql; the live filter is the operator's predicate from
config.yaml (validated there) and is only ever applied inside a derived table over the source,
so its unqualified column names can never bind to a store or bookkeeping column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import psycopg
from psycopg import sql

from embed.config import Source
from embed.db.idents import column, qualified
from embed.spaces import Space
from embed.store import SCHEMA, table_ident, table_name

EMPTY_SHA256 = hashlib.sha256(b"").digest()


def content_hash(text: str | None) -> bytes:
    """sha256 of the UTF-8 text: the same value as SQL `sha256(convert_to(text, 'UTF8'))`."""
    return hashlib.sha256((text or "").encode("utf-8")).digest()


@dataclass(frozen=True)
class Target:
    """The store table of one space for one source, and how to read that source."""

    source: Source
    space: Space

    @property
    def table(self) -> str:
        return table_name(self.source, self.space)

    @property
    def store(self) -> sql.Identifier:
        return table_ident(self.source, self.space)

    @property
    def skipped(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, "skipped")

    @property
    def id_type(self) -> sql.SQL:
        return sql.SQL(self.source.id_type)

    @cached_property
    def src(self) -> sql.Composable:
        return qualified(self.source.table)

    @cached_property
    def id(self) -> sql.Identifier:
        return column(self.source.id_column)

    @cached_property
    def text(self) -> sql.Identifier:
        return column(self.source.text_column)

    @cached_property
    def live(self) -> sql.SQL:
        return sql.SQL(self.source.live_filter)

    def live_rows(self, *extra: sql.Composable, tenant: bool = False) -> sql.Composed:
        """`SELECT id, text[, ws] FROM source WHERE live [AND extra...]`, for use as a derived table."""
        cols = [sql.SQL("{} AS id").format(self.id), sql.SQL("{}::text AS text").format(self.text)]
        if tenant:
            ws = column(self.source.tenant_columns[0]) if self.source.tenant_columns else None
            cols.append(sql.SQL("{}::text AS ws").format(ws) if ws else sql.SQL("NULL::text AS ws"))
        where = [sql.SQL("({})").format(self.live), *extra]
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(cols), self.src, sql.SQL(" AND ").join(where)
        )

    @staticmethod
    def sha(expr: sql.Composable | None = None) -> sql.Composed:
        """The content hash of a text expression, `s.text` by default (NULL hashes as '')."""
        return sql.SQL("sha256(convert_to(coalesce({}, ''), 'UTF8'))").format(expr or sql.SQL("s.text"))

    def pending_query(self, lo: str | None = None, hi: str | None = None, *, count: bool = False) -> sql.Composed:
        """Live rows in (lo, hi] with no current vector and no current skip record.

        A stored vector is current when its content hash equals the source row's; a skip
        record counts only for the content it was made for, so an edit re-queues the row.
        """
        bounds: list[sql.Composable] = []
        if lo is not None:
            bounds.append(sql.SQL("{} > {}::{}").format(self.id, sql.Literal(lo), self.id_type))
        if hi is not None:
            bounds.append(sql.SQL("{} <= {}::{}").format(self.id, sql.Literal(hi), self.id_type))
        select = (
            sql.SQL("count(*), min(s.id)::text")
            if count
            else sql.SQL("s.id, s.text, h.sha, t.source_id IS NOT NULL AS has_row")
        )
        return sql.SQL(
            """SELECT {select}
            FROM ({rows}) AS s
            CROSS JOIN LATERAL (SELECT {sha} AS sha) AS h
            LEFT JOIN {store} AS t ON t.source_id = s.id
            WHERE (t.source_id IS NULL OR t.content_sha256 <> h.sha)
              AND NOT EXISTS (
                SELECT 1 FROM {skipped} AS k
                WHERE k.source = {source} AND k.space_fp = {fp}
                  AND k.source_id = s.id::text AND k.content_sha256 = h.sha)
            {order}"""
        ).format(
            select=select,
            rows=self.live_rows(*bounds),
            sha=self.sha(),
            store=self.store,
            skipped=self.skipped,
            source=sql.Literal(self.source.name),
            fp=sql.Literal(self.space.fingerprint),
            order=sql.SQL("") if count else sql.SQL("ORDER BY s.id"),
        )

    def has_store_table(self, conn: psycopg.Connection) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{self.table}",)).fetchone()[0]

    def has_column(self, conn: psycopg.Connection, name: str) -> bool:
        schema, table = self.source.schema_table
        return (
            conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                " AND column_name = %s",
                (schema or "public", table, name),
            ).fetchone()
            is not None
        )
