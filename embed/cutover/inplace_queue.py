"""The in-place cutover's change queue: which rows of a source were written since embed last
checked them, per space that has a column there, so the swap's exclusive lock checks only those
rows instead of scanning the table.

A trigger (`embed_inplace_changes`, AFTER INSERT OR UPDATE, per row) on each source table that
has a staged or parked column queues (source, space, id) in `embed_store.inplace_changed` for
every space recorded in a column of that source (`embed_store.inplace_columns`), and for the
live column's space, which stage names to it until a swap records that column. Writes of embed's own in-place session are not queued (it sets
`embed.inplace = self`): it writes only what it has just checked. A consumer takes entries out in
id order, checks those rows with the statements of the full pass bounded to their ids, and puts
back the live ones still without a current record (NULL: sync lag, blank text), so the queue is
always "rows changed since the last check, plus rows that still need a vector". The swap's lock
takes only the first kind and the rows whose sync_state it must still set: a row only waiting
for a vector (NULL, already 'pending') costs the lock nothing, however many there are.

Taking an entry deletes it in the same transaction that checks the row, before the check: a
writer that changes the row after the delete waits on the entry's key and queues it again once
the check commits; one that changed it before holds the entry locked (the trigger's ON CONFLICT
DO UPDATE locks an existing entry even when it changes nothing), so the delete, and the check
after it, wait for that writer's commit. No change is lost between the check and the delete.

The queue counts only from a full pass that ran with the trigger in place:
`embed_store.inplace_triggers` records the trigger of each source (findable after a crash) and
the spaces such a pass checked since it was installed (`complete_fps`); a swap runs the full pass,
outside its lock, for a space not listed there. Retire removes the trigger with the source's last
tagged column.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from embed.config import Source
from embed.cutover import inplace_sql
from embed.db.idents import column, qualified
from embed.store import SCHEMA
from embed.store.location import COLUMNS, live_column
from embed.store.target import Target

TRIGGER = "embed_inplace_changes"
SELF = sql.SQL("SET embed.inplace = 'self'")  # the session setting the trigger's WHEN skips
CHANGED = sql.Identifier(SCHEMA, "inplace_changed")
TRIGGERS = sql.Identifier(SCHEMA, "inplace_triggers")


def _keys(t: Target) -> dict[str, sql.Composable]:
    return {"q": CHANGED, "source": sql.Literal(t.source.name), "fp": sql.Literal(t.space.fingerprint)}


def installed_at(conn: psycopg.Connection, src: Source) -> datetime | None:
    """When the source's trigger was installed (its bookkeeping row's stamp); None: no trigger."""
    schema, table = src.schema_table
    row = conn.execute(
        sql.SQL("SELECT k.installed_at FROM {} AS k JOIN pg_trigger AS g ON g.tgname = k.trigger_name"
                " AND g.tgrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) WHERE k.source = %s").format(TRIGGERS),
        (schema, table, src.name),
    ).fetchone()
    return row[0] if row else None


def ensure(conn: psycopg.Connection, src: Source, live_fp: str) -> bool:
    """Inside the caller's transaction: the trigger on the source table and its record. It also
    queues writes for `live_fp`, the space in the live column, until a swap records that column.
    True when installed now (every space then needs a full pass before the queue counts)."""
    if installed_at(conn, src) is not None:
        return False
    conn.execute(sql.SQL(
        "CREATE OR REPLACE TRIGGER {trg} AFTER INSERT OR UPDATE ON {src} FOR EACH ROW"
        " WHEN (current_setting('embed.inplace', true) IS DISTINCT FROM 'self')"
        " EXECUTE FUNCTION {fn}({source}, {id}, {fp}, {live})"
    ).format(trg=sql.Identifier(TRIGGER), src=qualified(src.table), fn=sql.Identifier(SCHEMA, "inplace_queue"),
             source=sql.Literal(src.name), id=sql.Literal(src.id_column), fp=sql.Literal(live_fp),
             live=sql.Literal(live_column(src))))
    conn.execute(sql.SQL(
        "INSERT INTO {} (source, table_name, trigger_name) VALUES (%s, %s, %s) ON CONFLICT (source) DO UPDATE"
        " SET table_name = EXCLUDED.table_name, trigger_name = EXCLUDED.trigger_name,"
        " installed_at = clock_timestamp(), complete_fps = '{{}}'").format(TRIGGERS),
        (src.name, src.table, TRIGGER))
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(CHANGED), (src.name,))
    return True


def complete(conn: psycopg.Connection, src: Source, fp: str) -> bool:
    """Whether the queue holds every change of the source since a full check of space `fp`."""
    return installed_at(conn, src) is not None and bool(conn.execute(
        sql.SQL("SELECT %s = ANY(complete_fps) FROM {} WHERE source = %s").format(TRIGGERS), (fp, src.name)
    ).fetchone()[0])


def queued(conn: psycopg.Connection, src: Source, fp: str) -> int:
    """Rows of the source queued for space `fp`: what a swap's catch-up checks before its lock."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE source = %s AND space_fp = %s").format(CHANGED),
                        (src.name, fp)).fetchone()[0]


