"""The SQL of the in-place cutover (embed.cutover.inplace): names, bookkeeping tables, catalog reads and
the few statements that move vectors between a store table and a column of the source table.

A column of the source table is either *live* (the application reads and writes it: Honcho's
`embedding`) or *tagged* (`<vector_column>__<space.ident>`: staged for a cutover, or kept after
one). A tagged column is a copy of its space's store table, and `embed_store.inplace_staged`
records, per row, the content hash whose stored vector the column holds. A tagged column's value
is current when it is not NULL and that hash equals the row's content hash now; so an edit in
the source makes it stale without anyone touching the column, and the in-lock catch-up of a
swap reads hashes, never vectors. Rows that are no longer live keep a tagged value only while it
is current (`clear_dead`): the column may become the live one. The record also keeps the row
version's xmin: a row whose xmin is unchanged was not written since, so its hash need not even
be computed.

The source is only ever read through a derived table over it (the operator's live filter binds
to nothing else), and every identifier is quoted with psycopg.sql.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from embed.config import Source
from embed.db.idents import PG_MAX_IDENT, column
from embed.errors import EmbedError
from embed.spaces import Space
from embed.store import SCHEMA
from embed.store.indexes import opclass
from embed.store.location import COLUMNS, live_column
from embed.store.target import Target
from embed.verify import tolerance

STAGED = sql.Identifier(SCHEMA, "inplace_staged")





# ---------------------------------------------------------------------------------------- names
def tagged_column(source: Source, space: Space) -> str:
    """`<vector_column>__<space>_<fp8>`: the column that holds `space` while it is not live
    (embed.safety.retire drops exactly this name)."""
    name = f"{live_column(source)}__{space.ident}"
    if len(name) > PG_MAX_IDENT:
        raise EmbedError(f"column name {name!r} exceeds {PG_MAX_IDENT} characters: shorten the space name")
    return name


def index_name(table: str, col: str) -> str:
    """Honcho's own pattern `ix_<table>_<column>_hnsw`; over 63 characters it is cut and made
    unique by a hash of (table, column), so the name is always the same for the same column."""
    name = f"ix_{table}_{col}_hnsw"
    if len(name) <= PG_MAX_IDENT:
        return name
    digest = hashlib.sha256(f"{table}.{col}".encode()).hexdigest()[:8]
    return f"{name[: PG_MAX_IDENT - 14]}_{digest}_hnsw"


# -------------------------------------------------------------------------------------- catalog
@dataclass(frozen=True)
class IndexInfo:
    name: str
    column: str
    valid: bool  # indisvalid AND indisready: usable by the planner and maintained by writers
    method: str
    opclass: str


def indexes(conn: psycopg.Connection, source: Source) -> dict[str, IndexInfo]:
    """Single-column indexes on the live or tagged vector columns, by name."""
    schema, table = source.schema_table
    prefix = f"{live_column(source)}__"
    rows = conn.execute(
        """SELECT c.relname, att.attname, i.indisvalid AND i.indisready, am.amname, oc.opcname
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
           JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = i.indkey[0]
           JOIN pg_opclass oc ON oc.oid = i.indclass[0]
           WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND i.indnatts = 1
             AND (att.attname = %s OR left(att.attname, %s) = %s)
           ORDER BY c.relname""",
        (schema, table, live_column(source), len(prefix), prefix),
    ).fetchall()
    return {n: IndexInfo(n, col, bool(ok), am, opc) for n, col, ok, am, opc in rows}


def relation_exists(conn: psycopg.Connection, source: Source, name: str) -> bool:
    schema, _ = source.schema_table
    return conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                        (schema, name)).fetchone()[0]


def hnsw_on(idx: dict[str, IndexInfo], col: str, preferred: str) -> IndexInfo | None:
    """The HNSW index of a column: the one with the derived name if it exists, else any."""
    found = [i for i in idx.values() if i.column == col and i.method == "hnsw"]
    return next((i for i in found if i.name == preferred), found[0] if found else None)


def expected_opclass(space: Space) -> str:
    return opclass(space)


def has_columns(conn: psycopg.Connection, source: Source, names: Sequence[str]) -> set[str]:
    """Which of `names` the source table has (Honcho's sync_state, last_sync_at, sync_attempts)."""
    schema, table = source.schema_table
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))"
        " AND attnum > 0 AND NOT attisdropped AND attname = ANY(%s)",
        (schema, table, list(names)),
    ).fetchall()
    return {r[0] for r in rows}


