"""Honcho in-place cutover: an unmodified Honcho reads `documents.embedding` and
`message_embeddings.embedding`, so the new space has to end up in exactly those columns.

    stage       ahead of time, per source: add `<vector_column>__<space>_<fp8>` as vector(D), copy
                the space's store vectors into it in short batches, one row a heap page per
                transaction first, then a check of every id range (rows whose content changed
                since they were embedded are left NULL), build its HNSW index CONCURRENTLY after
                the fill, and end with a plain VACUUM (ANALYZE) of the table; also
                copy the live column's vectors into *its* space's store table, so a rollback
                later only has to embed rows written after the cutover. Resumable: a rerun
                continues where the last one stopped. From then on a trigger queues the ids of
                the rows Honcho writes (embed.cutover.inplace_queue).
    swap        catch up the queued rows in short batches; then one short transaction over every
                source (Honcho wants both tables at the same dims): lock them, check the rows
                queued since (changed, or still without a vector), rename the columns and their
                HNSW indexes (the live column keeps Honcho's index name), record it.
    swap_back   back to the previous space: rows written since the cutover are embedded with
                the old space's model *before* the swap back, outside the lock.
    fill_column embed and fill rows whose column for a space is NULL or stale.

Reads never mix spaces: a column holds one space (its name says which, or `inplace_columns`
for the live one), a staged vector is only ever the store's vector for the row's current
content, and a live row without one is NULL and 'pending' (Honcho's reconciler embeds it with
the model it is configured with). Nothing here logs text; results carry ids, counts and timings.

Costs: staging writes a new version of every row. A version that cannot stay on its page (no
room) is inserted into each index of the table, Honcho's live HNSW included (~2 ms a row on 2
cores, the dominant cost); one that can is a HOT update and touches no index, since the tagged
column has no index until the fill is done. So the fill goes one row a page per transaction:
a page's first update moves its row out (the page is full), and every later one finds the room
the previous one freed (pruned once it committed). Filling after the tagged index exists would
make every update a non-HOT one (bench/staging.py measures both, and copying the table instead).
The replaced versions are dead until VACUUM, which stage runs (plain: Honcho keeps working; it
needs MAINTAIN on the table, its owner's, and is skipped with its reason otherwise). The swap's lock covers the rows written since its
catch-up plus those still without a vector, found through the change queue, never a scan of
the table; Honcho's writers should be paused for it (and restarted with `honcho_settings`),
since any insert waits behind the lock and would embed with the old model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.cutover import inplace_queue, inplace_run, inplace_sql
from embed.cutover.inplace_run import BATCH_ROWS, STAGE_ATTEMPTS, STAGE_LOCK_TIMEOUT_S, SYNC_COLUMNS
from embed.db import privileges
from embed.db.connection import connect
from embed.db.hooks import pause_point
from embed.errors import Busy, EmbedError, NothingToDo
from embed.fill.progress import NONE, wanted
from embed.result import PerSource, Result
from embed.spaces import Space
from embed.store import registry
from embed.store.indexes import HNSW_MAX_DIMS, build_memory
from embed.store.location import COLUMNS, columns, live_column, live_fp, recorded
from embed.store.target import Target

__all__ = ["fill_column", "stage", "state", "swap", "swap_back", "swappable"]


# --------------------------------------------------------------------------------------- stage
@dataclass(frozen=True)
class StagedIndex(Result):
    name: str
    valid: bool
    built: bool  # False: a valid index was already there
    seconds: float
    m: int
    ef_construction: int
    opclass: str
    maintenance_work_mem: str | None  # what the build ran with (embed_index.maintenance_work_mem); None: not built


@dataclass(frozen=True)
class Vacuumed(Result):
    """The staged table before and after stage's closing plain VACUUM (ANALYZE): bytes, dead tuples."""

    heap_before: int
    toast_before: int
    indexes_before: int
    dead_before: int
    heap_after: int
    toast_after: int
    indexes_after: int
    dead_after: int
    seconds: float
    skipped: str | None  # why it did not run (not allowed, busy): an optimisation, stage goes on

    @property
    def mb_before(self) -> float:
        return round((self.heap_before + self.toast_before + self.indexes_before) / 2**20, 1)

    @property
    def mb_after(self) -> float:
        return round((self.heap_after + self.toast_after + self.indexes_after) / 2**20, 1)