def mark_complete(conn: psycopg.Connection, src: Source, fp: str, since: datetime) -> None:
    """A full pass of space `fp` that started after the trigger installed at `since` is done (a
    trigger reinstalled meanwhile, e.g. dropped by hand, leaves the space unmarked)."""
    conn.execute(sql.SQL(
        "UPDATE {} SET complete_fps = array_append(complete_fps, %s) WHERE source = %s AND installed_at = %s"
        " AND NOT %s = ANY(complete_fps)").format(TRIGGERS), (fp, src.name, since, fp))


def take(t: Target) -> sql.Composed:
    """Delete and return the next %(n)s queued ids after %(after)s (NULL: from the start), in id
    order: (ids, the last one); with %(changed)s only the rows changed since they were checked, not
    the ones only waiting for a vector. Returns (NULL, NULL) when none is left."""
    return sql.SQL(
        """WITH b AS (
             SELECT source_id FROM {q} WHERE source = {source} AND space_fp = {fp}
               AND (%(after)s::text IS NULL OR source_id > %(after)s) AND NOT (%(changed)s AND waiting)
             ORDER BY source_id LIMIT %(n)s),
           d AS (
             DELETE FROM {q} AS c USING b WHERE c.source = {source} AND c.space_fp = {fp} AND c.source_id = b.source_id
             RETURNING c.source_id)
           SELECT array_agg(source_id), max(source_id) FROM d"""
    ).format(**_keys(t))


def requeue(t: Target, col: str, where: Sequence[sql.Composable], *, states: bool) -> sql.Composed:
    """Queue again the live rows (of `where`) that hold no current record for the space in `col`.
    One that is NULL there and already has the sync_state the swap would give it (`states`:
    Honcho's; 'failed' for a skipped text, else 'pending') is only *waiting* for a vector: the
    catch-up before the lock looks at it again, the lock does not (a write makes it changed)."""
    state = sql.SQL("NULL::text")
    done = sql.SQL("r.empty")
    if states:
        state = sql.SQL("sync_state::text")
        done = sql.SQL(
            "r.empty AND r.state IS NOT DISTINCT FROM CASE WHEN EXISTS (SELECT 1 FROM {skipped} AS s"
            " WHERE s.source = {source} AND s.space_fp = {fp} AND s.source_id = r.id::text"
            " AND s.content_sha256 = {sha}) THEN 'failed' ELSE 'pending' END"
        ).format(skipped=t.skipped, sha=t.sha(sql.SQL("r.text")), **_keys(t))
    return sql.SQL(
        """INSERT INTO {q} (source, space_fp, source_id, waiting)
           SELECT {source}, {fp}, r.id::text, {done} FROM ({rows}) AS r
           WHERE NOT EXISTS (SELECT 1 FROM {k})
           ON CONFLICT DO NOTHING"""
    ).format(done=done, k=inplace_sql.record_of(t, sql.SQL("r.id::text"), "1"), **_keys(t), rows=inplace_sql.rows(
        t, [sql.SQL("{} IS NULL AS empty").format(column(col)), sql.SQL("{} AS state").format(state)], where))


def forget(conn: psycopg.Connection, src: Source, fp: str) -> bool:
    """After retire dropped space `fp`'s column of `src` (caller's transaction): its queue, and the
    trigger with its record once no column of the source but the live one is left. True: removed."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND space_fp = %s").format(CHANGED), (src.name, fp))
    row = conn.execute(sql.SQL("SELECT table_name, trigger_name FROM {} WHERE source = %s").format(TRIGGERS),
                       (src.name,)).fetchone()
    if row is None:
        return False
    left = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE source = %s AND column_name <> %s").format(COLUMNS),
                        (src.name, live_column(src))).fetchone()[0]
    if left:
        return False
    conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(row[1]), qualified(row[0])))
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(TRIGGERS), (src.name,))
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(CHANGED), (src.name,))
    return True