# ----------------------------------------------------------------------------------- statements
def rows(t: Target, cols: Sequence[sql.Composable], where: Sequence[sql.Composable]) -> sql.Composed:
    """`SELECT id, text, <cols> FROM source WHERE live AND <where>`, for use as a derived table
    (target.live_rows with extra columns: the statements here also read the vector column)."""
    out = [sql.SQL("{} AS id").format(t.id), sql.SQL("{}::text AS text").format(t.text), *cols]
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(out), t.src, sql.SQL(" AND ").join([sql.SQL("({})").format(t.live), *where])
    )


def bounds(t: Target, lo: str | None, hi: str | None) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    if lo is not None:
        out.append(sql.SQL("{} > {}::{}").format(t.id, sql.Literal(lo), t.id_type))
    if hi is not None:
        out.append(sql.SQL("{} <= {}::{}").format(t.id, sql.Literal(hi), t.id_type))
    return out


def among(t: Target, ids: Sequence[str]) -> list[sql.Composable]:
    """Rows whose id is one of `ids` (as text): what the change queue names."""
    return [sql.SQL("{} = ANY({}::text[]::{}[])").format(t.id, sql.Literal(list(ids)), t.id_type)]


def next_bound(t: Target) -> sql.Composed:
    """(the id that ends the next batch after %(lo)s, its row count), over all rows; NULL: none left."""
    return sql.SQL(
        "SELECT max(q.id)::text, count(*) FROM (SELECT {id} AS id FROM {src}"
        " WHERE %(lo)s::text IS NULL OR {id} > %(lo)s::{idt} ORDER BY {id} LIMIT %(n)s) AS q"
    ).format(id=t.id, src=t.src, idt=t.id_type)


def _keys(t: Target) -> dict[str, sql.Composable]:
    return {"src": t.src, "id": t.id, "store": t.store, "staged": STAGED,
            "source": sql.Literal(t.source.name), "fp": sql.Literal(t.space.fingerprint)}


def record_of(t: Target, source_id: sql.Composable, cols: str = "k.source_id, k.content_sha256, k.row_xmin",
              cond: sql.Composable | None = None) -> sql.Composed:
    """`LATERAL (...) AS k`: the record of one row (`source_id`: its id as text), probed by primary key
    per row. OFFSET 0 keeps the planner from flattening it into a join, which it may answer with a
    read of every record of the (source, space) when its statistics undercount them (records added
    since the last ANALYZE: 100-200 ms for 500 ids among 200k records, seconds at Honcho's millions),
    so a batch costs its own ids, inside the swap's lock too. Deletes name their keys the same way
    (`source_id = ANY(ARRAY(...))`: an index condition, never a join)."""
    return sql.SQL(
        "LATERAL (SELECT {cols} FROM {staged} AS k WHERE k.source = {source} AND k.space_fp = {fp}"
        " AND k.source_id = {sid}{cond} OFFSET 0) AS k"
    ).format(cols=sql.SQL(cols), sid=source_id, cond=cond or sql.SQL(""), staged=STAGED, source=sql.Literal(t.source.name),
             fp=sql.Literal(t.space.fingerprint))