@dataclass(frozen=True)
class StagedSource(Result):
    table: str
    column: str  # the tagged column that holds the space until the swap
    rows_staged: int  # live rows whose column holds a current vector
    rows_missing: int  # live rows with no current store vector (sync lag): the swap marks them pending
    rows_skipped: int  # blank or rejected text
    rows_written: int
    rows_cleared: int
    live_rows_adopted: int  # the live column's trusted vectors copied into its space's store
    index: StagedIndex
    seconds: float
    rows_filled_by_page: int  # of rows_written: written one row a page per transaction (HOT updates)
    size_before: tuple[int, int, int]  # (heap, TOAST, indexes) bytes when stage began
    vacuum: Vacuumed

    def size_line(self) -> str:
        """The table's size through stage, as the operator reads it."""
        v = self.vacuum
        done = (f"VACUUM (ANALYZE) skipped: {v.skipped}" if v.skipped else
                f"{v.mb_after} MB after VACUUM (ANALYZE) in {v.seconds:g} s, dead rows {v.dead_before} -> {v.dead_after}")
        return f"{self.table} {round(sum(self.size_before) / 2**20, 1)} MB before stage, {v.mb_before} MB staged, {done}"


@dataclass(frozen=True)
class Staged(PerSource):
    sources: dict[str, StagedSource]
    TOTALS = ("rows_staged", "rows_missing")

    @property
    def rows_staged(self) -> int:
        return self.total("rows_staged")

    @property
    def rows_missing(self) -> int:
        return self.total("rows_missing")


def stage(
    cfg: Config, url: str, space_name: str, *, sources: list[str] | None = None, progress: bool | str = False,
    batch_rows: int = BATCH_ROWS,
) -> Staged:
    """Stage `space_name` next to each source's live vector column, ahead of the swap: a tagged
    column filled from the space's store, and its HNSW index built CONCURRENTLY. Idempotent; after a
    kill -9 a rerun finishes the job. `progress`: a Progress per source on stderr (True, or a format).
    """
    space = cfg.space(space_name)
    cfg.index_params  # noqa: B018  a bad embed_index is refused before anything is written
    with inplace_run.session(url) as conn:
        out = {src.name: _stage_one(conn, cfg, src, space, batch_rows, progress)
               for src in inplace_run.sources_of(cfg, sources)}
    return Staged(space.name, space.fingerprint, out)


def swappable(cfg: Config, url: str, space_name: str, sources: list[str] | None = None) -> bool:
    """Whether every source is staged as the swap takes it (the tagged column, its valid HNSW
    index, nothing in the way): a cutover then goes straight to the swap, whose catch-up handles
    what changed since staging (the rows the change queue names; a full pass only where the queue
    does not count yet). Staging again would read every row and VACUUM the table each time."""
    space = cfg.space(space_name)
    with connect(url) as conn:
        for src in inplace_run.sources_of(cfg, sources):
            try:
                _plan(conn, cfg, src, space)
            except EmbedError:  # stage builds what is missing, or refuses with its own line
                return False
    return True


def _stage_one(conn: psycopg.Connection, cfg: Config, src: Source, space: Space, batch_rows: int,
               show: bool | str) -> StagedSource:
    t0 = time.monotonic()
    t = Target(src, space)
    heap, toast, idx, _ = conn.execute(inplace_sql.sizes(t)).fetchone()
    live = live_column(src)
    if live_fp(conn, cfg, src) == space.fingerprint:
        raise NothingToDo(f"space {space.name} is already live in {src.table}.{live}: nothing to stage")
    inplace_run.check_table(conn, src, "in-place staging")
    inplace_run.needs_store(conn, t)
    col = _ensure_column(conn, t)
    since = _track(conn, cfg, src)
    states = bool(inplace_sql.has_columns(conn, src, ["sync_state"]))
    label = f"stage {src.name}/{space.name}" if wanted(show) != NONE else None
    by_page = inplace_run.by_page(conn, t, col, states=states, batch_pages=batch_rows, label=label,
                                  fmt=wanted(show), pause="inplace_stage_batch")
    written, cleared = inplace_run.batched(conn, t, inplace_run.refresher(t, col, states), batch_rows=batch_rows,
                                           label=label and f"{label} (check)", fmt=wanted(show),
                                           pause="inplace_stage_batch")
    inplace_queue.mark_complete(conn, src, space.fingerprint, since)
    adopted = _adopt(conn, cfg, src, since, batch_rows=batch_rows)
    pause_point("inplace_before_index")
    index = _ensure_index(conn, t, col, cfg.index_params)
    try:
        conn.execute(sql.SQL("ANALYZE {}").format(inplace_sql.STAGED))  # the swap's id lookups plan as lookups
    except inplace_run.BUSY:
        pass  # autovacuum or a maintenance job holds it: autovacuum analyzes it later anyway
    vacuum = _vacuum(conn, t)  # also the statistics that follow the column through the swap
    staged, missing, skipped = conn.execute(inplace_sql.coverage(t, col)).fetchone()
    return StagedSource(src.table, col, staged, missing, skipped, written + by_page, cleared, adopted, index,
                        round(time.monotonic() - t0, 3), by_page, (heap, toast, idx), vacuum)


