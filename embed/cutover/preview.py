"""`embed cutover --dry-run` and `embed rollback --dry-run`: what the switch would do now, in
order, with the lock each statement takes; no lock taken, no gate recorded, nothing changed.

In place: staging (the tagged column, its batched fill from the store, its HNSW index built
CONCURRENTLY) where it is not done yet, else the swap's catch-up of the rows the change queue
names (a cutover staged ahead), a rollback's catch-up of rows written since, then the
swap (LOCK TABLE ... ACCESS EXCLUSIVE, the renames inplace.renames runs); in both modes the
views SQLMesh's plan re-points (its own plan, built as the switch builds it, not applied).
A cutover's preview lists the gates that fail now as its blockers.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from embed import gates, mesh
from embed.config import Config
from embed.cutover import inplace, inplace_queue, inplace_sql, switch
from embed.cutover.inplace_run import BATCH_ROWS
from embed.db.connection import connect
from embed.preview import (
    ACCESS_EXCLUSIVE,
    COPY_ROWS_PER_S,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    VECTOR_ROW_BYTES,
    Preview,
    Statement,
    text,
    texts_per_s,
)
from embed.spaces import Space
from embed.store import serving
from embed.store.location import columns
from embed.store.target import Target


def switch_preview(cfg: Config, url: str, kind: str, space_name: str | None = None, *, mode: str = switch.VIEW,
                   sources: list[str] | None = None) -> Preview:
    """The dry run of `embed cutover --space S --mode M` (kind 'cutover') or `embed rollback`."""
    switch._ready(cfg, url)
    with connect(url) as conn:
        states = serving.read(conn, cfg)
    if kind == "cutover":
        space = cfg.space(space_name or "")
        to = {s: space for s in switch._names(cfg, sources, mode) if states[s].space_fp != space.fingerprint}
    else:
        back = {s: cfg.space_by_fp(states[s].from_fp or states[s].space_fp)
                for s in ([cfg.source(s).name for s in sources] if sources else list(states))}
        to = {s: sp for s, sp in back.items() if sp.fingerprint != states[s].space_fp}
        mode = next((states[s].mode for s in to), None) or switch.VIEW
    label = ", ".join(sorted({sp.name for sp in to.values()})) or space_name or ", ".join(
        sorted({cfg.label(st.space_fp) for st in states.values()}))  # nothing to do: what production reads
    if not to:
        return Preview(kind, label, {}, (), 0.0, "production reads it already: nothing to do", 0, 0, None, None,
                       None, None)
    if mode == switch.INPLACE:
        switch._names(cfg, list(to), switch.INPLACE)  # Honcho's tables move together
    target = next(iter(to.values()))
    stmts: list[Statement] = []
    rows: dict[str, int] = {}
    embed_rows = copy_rows = added = 0
    with connect(url) as conn:
        blockers = tuple(f"{g['source']}.{g['gate']} ({g['measured']})" for g in gates.evaluate(conn, cfg, target, list(to))
                         if not g["passed"]) if kind == "cutover" else ()
        if mode == switch.INPLACE:
            plans = []
            ahead = inplace.swappable(cfg, url, target.name, list(to))  # staged (a rollback: parked)
            for s in to:
                t = Target(cfg.source(s), target)
                col = inplace_sql.tagged_column(t.source, target)
                have = col in columns(conn, t.source)
                if kind == "rollback":  # the old space's rows written since: embedded with its own model first
                    n = conn.execute(t.pending_query(count=True)).fetchone()[0] if t.has_store_table(conn) else 0
                    embed_rows += n
                if not have:
                    stmts.append(Statement(text(conn, inplace_sql.add_column(t, col)), f"{ACCESS_EXCLUSIVE} on "
                                           f"{t.source.table}"))
                    added += _column_bytes(conn, t)
                if ahead and inplace_queue.complete(conn, t.source, target.fingerprint):  # no count of the table
                    stale = inplace_queue.queued(conn, t.source, target.fingerprint)
                    how = f"the swap's catch-up, before its lock: the {stale} row(s) the change queue names"
                else:
                    live = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(t.src, t.live)).fetchone()[0]
                    batches = f"{BATCH_ROWS} ids a batch ({-(-live // BATCH_ROWS)} batches)"
                    stale = conn.execute(sql.SQL("SELECT count(*) FROM ({}) AS x").format(
                        inplace_sql.stale(t, col))).fetchone()[0] if have else live
                    how = (f"the swap's catch-up, before its lock: every row, {batches} (staged before the change "
                           "queue counted)" if ahead else f"per batch: first one row a page, {BATCH_ROWS} pages a "
                           f"batch, in passes (HOT updates), then a check per batch of {batches}")
                rows[s] = int(stale)
                copy_rows += int(stale)
                stmts.append(Statement(text(conn, inplace_sql.refresh(t, col)), f"{ROW_EXCLUSIVE} on {t.source.table}",
                                       how))
                if ahead:  # staged: no index to build, no VACUUM
                    plans.append(inplace._names(conn, cfg, t.source, target))
                    continue
                _, table = t.source.schema_table
                index = inplace_sql.index_name(table, col)
                if index not in inplace_sql.indexes(conn, t.source) or not inplace_sql.indexes(conn, t.source)[index].valid:
                    stmts.append(Statement(text(conn, inplace_sql.create_index(t, col, index, cfg.index_params)),
                                           f"{SHARE_UPDATE_EXCLUSIVE} on {t.source.table}", "once, while Honcho writes"))
                stmts.append(Statement(text(conn, sql.SQL("VACUUM (ANALYZE) {}").format(t.src)),
                                       f"{SHARE_UPDATE_EXCLUSIVE} on {t.source.table}",
                                       "once, after the fill (plain, never FULL: the replaced row versions "
                                       "become free space; skipped with a line if not the owner)"))
                plans.append(inplace._names(conn, cfg, t.source, target))
            tables = sql.SQL(", ").join(Target(p.source, target).src for p in plans)
            stmts.append(Statement(text(conn, sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables)),
                                   f"{ACCESS_EXCLUSIVE} on {', '.join(p.source.table for p in plans)}",
                                   "once, held until the renames commit (lock_timeout: --lock-timeout)"))
            stmts += [Statement(text(conn, r), "(inside that lock)") for p in plans for r in inplace.renames(p)]
        elif kind == "rollback":
            for s, sp in to.items():
                t = Target(cfg.source(s), sp)
                if sp.fingerprint != cfg.legacy_space.fingerprint and t.has_store_table(conn):
                    rows[s] = conn.execute(t.pending_query(count=True)).fetchone()[0]
                    embed_rows += rows[s]
        rate = texts_per_s(conn, target)
    stmts += _views(cfg, url, states, to, mode)
    seconds = embed_rows / rate if rate and embed_rows else 0.0
    seconds += copy_rows / COPY_ROWS_PER_S
    basis = (f"{embed_rows} row(s) to embed at the smoke's {rate:g} texts/s, " if embed_rows and rate else
             f"{embed_rows} row(s) to embed (no smoke measured the rate), " if embed_rows else "") + (
        f"{copy_rows} vector(s) to copy at ~{COPY_ROWS_PER_S:g}/s, plus SQLMesh's plan (a few seconds)")
    return Preview(kind, label, rows, tuple(stmts), round(seconds, 1), basis, added, 0, None, None, None, None,
                   blockers)


def _column_bytes(conn: psycopg.Connection, t: Target) -> int:
    """A staged column's vectors and its HNSW index, for the rows the store holds vectors of."""
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.store)).fetchone()[0]
    return int(n) * (4 * t.space.dims + VECTOR_ROW_BYTES) * 2


def _views(cfg: Config, url: str, states: dict[str, serving.Serving], to: dict[str, Space],
           mode: str) -> list[Statement]:
    """The view statements of the switch's own SQLMesh plan (built, not applied)."""
    after = switch._aimed(states, to) if mode == switch.VIEW else switch._swapped(
        cfg, {s: states[s] for s in to}, next(iter(to.values())))
    with mesh.Switch(cfg, url, serving.render({**states, **after})) as sw:
        out = [Statement(f"CREATE VIEW {_view(s.table_name())} (SQLMesh builds a new version of {_view(s.name)})",
                         "- (a new object: nothing waits)", "once")
               for s in sorted(sw.plan.new_snapshots, key=lambda s: s.name) if not s.is_external]
        out += [Statement(f"CREATE OR REPLACE VIEW {_view(name)} AS SELECT * FROM {_view(new.table_name())}",
                          f"{ACCESS_EXCLUSIVE} on {_view(name)}", "once (SQLMesh's virtual layer)")
                for name, (new, _) in sorted(sw.plan.context_diff.modified_snapshots.items())]
    return out


def _view(fqn: str) -> str:
    return ".".join(fqn.replace('"', "").split(".")[-2:])