def stale(t: Target, col: str, where: Sequence[sql.Composable] = (), *, states: bool = False) -> sql.Composed:
    """Live rows of `where` (bounds or among; all when empty) whose tagged column needs writing: not current
    (NULL, or recorded for other content than the row's now) and either a store vector exists
    for the current content (fill) or the column still holds a value (clear). With `states`
    (Honcho's sync_state), also NULL rows whose sync_state is not what it must become.

    Returns (id as text, content hash, column is NULL, store has a vector, state or NULL): the
    state is 'pending' for a row with no vector (Honcho's reconciler embeds it with the model it
    is configured with), 'failed' if embed could not embed its current content either (a skip
    record: blank text, rejected), as Honcho records text it cannot embed. One scan; hashes are
    computed only for NULL rows and rows written since their record; no vector is read."""
    sha = t.sha(sql.SQL("r.text"))
    extra = [sql.SQL("{} IS NULL AS empty").format(column(col)), sql.SQL("xmin AS xmin")]
    if states:
        extra.append(sql.SQL("sync_state::text AS state"))
    target = (sql.SQL("CASE WHEN e.has THEN NULL WHEN EXISTS (SELECT 1 FROM {} AS s WHERE s.source = {} AND"
                      " s.space_fp = {} AND s.source_id = e.id::text AND s.content_sha256 = e.sha) THEN 'failed'"
                      " ELSE 'pending' END").format(t.skipped, sql.Literal(t.source.name),
                                                    sql.Literal(t.space.fingerprint))
              if states else sql.SQL("NULL::text"))
    # MATERIALIZED: each hash once, and the store probed by primary key per candidate row.
    return sql.SQL(
        """WITH c AS MATERIALIZED (
             SELECT r.id, r.empty, {sha} AS sha{state} FROM ({rows}) AS r LEFT JOIN {k} ON true
             WHERE r.empty OR k.source_id IS NULL
                OR (k.row_xmin IS DISTINCT FROM r.xmin AND k.content_sha256 IS DISTINCT FROM {sha})),
           e AS MATERIALIZED (
             SELECT c.*, EXISTS (SELECT 1 FROM {store} AS v WHERE v.source_id = c.id AND v.content_sha256 = c.sha)
               AS has FROM c),
           f AS MATERIALIZED (SELECT e.*, {target} AS target FROM e)
           SELECT f.id::text, f.sha, f.empty, f.has, f.target FROM f
           WHERE NOT f.empty OR f.has {state_cond}"""
    ).format(
        rows=rows(t, extra, where), sha=sha, target=target, k=record_of(t, sql.SQL("r.id::text")),
        state=sql.SQL(", r.state") if states else sql.SQL(""),
        state_cond=sql.SQL("OR f.state IS DISTINCT FROM f.target") if states else sql.SQL(""),
        **_keys(t),
    )


def page_firsts(t: Target, col: str) -> sql.Composed:
    """Per heap page in [%(lo)s, %(hi)s), the first live row whose tagged column is NULL and whose
    current content has a store vector: ids as text, at most one a page. Staging fills these one
    row a page per transaction, so that each update finds the room the page's previous update
    freed (pruned once that transaction committed) and stays a HOT update: no new entry in any
    index of the table, Honcho's HNSW included (see embed.cutover.inplace, Costs)."""
    page = sql.SQL("(ctid::text::point)[0]::bigint")
    at = sql.SQL("format('(%%s,0)', {}::bigint)::tid")
    # The store is probed by primary key per candidate row (a subplan in the select list: never a
    # join, which the planner may answer with a scan of the whole store per batch).
    return sql.SQL(
        """WITH r AS MATERIALIZED ({rows}),
           e AS MATERIALIZED (
             SELECT r.id, r.page, r.tid,
                    EXISTS (SELECT 1 FROM {store} AS v WHERE v.source_id = r.id AND v.content_sha256 = {sha}) AS has
             FROM r)
           SELECT DISTINCT ON (e.page) e.id::text FROM e WHERE e.has ORDER BY e.page, e.tid"""
    ).format(
        rows=rows(t, [sql.SQL("{} AS page").format(page), sql.SQL("ctid AS tid")],
                  [sql.SQL("ctid >= {}").format(at.format(sql.Placeholder("lo"))),
                   sql.SQL("ctid < {}").format(at.format(sql.Placeholder("hi"))),
                   sql.SQL("{} IS NULL").format(column(col))]),
        sha=t.sha(sql.SQL("r.text")), store=t.store,
    )


def pages(t: Target) -> sql.Composed:
    """The source's heap pages now (new ones appear as rows move or Honcho inserts)."""
    return sql.SQL("SELECT pg_relation_size({r}) / current_setting('block_size')::bigint").format(r=_regclass(t))


def sizes(t: Target) -> sql.Composed:
    """(heap, TOAST, indexes, dead tuples) of the source table: what staging grows and VACUUM frees."""
    return sql.SQL(
        """SELECT pg_relation_size(c.oid), coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
                  pg_indexes_size(c.oid), coalesce(s.n_dead_tup, 0)
           FROM pg_class AS c LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid WHERE c.oid = {r}"""
    ).format(r=_regclass(t))


def _regclass(t: Target) -> sql.Composed:
    schema, table = t.source.schema_table
    return sql.SQL("(quote_ident({}) || '.' || quote_ident({}))::regclass").format(sql.Literal(schema), sql.Literal(table))