def _vacuum(conn: psycopg.Connection, t: Target) -> Vacuumed:
    """A plain VACUUM (ANALYZE) of the staged table (never FULL: Honcho keeps reading and writing):
    the row versions staging replaced become free space its next writes reuse, before the swap
    doubles nothing. It needs MAINTAIN on the table (its owner's, from PostgreSQL 17; the owner
    before), asked first: PostgreSQL answers a VACUUM without it with a WARNING and skips the
    table, and other WARNINGs (an old snapshot held elsewhere) come from a VACUUM that ran.
    Not allowed or busy, it is skipped with its reason: autovacuum gets there later."""
    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")  # this session's updates count as dead tuples now
    before = conn.execute(inplace_sql.sizes(t)).fetchone()
    t0 = time.monotonic()
    skipped = None
    may = privileges.table_maintain(conn, t.source.table, ("in-place staging's VACUUM",))
    if may is not None and not may.held:
        skipped = (f"not allowed: role {may.role} lacks {may.privilege}: autovacuum will do it "
                   f"(or fix: {may.fix})")
    else:
        try:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(t.src))
        except inplace_run.BUSY:
            skipped = f"{t.source.table} was busy (another VACUUM or maintenance held it): autovacuum will do it"
    after = conn.execute(inplace_sql.sizes(t)).fetchone()
    return Vacuumed(*before, *after, round(time.monotonic() - t0, 3), skipped)


def _ensure_column(conn: psycopg.Connection, t: Target) -> str:
    """Add the staged column (catalog-only: nullable, no default) and record it, atomically."""
    col = inplace_sql.tagged_column(t.source, t.space)
    have = columns(conn, t.source)
    if live_column(t.source) not in have:
        raise EmbedError(f"{t.source.table} has no column {live_column(t.source)}")
    rec = recorded(conn).get((t.source.name, col))
    if rec and rec[0] != t.space.fingerprint:
        raise EmbedError(f"{t.source.table}.{col} is recorded for another space ({rec[0][:12]}): rename the space")
    if col in have and (have[col].dims, have[col].storage) != (t.space.dims, t.space.storage):
        raise EmbedError(f"{t.source.table}.{col} exists as {have[col].storage}({have[col].dims}), not {t.space.column_type}")
    if col not in have or rec is None:
        stmt, params = inplace_sql.record_column(t.source.name, col, t.space.fingerprint)

        def add(c: psycopg.Connection) -> tuple[int, int]:
            c.execute(inplace_sql.add_column(t, col))
            c.execute(stmt, params)
            return 0, 0

        inplace_run.attempt(conn, add, lock_s=STAGE_LOCK_TIMEOUT_S, attempts=STAGE_ATTEMPTS,
                  busy=f"{t.source.table} stays locked by other sessions: cannot add {col}; retry")
    return col


def _track(conn: psycopg.Connection, cfg: Config, src: Source, *, lock_s: float = STAGE_LOCK_TIMEOUT_S,
           attempts: int = STAGE_ATTEMPTS, busy: str | None = None) -> datetime:
    """The source's change-queue trigger, installed if missing (embed.cutover.inplace_queue); when it was."""
    fp = live_fp(conn, cfg, src)
    inplace_run.attempt(conn, lambda c: inplace_queue.ensure(c, src, fp), lock_s=lock_s, attempts=attempts,
                        busy=busy or f"{src.table} stays locked by other sessions: cannot install its change trigger; retry")
    since = inplace_queue.installed_at(conn, src)
    if since is None:
        raise EmbedError(f"{src.table}: its change trigger {inplace_queue.TRIGGER} vanished while installed; retry")
    return since


def _adopt(conn: psycopg.Connection, cfg: Config, src: Source, since: datetime, *, batch_rows: int,
           lock_s: float = STAGE_LOCK_TIMEOUT_S, attempts: int = STAGE_ATTEMPTS, busy: str | None = None) -> int:
    """Copy the live column's trusted vectors into its own space's store table (see inplace_sql.adopt),
    a full pass; the live space's change queue counts from it (`since`: the trigger's stamp)."""
    live = live_column(src)
    old = registry.by_fp(conn, cfg, live_fp(conn, cfg, src))
    t = Target(src, old)
    inplace_run.needs_store(conn, t)
    dims = columns(conn, src)[live].dims
    if dims != old.dims:
        raise EmbedError(f"{src.table}.{live} is vector({dims}) but should hold space {old.name} ({old.dims} dims)")
    states = bool(inplace_sql.has_columns(conn, src, ["sync_state"]))
    make = inplace_run.adopter(t, live, inplace_sql.trusted(live, states), states)
    adopted, _ = inplace_run.batched(conn, t, lambda lo, hi: make(inplace_sql.bounds(t, lo, hi)), batch_rows=batch_rows,
                                     lock_s=lock_s, attempts=attempts, busy=busy)
    inplace_queue.mark_complete(conn, src, old.fingerprint, since)
    return adopted


def _ensure_index(conn: psycopg.Connection, t: Target, col: str, params: dict[str, int]) -> StagedIndex:
    """The staged column's HNSW index under its derived name, built CONCURRENTLY (Honcho keeps
    writing); an invalid leftover of an interrupted build is dropped and rebuilt."""
    if t.space.dims > HNSW_MAX_DIMS:
        raise EmbedError(f"space {t.space.name}: pgvector builds HNSW only up to {HNSW_MAX_DIMS} dims, "
                         "and Honcho's reads need that index")
    schema, table = t.source.schema_table
    name = inplace_sql.index_name(table, col)
    cur = inplace_sql.indexes(conn, t.source).get(name)
    if cur is None and inplace_sql.relation_exists(conn, t.source, name):
        raise EmbedError(f"{schema}.{name} exists but is not an index on {t.source.table}.{col}")
    if cur is not None and cur.column != col:
        raise EmbedError(f"index {schema}.{name} is on column {cur.column}, not {col}")
    t0 = time.monotonic()
    built = False
    memory = None
    conn.execute(inplace_run.set_timeout(0, local=False))  # CONCURRENTLY waits for older transactions; blocks no writer
    try:
        if cur is not None and not cur.valid:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
            cur = None
        if cur is None:
            conn.execute(build_memory(params))
            memory = conn.execute("SHOW maintenance_work_mem").fetchone()[0]  # what the build below gets
            conn.execute(inplace_sql.create_index(t, col, name, params))
            conn.execute("RESET maintenance_work_mem")
            built = True
    finally:
        conn.execute(inplace_run.set_timeout(STAGE_LOCK_TIMEOUT_S, local=False))
    info = inplace_sql.indexes(conn, t.source).get(name)
    if info is None or not info.valid or info.method != "hnsw" or info.opclass != inplace_sql.expected_opclass(t.space):
        raise EmbedError(f"index {schema}.{name} is not a valid HNSW {inplace_sql.expected_opclass(t.space)} index: rerun stage")
    return StagedIndex(name, True, built, round(time.monotonic() - t0, 3), params["m"], params["ef_construction"],
                       info.opclass, memory)


# ---------------------------------------------------------------------------------------- swap
@dataclass(frozen=True)
class _Plan:
    """One source's swap, checked before and again under the lock."""

    source: Source
    new: Space
    old: Space
    live: str  # `embedding`
    staged: str  # `embedding__<new>`, becomes `embedding`
    retired: str  # `embedding__<old>`, what `embedding` becomes
    staged_index: str
    live_index: str | None  # the live column's HNSW index (renamed to retired_index)
    keep_name: str  # the name the new live column's index takes: Honcho's
    retired_index: str
    sync_cols: frozenset[str]


def _names(conn: psycopg.Connection, cfg: Config, src: Source, new: Space) -> _Plan:
    """The columns and indexes a swap of `src` to `new` renames, as the catalog is now (what a
    dry run shows; `_plan` checks them first)."""
    live = live_column(src)
    old = registry.by_fp(conn, cfg, live_fp(conn, cfg, src))
    staged, retired = inplace_sql.tagged_column(src, new), inplace_sql.tagged_column(src, old)
    _, table = src.schema_table
    live_index = inplace_sql.hnsw_on(inplace_sql.indexes(conn, src), live, inplace_sql.index_name(table, live))
    return _Plan(src, new, old, live, staged, retired, inplace_sql.index_name(table, staged),
                 live_index.name if live_index else None,
                 live_index.name if live_index else inplace_sql.index_name(table, live),
                 inplace_sql.index_name(table, retired), frozenset(inplace_sql.has_columns(conn, src, SYNC_COLUMNS)))


def renames(p: _Plan) -> list[sql.Composed]:
    """The swap's renames in the order it runs them inside its lock (a dry run prints them)."""
    schema, _ = p.source.schema_table
    src = Target(p.source, p.new).src
    rename_col = sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}")
    rename_idx = sql.SQL("ALTER INDEX {} RENAME TO {}")
    out = [rename_idx.format(sql.Identifier(schema, p.live_index), sql.Identifier(p.retired_index))] if p.live_index else []
    return [*out, rename_col.format(src, sql.Identifier(p.live), sql.Identifier(p.retired)),
            rename_col.format(src, sql.Identifier(p.staged), sql.Identifier(p.live)),
            rename_idx.format(sql.Identifier(schema, p.staged_index), sql.Identifier(p.keep_name))]