def touch(t: Target, col: str, where: Sequence[sql.Composable] = ()) -> sql.Composed:
    """Move the records of rows written since (same content, new row version) to the row's
    current xmin, so the in-lock check of a swap need not hash them again. Returns (rows, 0).
    Each record is found by primary key (record_of) and updated by its row version: only embed's
    in-place session, which holds the in-place lock, writes the records."""
    return sql.SQL(
        """WITH w AS (
             SELECT k.ctid AS tid, r.xmin FROM ({rows}) AS r
             CROSS JOIN {k} WHERE NOT r.empty),
           u AS (UPDATE {staged} AS k SET row_xmin = w.xmin FROM w WHERE k.ctid = w.tid RETURNING 1)
           SELECT count(*), 0 FROM u"""
    ).format(
        rows=rows(t, [sql.SQL("{} IS NULL AS empty").format(column(col)), sql.SQL("xmin AS xmin")], where),
        k=record_of(t, sql.SQL("r.id::text"), "k.ctid", sql.SQL(
            " AND k.row_xmin IS DISTINCT FROM r.xmin AND k.content_sha256 = {}").format(t.sha(sql.SQL("r.text")))),
        **_keys(t),
    )


def clear_dead(t: Target, col: str, where: Sequence[sql.Composable] = ()) -> sql.Composed:
    """Rows of `where` that are not live (soft-deleted, filtered out) whose tagged column holds a
    vector recorded for other content than theirs now (edited, then deleted): cleared, with their
    record. No reader reads such a row, but the column may become the live one, and a vector in a
    column is always its row's text's. A value with no record is the application's own (a row
    deleted before it was ever staged or adopted) and is kept as it is. Returns (0, rows cleared)."""
    c = column(col)
    return sql.SQL(
        """WITH r AS (
             SELECT {id} AS id, {text}::text AS text, xmin AS xmin FROM {src}
             WHERE NOT coalesce(({live}), false) AND {c} IS NOT NULL{bounds}),
           d AS (
             SELECT r.id FROM r CROSS JOIN {k}
             WHERE k.row_xmin IS DISTINCT FROM r.xmin AND k.content_sha256 IS DISTINCT FROM {sha}),
           u AS (
             UPDATE {src} AS x SET {c} = NULL FROM d WHERE x.{id} = d.id RETURNING x.{id}::text AS id),
           del AS (
             DELETE FROM {staged} AS k WHERE k.source = {source} AND k.space_fp = {fp}
               AND k.source_id = ANY(ARRAY(SELECT u.id FROM u)))
           SELECT 0, count(*) FROM u"""
    ).format(text=t.text, live=t.live, c=c, sha=t.sha(sql.SQL("r.text")), k=record_of(t, sql.SQL("r.id::text")),
             bounds=sql.SQL("").join(sql.SQL(" AND ") + b for b in where), **_keys(t))


def refresh(t: Target, col: str) -> sql.Composed:
    """For the rows of `stale` (params: ids text[], hashes bytea[]): the store's vector for that
    content into the tagged column, or NULL when the store has none (sync lag), and the record.
    The content is re-checked on the locked row, so a writer that edits it meanwhile leaves a
    mismatch (stale, fixed next time), never a wrong record. Returns (id, filled) per row changed."""
    c = column(col)
    return sql.SQL(
        """WITH n AS (
             SELECT w.id::{idt} AS id, w.sha FROM unnest(%s::text[], %s::bytea[]) AS w(id, sha)),
           v AS (
             SELECT n.id, n.sha, t.embedding AS emb FROM n
             LEFT JOIN {store} AS t ON t.source_id = n.id AND t.content_sha256 = n.sha),
           u AS (
             UPDATE {src} AS x SET {col} = v.emb FROM v
             WHERE x.{id} = v.id AND (v.emb IS NOT NULL OR x.{col} IS NOT NULL)
               AND NOT ({xsha} IS DISTINCT FROM v.sha)
             RETURNING x.{id}::text AS id, v.sha, x.xmin AS row_xmin, v.emb IS NOT NULL AS filled),
           ins AS (
             INSERT INTO {staged} (source, space_fp, source_id, content_sha256, row_xmin)
             SELECT {source}, {fp}, u.id, u.sha, u.row_xmin FROM u WHERE u.filled
             ON CONFLICT (source, space_fp, source_id) DO UPDATE SET content_sha256 = EXCLUDED.content_sha256,
               row_xmin = EXCLUDED.row_xmin),
           del AS (
             DELETE FROM {staged} AS k WHERE k.source = {source} AND k.space_fp = {fp}
               AND k.source_id = ANY(ARRAY(SELECT u.id FROM u WHERE NOT u.filled)))
           SELECT u.id, u.filled FROM u"""
    ).format(idt=t.id_type, xsha=t.sha(sql.SQL("x.{}::text").format(t.text)), col=c, **_keys(t))