def _plan(conn: psycopg.Connection, cfg: Config, src: Source, new: Space) -> _Plan:
    """Every refusal of a swap, before anything changes."""
    live = live_column(src)
    old_fp = live_fp(conn, cfg, src)
    if old_fp == new.fingerprint:
        raise NothingToDo(f"space {new.name} is already live in {src.table}.{live}; nothing changed")
    inplace_run.check_table(conn, src, "in-place swap")
    old = registry.by_fp(conn, cfg, old_fp)
    cols, idx = columns(conn, src), inplace_sql.indexes(conn, src)
    staged, retired = inplace_sql.tagged_column(src, new), inplace_sql.tagged_column(src, old)
    _, table = src.schema_table
    if live not in cols:
        raise EmbedError(f"{src.table} has no column {live}; nothing changed")
    if cols[live].not_null:
        raise EmbedError(f"{src.table}.{live} is NOT NULL: after a swap writers could not insert; nothing changed")
    if staged not in cols:
        raise EmbedError(f"{src.table}.{staged} does not exist: stage space {new.name} first; nothing changed")
    if (cols[staged].dims, cols[staged].storage) != (new.dims, new.storage):
        raise EmbedError(f"{src.table}.{staged} is {cols[staged].storage}({cols[staged].dims}), space {new.name} is"
                         f" {new.column_type}; nothing changed")
    if retired in cols:
        raise EmbedError(f"{src.table}.{retired} already exists: the live column cannot take that name;"
                         " nothing changed")
    staged_index = inplace_sql.index_name(table, staged)
    si = idx.get(staged_index)
    if si is None or si.column != staged or si.method != "hnsw" or si.opclass != inplace_sql.expected_opclass(new):
        raise EmbedError(f"no HNSW index {staged_index} on {src.table}.{staged}: rerun stage to build it;"
                         " nothing changed")
    if not si.valid:
        raise EmbedError(f"index {staged_index} is invalid (an interrupted build): rerun stage to rebuild it;"
                         " nothing changed")
    live_index = inplace_sql.hnsw_on(idx, live, inplace_sql.index_name(table, live))
    keep = live_index.name if live_index else inplace_sql.index_name(table, live)
    retired_index = inplace_sql.index_name(table, retired)
    if (live_index and inplace_sql.relation_exists(conn, src, retired_index)) or (
            not live_index and inplace_sql.relation_exists(conn, src, keep)):
        raise EmbedError(f"an object named {retired_index if live_index else keep} is in the way of the index "
                         "renames; nothing changed")
    return _names(conn, cfg, src, new)


Record = Callable[[psycopg.Connection, dict[str, dict[str, Any]]], None]
CATCH_UP_LEFT = 10  # the catch-up before the lock repeats (at most 3 rounds) while a source has more left


def swap(cfg: Config, url: str, space_name: str, *, lock_timeout_s: float = 2.0,
         batch_rows: int = BATCH_ROWS, record: Record | None = None) -> dict[str, Any]:
    """Make `space_name` the live `embedding` of every source in one short transaction.

    Before the lock, in short batches: catch the staged columns up and copy the live vectors
    into their space's store, for the rows the change queue names. Then: lock all source tables
    (waiting at most lock_timeout_s), check the rows queued since, mark live rows with no current
    vector NULL + 'pending', rename columns and indexes, record the mapping, commit. Returns
    lock_ms (lock acquired to commit), rows checked and caught up in the lock per source. Refuses with one line and changes no schema when not staged,
    not indexed, already live, or when writers hold a table past the timeout. `record(conn,
    per_source)` runs inside the swap's transaction, so what it writes (embed_store.serving, the
    event) commits with the renames or not at all.
    """
    space = cfg.space(space_name)
    with inplace_run.session(url) as conn:
        return _swap(conn, cfg, space, lock_timeout_s=lock_timeout_s, batch_rows=batch_rows, record=record)


def _swap(conn: psycopg.Connection, cfg: Config, new: Space, *, lock_timeout_s: float,
          batch_rows: int, record: Record | None = None) -> dict[str, Any]:
    if lock_timeout_s <= 0:
        raise EmbedError("lock_timeout_s must be positive: an unbounded wait would queue Honcho behind the swap")
    plans = [_plan(conn, cfg, src, new) for src in inplace_run.sources_of(cfg)]
    dims = {p.new.dims for p in plans}
    if len(dims) != 1:
        raise EmbedError(f"the staged columns would leave the tables at different dims {sorted(dims)}; nothing changed")
    pre = {p.source.name: _catch_up(conn, cfg, p, batch_rows=batch_rows, lock_s=lock_timeout_s) for p in plans}
    _settle(conn, plans, pre, batch_rows=batch_rows, lock_s=lock_timeout_s)
    per: dict[str, dict[str, Any]] = {}
    t_wait = time.monotonic()
    t_locked = t_wait
    try:
        with conn.transaction():
            conn.execute(inplace_run.set_timeout(lock_timeout_s))
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(Target(p.source, new).src for p in plans)))
            t_locked = time.monotonic()
            pause_point("inplace_locked")
            if [_plan(conn, cfg, p.source, new) for p in plans] != plans:
                raise Busy("the tables changed while the swap waited for its lock; nothing changed: retry")
            for p in plans:
                per[p.source.name] = _swap_locked(conn, p, batch_rows)
            if record is not None:
                record(conn, per)
            pause_point("inplace_swap_commit")
        lock_ms = round((time.monotonic() - t_locked) * 1000, 1)
    except inplace_run.BUSY:
        tables = ", ".join(p.source.table for p in plans)
        raise Busy(inplace_run.busy_message(tables, lock_timeout_s) + "; nothing changed") from None
    for p in plans:
        t = Target(p.source, new)
        live_with, live_without, skipped = conn.execute(inplace_sql.coverage(t, p.live)).fetchone()
        per[p.source.name].update(pre[p.source.name], rows_with_vector=live_with, rows_without_vector=live_without,
                                  rows_skipped=skipped)
    return {
        "space": new.name, "fingerprint": new.fingerprint, "dims": new.dims,
        "lock_ms": lock_ms, "lock_wait_ms": round((t_locked - t_wait) * 1000, 1),
        "rows_caught_up": sum(s["rows_caught_up_in_lock"] for s in per.values()),
        "rows_checked_in_lock": sum(s["rows_checked_in_lock"] for s in per.values()),
        "rows_marked_pending": sum(s["rows_marked_pending"] for s in per.values()),
        "rows_without_vector": sum(s["rows_without_vector"] for s in per.values()),
        "sources": per,
    }


def _catch_up(conn: psycopg.Connection, cfg: Config, p: _Plan, *, batch_rows: int, lock_s: float) -> dict[str, Any]:
    """Before the lock, in short transactions: the staged column, and the live column's records,
    made current for every row the change queue names (embed.cutover.inplace_queue); a full pass
    first for a space whose queue does not count yet (staged before the trigger existed)."""
    busy = inplace_run.busy_message(p.source.table, lock_s)
    since = _track(conn, cfg, p.source, lock_s=lock_s, attempts=1, busy=busy)
    new, old = Target(p.source, p.new), Target(p.source, p.old)
    states = "sync_state" in p.sync_cols
    caught = adopted = 0
    full = []
    if not inplace_queue.complete(conn, p.source, p.new.fingerprint):
        caught, _ = inplace_run.batched(conn, new, inplace_run.refresher(new, p.staged, states), batch_rows=batch_rows,
                                        lock_s=lock_s, attempts=1, busy=busy)
        inplace_queue.mark_complete(conn, p.source, p.new.fingerprint, since)
        full.append(p.new.name)
    if not inplace_queue.complete(conn, p.source, p.old.fingerprint):
        adopted = _adopt(conn, cfg, p.source, since, batch_rows=batch_rows, lock_s=lock_s, attempts=1, busy=busy)
        full.append(p.old.name)
    kw: dict[str, Any] = {"batch_rows": batch_rows, "lock_s": lock_s, "attempts": 1, "busy": busy}
    staged = inplace_run.drain(conn, new, inplace_run.checker(new, p.staged, states), **kw)
    live = inplace_run.drain(conn, old, inplace_run.adopter(old, p.live, inplace_sql.trusted(p.live, states), states), **kw)
    return {"rows_caught_up": caught + staged.a, "live_rows_adopted": adopted + live.a,
            "rows_checked_before_lock": staged.rows_checked, "full_pass_before_lock": full}


def _settle(conn: psycopg.Connection, plans: Sequence[_Plan], pre: dict[str, dict[str, Any]], *,
            batch_rows: int, lock_s: float) -> None:
    """What Honcho wrote while the sources caught up one after another, drained across every
    source (at most 3 rounds) until none has more than CATCH_UP_LEFT rows left for the lock: a
    source caught up first piles up its writes while the next one catches up (measured: 1,368 of
    a swap lock's 1,615 rows were documents, caught up before message_embeddings)."""
    for _ in range(3):
        most = 0
        for p in plans:
            new = Target(p.source, p.new)
            again = inplace_run.drain(
                conn, new, inplace_run.checker(new, p.staged, "sync_state" in p.sync_cols), changed=True,
                batch_rows=batch_rows, lock_s=lock_s, attempts=1, busy=inplace_run.busy_message(p.source.table, lock_s))
            done = pre[p.source.name]
            done["rows_checked_before_lock"] += again.rows_checked
            done["rows_caught_up"] += again.a
            most = max(most, again.rows_checked)
        if most <= CATCH_UP_LEFT:
            return