def adopt(t: Target, col: str, trusted: sql.Composable, where: Sequence[sql.Composable] = ()) -> sql.Composed:
    """Copy the live column's vectors (space t.space) into that space's store table and record
    them as current, for rows of `where` whose record is missing or stale. `trusted` says which
    rows' vectors are known to match their content (Honcho: sync_state = 'synced'); records of
    the other rows are dropped, so after the swap those rows count as needing a vector.
    Returns (rows adopted, records dropped). A store vector already held for the same content
    is kept (same space, same content), and a live vector that differs from it by more than the
    space's verify tolerance is not trusted at all (a writer on another model put it there, e.g.
    Honcho restarted with its old settings after a cutover): its record is dropped, so staging the
    column again rewrites it from the store instead of serving it as current."""
    c = column(col)
    return sql.SQL(
        """WITH s0 AS (
             SELECT r.id, {sha} AS sha, r.vec, r.ok, r.xmin FROM ({rows}) AS r),
           s AS (
             SELECT s0.id, s0.sha, s0.vec, s0.xmin, s0.ok AND NOT EXISTS (
               SELECT 1 FROM {store} AS v WHERE v.source_id = s0.id AND v.content_sha256 = s0.sha
                 AND (v.embedding <=> s0.vec) > {max_distance}) AS ok FROM s0),
           a AS (
             SELECT s.id, s.sha, s.vec, s.ok, s.xmin FROM s LEFT JOIN {k} ON true
             WHERE (s.ok AND (k.source_id IS NULL OR (k.row_xmin IS DISTINCT FROM s.xmin
                                                       AND k.content_sha256 IS DISTINCT FROM s.sha)))
                OR (NOT s.ok AND k.source_id IS NOT NULL)),
           st AS (
             INSERT INTO {store} AS t (source_id, content_sha256, space_fp, embedding)
             SELECT a.id, a.sha, {fp}, a.vec FROM a WHERE a.ok
             ON CONFLICT (source_id) DO UPDATE SET content_sha256 = EXCLUDED.content_sha256,
               embedding = EXCLUDED.embedding, tokens = NULL, truncated = false, embedded_at = now(), run_id = NULL
             WHERE t.content_sha256 IS DISTINCT FROM EXCLUDED.content_sha256),
           ins AS (
             INSERT INTO {staged} (source, space_fp, source_id, content_sha256, row_xmin)
             SELECT {source}, {fp}, a.id::text, a.sha, a.xmin FROM a WHERE a.ok
             ON CONFLICT (source, space_fp, source_id) DO UPDATE SET content_sha256 = EXCLUDED.content_sha256,
               row_xmin = EXCLUDED.row_xmin),
           del AS (
             DELETE FROM {staged} AS k WHERE k.source = {source} AND k.space_fp = {fp}
               AND k.source_id = ANY(ARRAY(SELECT a.id::text FROM a WHERE NOT a.ok)))
           SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM a"""
    ).format(
        rows=rows(t, [sql.SQL("{} AS vec").format(c), sql.SQL("({}) AS ok").format(trusted), sql.SQL("xmin AS xmin")],
                  where),
        sha=t.sha(sql.SQL("r.text")), max_distance=sql.Literal(1.0 - tolerance(t.space)),
        k=record_of(t, sql.SQL("s.id::text")), **_keys(t),
    )


def trusted(col: str, sync_state: bool) -> sql.Composed:
    """Rows whose live vector matches their content: synced by Honcho, or (no sync_state) any vector."""
    c = column(col)
    if sync_state:
        return sql.SQL("{} IS NOT NULL AND sync_state = 'synced'").format(c)
    return sql.SQL("{} IS NOT NULL").format(c)