def _swap_locked(conn: psycopg.Connection, p: _Plan, batch_rows: int) -> dict[str, Any]:
    """Inside the lock: the rows the change queue names (changed since the last check, or still
    without a vector: never a scan of the table), the renames, the bookkeeping of one source."""
    t = Target(p.source, p.new)
    marks: list[tuple[str, str]] = []

    def make(where: Sequence[sql.Composable]) -> inplace_run.Work:
        def work(c: psycopg.Connection) -> tuple[int, int]:
            filled, cleared, m = inplace_run.check(c, t, p.staged, where, states="sync_state" in p.sync_cols)
            marks.extend(m)
            return filled, cleared
        return work

    checked = inplace_run.drain(conn, t, make, batch_rows=batch_rows, locked=True)
    caught, cleared = checked.a, checked.b
    pending = failed = 0
    if marks:
        pending, failed = conn.execute(inplace_sql.mark_unembedded(t, p.staged, set(p.sync_cols)),
                                       ([i for i, _ in marks], [s for _, s in marks])).fetchone()
    for stmt in renames(p):
        conn.execute(stmt)
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND column_name = %s").format(COLUMNS),
                 (p.source.name, p.staged))
    for stmt, params in (inplace_sql.record_column(p.source.name, p.live, p.new.fingerprint, p.old.fingerprint),
                         inplace_sql.record_column(p.source.name, p.retired, p.old.fingerprint)):
        conn.execute(stmt, params)
    return {
        "table": p.source.table, "from_fp": p.old.fingerprint, "from_space": p.old.name, "to_fp": p.new.fingerprint,
        "old_column": p.retired, "live_index": p.keep_name, "old_index": p.retired_index if p.live_index else None,
        "rows_checked_in_lock": checked.rows_checked, "rows_caught_up_in_lock": caught, "rows_cleared_in_lock": cleared,
        "rows_marked_pending": pending, "rows_marked_failed": failed,
    }


# ------------------------------------------------------------------------------- back and fill
def swap_back(cfg: Config, url: str, to: Space, *, lock_timeout_s: float = 2.0, embed_missing: bool = True,
              batch_rows: int = BATCH_ROWS, record: Record | None = None) -> dict[str, Any]:
    """Swap the live columns back to space `to` (what they held before the last cutover).

    BEFORE the swap (outside the lock) rows written since the cutover are embedded with the
    old space's own model through the one write path (`embed sync` of that space into its
    store table); the swap's catch-up then copies their vectors into the old column, for the
    rows the change queue names (every write since the cutover: the parked column's space is
    queued too), and checks inside the lock only the rows written after it. Rows that appear
    between that sync and the swap are left NULL and 'pending' (reported as rows_without_vector);
    `fill_column` of the same space (`embed fill-column`), called right after, fills them (as
    would Honcho's reconciler once it runs with the old settings).
    """
    with inplace_run.session(url) as conn:
        srcs = _columns_of(conn, cfg, to, None, "in-place rollback")  # every refusal before anything is embedded
        synced = _sync(cfg, url, to, [src for src, _, _ in srcs]) if embed_missing else None
        out = _swap(conn, cfg, to, lock_timeout_s=lock_timeout_s, batch_rows=batch_rows, record=record)
    return {**out, "embedded_before_swap": synced}


@dataclass(frozen=True)
class FilledSource(Result):
    column: str
    live: bool  # the column Honcho reads (only NULLs are filled) or a tagged one (made current)
    rows_filled: int
    rows_cleared: int
    rows_with_vector: int
    rows_without_vector: int
    rows_skipped: int
    sync: dict[str, Any] | None = None  # the `embed sync` pass that ran first (embed_missing)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.sync is None:
            del out["sync"]
        return out


@dataclass(frozen=True)
class Filled(PerSource):
    sources: dict[str, FilledSource]
    TOTALS = ("rows_filled", "rows_without_vector")

    @property
    def rows_filled(self) -> int:
        return self.total("rows_filled")

    @property
    def rows_without_vector(self) -> int:
        return self.total("rows_without_vector")


def fill_column(cfg: Config, url: str, space_name: str, *, sources: list[str] | None = None,
                embed_missing: bool = True, batch_rows: int = BATCH_ROWS) -> Filled:
    """Give live rows whose column for `space_name` is NULL or stale that space's vector.

    embed_missing: first one `embed sync` pass of the space (embeds what its store lacks with
    its own model). Then the column is filled from the store: a tagged column is made current
    (stale values are replaced or cleared); the live column, which Honcho owns, only gets
    vectors where it is NULL (those rows become 'synced').
    """
    with inplace_run.session(url) as conn:
        return _fill(conn, cfg, url, registry.by_name(conn, cfg, space_name), sources, embed_missing=embed_missing,
                     batch_rows=batch_rows)


def _fill(conn: psycopg.Connection, cfg: Config, url: str, space: Space, names: list[str] | None, *,
          embed_missing: bool, batch_rows: int) -> Filled:
    plan = _columns_of(conn, cfg, space, names, "fill-column")
    synced = _sync(cfg, url, space, [src for src, _, _ in plan]) if embed_missing else None
    out: dict[str, FilledSource] = {}
    for src, col, live in plan:
        t = Target(src, space)
        if live:
            cols = set(inplace_sql.has_columns(conn, src, SYNC_COLUMNS))
            filled, cleared = inplace_run.batched(
                conn, t, lambda lo, hi, t=t, col=col, c=cols: inplace_run.one(
                    inplace_sql.fill_live(t, col, c, inplace_sql.bounds(t, lo, hi))),
                batch_rows=batch_rows)
        else:
            states = bool(inplace_sql.has_columns(conn, src, ["sync_state"]))
            filled, cleared = inplace_run.batched(conn, t, inplace_run.refresher(t, col, states), batch_rows=batch_rows)
        with_vec, without, skipped = conn.execute(inplace_sql.coverage(t, col)).fetchone()
        out[src.name] = FilledSource(col, live, filled, cleared, with_vec, without, skipped,
                                     synced.get(src.name) if synced else None)
    return Filled(space.name, space.fingerprint, out)


def _columns_of(conn: psycopg.Connection, cfg: Config, space: Space, names: list[str] | None, step: str
                ) -> list[tuple[Source, str, bool]]:
    """Per source, the column that holds `space` and whether it is the live one; checked for
    every source first, so that a refusal comes before anything is embedded."""
    rec = recorded(conn)
    plan: list[tuple[Source, str, bool]] = []
    for src in inplace_run.sources_of(cfg, names):
        inplace_run.check_table(conn, src, step)
        live = live_fp(conn, cfg, src) == space.fingerprint
        col = live_column(src) if live else inplace_sql.tagged_column(src, space)
        if not live and (col not in columns(conn, src) or (src.name, col) not in rec):
            raise EmbedError(f"no column of {src.table} holds space {space.name}: stage it first")
        plan.append((src, col, live))
    return plan


def _sync(cfg: Config, url: str, space: Space, srcs: Sequence[Source]) -> dict[str, dict[str, Any]]:
    """One `embed sync` pass of the space over these sources (what its store lacks, embedded with
    its own model); per source its counts."""
    from embed.fill.backfill import Options
    from embed.fill.sync import sync_once

    res = sync_once(cfg, url, space, sources=[s.name for s in srcs], opts=Options(progress=False, build_index=False))
    return {n: {k: s[k] for k in ("rows_written", "rows_embedded", "rows_reused", "skipped")}
            for n, s in res.sources.items()}


# ------------------------------------------------------------------------------ state, settings
def state(cfg: Config, url: str) -> dict[str, Any]:
    """Which space each source's live column holds now, and every tagged column with its index."""
    with connect(url) as conn:
        ready = store.is_initialized(conn) and conn.execute(
            "SELECT to_regclass('embed_store.inplace_columns') IS NOT NULL").fetchone()[0]
        rec = recorded(conn) if ready else {}
        out: dict[str, Any] = {}
        for src in inplace_run.sources_of(cfg):
            live = live_column(src)
            _, table = src.schema_table
            cols, idx = columns(conn, src), inplace_sql.indexes(conn, src)
            live_fp, previous = rec.get((src.name, live), (cfg.legacy_space.fingerprint, None))
            tagged = []
            for name in sorted(c for c in cols if c != live):
                fp = (rec.get((src.name, name)) or (None, None))[0]
                ix = idx.get(inplace_sql.index_name(table, name))
                tagged.append({"column": name, "space_fp": fp, "space": registry.name_of(conn if ready else None, cfg, fp),
                               "dims": cols[name].dims, "index": ix.name if ix else None,
                               "index_valid": ix.valid if ix else None})
            li = inplace_sql.hnsw_on(idx, live, inplace_sql.index_name(table, live))
            out[src.name] = {
                "table": src.table, "live_column": live, "live_fp": live_fp,
                "live_space": registry.name_of(conn if ready else None, cfg, live_fp),
                "live_dims": cols[live].dims if live in cols else None,
                "live_index": {"name": li.name, "valid": li.valid} if li else None,
                "previous_fp": previous, "previous_space": registry.name_of(conn if ready else None, cfg, previous),
                "columns": tagged,
            }
    return {"sources": out}