def fill_live(t: Target, col: str, sync_cols: set[str], where: Sequence[sql.Composable] = ()) -> sql.Composed:
    """Give live rows whose live column is NULL the store's vector for their current content
    (and mark them synced, as Honcho's reconciler would). Rows the application embeds meanwhile
    are left alone: the NULL check is repeated on the locked row. Returns the rows filled."""
    c = column(col)
    sets = [sql.SQL("{} = v.emb").format(c)]
    if "sync_state" in sync_cols:
        sets.append(sql.SQL("sync_state = 'synced'"))
    if "last_sync_at" in sync_cols:
        sets.append(sql.SQL("last_sync_at = now()"))
    if "sync_attempts" in sync_cols:
        sets.append(sql.SQL("sync_attempts = 0"))
    return sql.SQL(
        """WITH v AS (
             SELECT r.id, t.embedding AS emb, t.content_sha256 AS sha FROM ({rows}) AS r
             JOIN {store} AS t ON t.source_id = r.id AND t.content_sha256 = {sha}),
           u AS (
             UPDATE {src} AS x SET {sets} FROM v
             WHERE x.{id} = v.id AND x.{col} IS NULL AND {xsha} = v.sha RETURNING 1)
           SELECT count(*), 0 FROM u"""
    ).format(
        rows=rows(t, [], [sql.SQL("{} IS NULL").format(c), *where]),
        sha=t.sha(sql.SQL("r.text")), xsha=t.sha(sql.SQL("x.{}::text").format(t.text)),
        sets=sql.SQL(", ").join(sets), col=c, **_keys(t),
    )


def mark_unembedded(t: Target, col: str, sync_cols: set[str]) -> sql.Composed:
    """Set sync_state (params: ids text[], states text[], from `stale`) on rows whose column is
    NULL; 'pending' rows also become due at once. Returns (pending, failed) rows changed."""
    c = column(col)
    sets = [sql.SQL("sync_state = v.state")]
    if "last_sync_at" in sync_cols:
        sets.append(sql.SQL("last_sync_at = CASE WHEN v.state = 'pending' THEN NULL ELSE x.last_sync_at END"))
    if "sync_attempts" in sync_cols:
        sets.append(sql.SQL("sync_attempts = CASE WHEN v.state = 'pending' THEN 0 ELSE x.sync_attempts END"))
    return sql.SQL(
        """WITH u AS (
             UPDATE {src} AS x SET {sets} FROM unnest(%s::text[], %s::text[]) AS v(id, state)
             WHERE x.{id} = v.id::{idt} AND x.{col} IS NULL AND x.sync_state IS DISTINCT FROM v.state
             RETURNING v.state)
           SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'failed') FROM u"""
    ).format(sets=sql.SQL(", ").join(sets), col=c, idt=t.id_type, **_keys(t))


def coverage(t: Target, col: str) -> sql.Composed:
    """(live rows with a vector in `col`, without one and no skip record, without one but skipped)."""
    c = column(col)
    return sql.SQL(
        """SELECT count(*) FILTER (WHERE NOT r.empty),
                  count(*) FILTER (WHERE r.empty AND k.source_id IS NULL),
                  count(*) FILTER (WHERE r.empty AND k.source_id IS NOT NULL)
           FROM ({rows}) AS r LEFT JOIN {skipped} AS k ON r.empty AND k.source = {source} AND k.space_fp = {fp}
             AND k.source_id = r.id::text AND k.content_sha256 = {sha}"""
    ).format(
        rows=rows(t, [sql.SQL("{} IS NULL AS empty").format(c)], []), sha=t.sha(sql.SQL("r.text")),
        skipped=t.skipped, **_keys(t),
    )


def add_column(t: Target, col: str) -> sql.Composed:
    """Nullable, no default: a catalog-only change (no table rewrite)."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}({})").format(
        t.src, column(col), sql.SQL(t.space.storage), sql.Literal(t.space.dims)
    )


def create_index(t: Target, col: str, name: str, params: dict[str, int]) -> sql.Composed:
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {src} USING hnsw ({col} {ops})"
        " WITH (m = {m}, ef_construction = {ef})"
    ).format(
        name=sql.Identifier(name), src=t.src, col=column(col), ops=sql.SQL(expected_opclass(t.space)),
        m=sql.Literal(int(params["m"])), ef=sql.Literal(int(params["ef_construction"])),
    )


def record_column(source: str, col: str, fp: str, previous: str | None = None) -> tuple[sql.Composed, tuple]:
    return (
        sql.SQL(
            "INSERT INTO {} (source, column_name, space_fp, previous_fp) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (source, column_name) DO UPDATE SET space_fp = EXCLUDED.space_fp,"
            " previous_fp = EXCLUDED.previous_fp, at = clock_timestamp()"
        ).format(COLUMNS),
        (source, col, fp, previous),
    )
