"""`embed status`: how far each space is from covering each source, read from the database.

Per (source, space): live source rows, rows with a current vector (content hash matches),
stale vectors (the row was edited since), orphans (the row is gone or soft-deleted), rows
pending, skip records by reason, coverage overall and per workspace (the source's first
tenant column), the last run (and whether its process is still alive), the unfinished plan,
and the HNSW index. A space held in a column of the source table (the legacy space, or after an
in-place swap the live one) is counted in that column (embed.store.location). Counts only: no text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from embed import gates, store
from embed.config import Config
from embed.db.connection import connect
from embed.db.idents import column
from embed.errors import NotInitialized
from embed.fill.leases import LEASES, run_alive_sql
from embed.honcho.settings import honcho_settings
from embed.result import Result
from embed.spaces import Space
from embed.store import serving
from embed.store.indexes import column_indexes
from embed.store.location import LIVE, check_legacy, locate
from embed.store.target import Target


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 100.0


@dataclass(frozen=True)
class Coverage(Result):
    """Live rows and how many have a current vector (of one workspace, or of the whole pair)."""

    live_rows: int
    current: int
    stale: int  # a vector for content the row no longer has
    skipped: int  # a skip record for its current content (blank, rejected)
    workspace: str | None = None

    @property
    def pending(self) -> int:
        return self.live_rows - self.current - self.skipped

    @property
    def coverage_pct(self) -> float:
        return _pct(self.current + self.skipped, self.live_rows)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pending": self.pending, "coverage_pct": self.coverage_pct}


@dataclass(frozen=True)
class LastRun(Result):
    id: int
    kind: str
    status: str  # ok, failed, interrupted, running, or abandoned (its process died)
    started_at: str | None
    finished_at: str | None
    actor: str
    rows_written: int | None
    skipped: dict[str, int] | None


@dataclass(frozen=True)
class StoreState(Result):
    """What only a store table has: its rows, orphans, skip reasons, runs, plans and index."""

    stored: int
    orphans: int  # vectors of rows gone or soft-deleted
    skipped_by_reason: dict[str, int]
    last_run: LastRun | None
    open_plans: dict[str, dict[str, int]] | None  # 'kind#gen' -> chunks, done
    index: dict[str, Any]  # hnsw: valid | invalid | missing | building (+ name or build progress)


@dataclass(frozen=True)
class PairStatus(Result):
    """Everything `embed status` says about one (source, space). kind: 'store' (embed's table),
    'column' (a column of the source table holds the space), 'legacy' (a source without one)."""

    source: str
    space: str
    fingerprint: str
    kind: str
    state: str = "not in database"
    note: str | None = None  # why there is nothing to count
    table: str | None = None
    column: str | None = None
    live: bool | None = None  # kind 'column': the column the application reads
    totals: Coverage | None = None
    workspaces: tuple[Coverage, ...] = ()
    store: StoreState | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "space": self.space, "fingerprint": self.fingerprint,
                               "kind": self.kind, "state": self.state}
        if self.note is not None:
            return {**out, "note": self.note, **({"table": None} if self.kind == "store" else {})}
        out["table"] = self.table
        if self.kind == "column":
            out.update(column=self.column, live=self.live)
        if self.totals is not None:
            out.update({k: v for k, v in self.totals.as_dict().items() if k != "workspace"})
        out["workspaces"] = [w.as_dict() for w in self.workspaces]
        if self.store is not None:
            out.update(self.store.as_dict())
        return out


def _store_counts(conn: psycopg.Connection, t: Target) -> list[Coverage]:
    """One row per workspace: live, current, stale, skipped (current), blank."""
    rows = conn.execute(
        sql.SQL(
            """SELECT s.ws,
                  count(*) AS live,
                  count(*) FILTER (WHERE v.content_sha256 = h.sha) AS current,
                  count(*) FILTER (WHERE v.source_id IS NOT NULL AND v.content_sha256 <> h.sha) AS stale,
                  count(*) FILTER (WHERE k.source_id IS NOT NULL
                                   AND v.content_sha256 IS DISTINCT FROM h.sha) AS skipped
               FROM ({rows}) AS s
               CROSS JOIN LATERAL (SELECT {sha} AS sha) AS h
               LEFT JOIN {store} AS v ON v.source_id = s.id
               LEFT JOIN {skipped} AS k ON k.source = %s AND k.space_fp = %s
                    AND k.source_id = s.id::text AND k.content_sha256 = h.sha
               GROUP BY s.ws ORDER BY s.ws NULLS LAST"""
        ).format(rows=t.live_rows(tenant=True), sha=t.sha(), store=t.store, skipped=t.skipped),
        (t.source.name, t.space.fingerprint),
    ).fetchall()
    return [Coverage(live, current, stale, skipped, ws) for ws, live, current, stale, skipped in rows]


def _column_counts(conn: psycopg.Connection, t: Target, col: str) -> list[Coverage]:
    """Per workspace: live rows, and rows with a vector in the source column `col`."""
    vec = column(col)
    ws = column(t.source.tenant_columns[0]) if t.source.tenant_columns else None
    rows = conn.execute(
        sql.SQL(
            "SELECT {ws} AS ws, count(*), count(*) FILTER (WHERE {vec} IS NOT NULL) FROM {src}"
            " WHERE ({live}) GROUP BY 1 ORDER BY 1 NULLS LAST"
        ).format(ws=sql.SQL("{}::text").format(ws) if ws else sql.SQL("NULL::text"), vec=vec, src=t.src, live=t.live)
    ).fetchall()
    return [Coverage(n, c, 0, 0, w) for w, n, c in rows]


def _summarize(per_ws: list[Coverage]) -> Coverage:
    return Coverage(*(sum(getattr(r, k) for r in per_ws) for k in ("live_rows", "current", "stale", "skipped")))


def _index_state(conn: psycopg.Connection, t: Target) -> dict[str, Any]:
    found = column_indexes(conn, t, "embedding", "hnsw")
    building = conn.execute(
        "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE relid = to_regclass(%s)",
        (f"{store.SCHEMA}.{t.table}",),
    ).fetchone()
    if building:
        return {"hnsw": "building", "phase": building[0], "tuples_done": building[1], "tuples_total": building[2]}
    valid = [n for n, ok in found if ok]
    if valid:
        return {"hnsw": "valid", "name": valid[0]}
    return {"hnsw": "invalid" if found else "missing", "name": found[0][0] if found else None}


def _last_run(conn: psycopg.Connection, t: Target) -> LastRun | None:
    row = conn.execute(
        sql.SQL(
            "SELECT r.id, r.kind, r.status, r.started_at, r.finished_at, r.actor, {alive},"
            " r.stats->'rows_written', r.stats->'skipped'"
            " FROM {schema}.runs AS r WHERE r.source = %s AND r.space_fp = %s ORDER BY r.id DESC LIMIT 1"
        ).format(alive=run_alive_sql(), schema=sql.Identifier(store.SCHEMA)),
        (t.source.name, t.space.fingerprint),
    ).fetchone()
    if row is None:
        return None
    rid, kind, status, started, finished, actor, alive, written, skipped = row
    if status == "running" and not alive:
        status = "abandoned"  # its process died without recording an end
    return LastRun(rid, kind, status, started.isoformat() if started else None,
                   finished.isoformat() if finished else None, actor, written, skipped)


def _plan(conn: psycopg.Connection, t: Target) -> dict[str, Any] | None:
    if conn.execute("SELECT to_regclass(%s)", (f"{store.SCHEMA}.leases",)).fetchone()[0] is None:
        return None
    rows = conn.execute(
        sql.SQL(
            "SELECT kind, gen, count(*), count(done_at) FROM {} WHERE source = %s AND space_fp = %s"
            " GROUP BY kind, gen HAVING count(*) > count(done_at) ORDER BY kind, gen"
        ).format(LEASES),
        (t.source.name, t.space.fingerprint),
    ).fetchall()
    return {f"{k}#{g}": {"chunks": n, "done": d} for k, g, n, d in rows} or None


def _skip_reasons(conn: psycopg.Connection, t: Target) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT reason, count(*) FROM {} WHERE source = %s AND space_fp = %s GROUP BY reason").format(
            t.skipped
        ),
        (t.source.name, t.space.fingerprint),
    ).fetchall()
    return dict(rows)


def pair_status(conn: psycopg.Connection, cfg: Config, t: Target) -> PairStatus:
    """Everything `embed status` says about one (source, space): a space held in a column of the
    source table (the legacy one; after an in-place swap, the live one) is counted there."""
    who = (t.source.name, t.space.name, t.space.fingerprint)
    if t.space.fingerprint == cfg.legacy_space.fingerprint and not t.source.vector_column:
        return PairStatus(*who, "legacy", note="source has no vector column")
    loc = locate(conn, cfg, t.source, t.space)
    if loc.in_source:
        per_ws = _column_counts(conn, t, loc.column)
        return PairStatus(*who, "column", table=t.source.table, column=loc.column, live=loc.kind == LIVE,
                          totals=_summarize(per_ws), workspaces=tuple(per_ws) if t.source.tenant_columns else ())
    if not t.has_store_table(conn):
        return PairStatus(*who, "store", note="no store table: run `embed init`")
    per_ws = _store_counts(conn, t)
    stored = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.store)).fetchone()[0]
    orphans = conn.execute(
        sql.SQL("SELECT count(*) FROM {store} AS v WHERE NOT EXISTS (SELECT 1 FROM ({rows}) AS s WHERE s.id = v.source_id)")
        .format(store=t.store, rows=t.live_rows())
    ).fetchone()[0]
    return PairStatus(*who, "store", table=f"{store.SCHEMA}.{t.table}", totals=_summarize(per_ws),
                      workspaces=tuple(per_ws) if t.source.tenant_columns else (),
                      store=StoreState(stored, orphans, _skip_reasons(conn, t), _last_run(conn, t), _plan(conn, t),
                                       _index_state(conn, t)))


@dataclass(frozen=True)
class ServingLine(Result):
    """One source: what production reads, what the views serve, and what settles a switch."""

    reads: str
    fingerprint: str
    mode: str  # view, honcho-inplace, or initial (no switch yet)
    views: str
    legacy_column: str | None
    rollback_to: str | None
    next: str | None  # the command that settles an interrupted switch
    verify: str | None = None  # the newest `embed verify` of what production reads found offenders: red


@dataclass(frozen=True)
class NextStep(Result):
    """What moves one (source, space) on: the command to run and why, or (command None) what to
    wait for; `ready` when the space passes every gate `embed status` can judge from SQL."""

    source: str
    space: str
    command: str | None
    why: str
    ready: bool = False

    def line(self) -> str:
        if self.ready:
            return f"{self.space}: ready: `{self.command}` ({self.why})"
        return f"{self.space}: " + (f"run `{self.command}`: {self.why}" if self.command else self.why)


@dataclass(frozen=True)
class Status(Result):
    serving: dict[str, ServingLine]
    pairs: tuple[PairStatus, ...]
    honcho_settings: tuple[str, ...]  # .env blocks owed to Honcho (a switch that did not deliver them)
    next: dict[str, tuple[NextStep, ...]] = field(default_factory=dict)  # per source, one per space to move on

    def pair(self, source: str, space: str) -> PairStatus:
        return next(p for p in self.pairs if (p.source, p.space) == (source, space))

    def as_dict(self) -> dict[str, Any]:
        return {"serving": {n: s.as_dict() for n, s in self.serving.items()},
                "pairs": [p.as_dict() for p in self.pairs], "honcho_settings": list(self.honcho_settings),
                "next": {n: [x.as_dict() for x in steps] for n, steps in self.next.items()}}


def status(
    cfg: Config, url: str, *, spaces: list[str] | None = None, sources: list[str] | None = None
) -> Status:
    """What production reads per source (embed_store.serving), the coverage of every (source,
    space) pair (or the named ones), each space's state, and the Honcho settings while Honcho's
    column holds a space whose settings no switch finished delivering."""
    chosen: list[Space] = [cfg.space(s) for s in spaces] if spaces else list(cfg.spaces.values())
    names = sources or list(cfg.sources)
    with connect(url) as conn:
        check_legacy(conn, cfg)
        if not store.is_initialized(conn):
            raise NotInitialized()
        states = store.space_states(conn)
        reads = serving.read(conn, cfg)
        pairs = [pair_status(conn, cfg, Target(cfg.source(n), sp)) for sp in chosen for n in names]
        bad = {n: _verify_failed(conn, cfg, reads[n]) for n in names}
        nexts = {n: tuple(x for p in pairs if p.source == n and (x := next_step(conn, cfg, reads[n], p))) for n in names}
    untold = sorted({st.space_fp for n, st in reads.items() if n in names and st.untold})
    return Status({n: replace(_serving(cfg, reads[n]), verify=bad[n]) for n in names},
                  tuple(replace(p, state=states.get(p.fingerprint, "not in database")) for p in pairs),
                  tuple(honcho_settings(cfg, url, cfg.space_by_fp(fp)).env_block() for fp in untold), nexts)


# the command that makes a failing gate pass ({s}: the space, {legacy}: the legacy space); None: no
# command does (the candidate retrieves worse: a judgement, not a step)
GATE_FIX = {
    "smoke": "embed smoke --space {s}", "coverage": "embed sync --space {s}", "no_orphans": "embed sync --space {s}",
    "shadow_fresh": "embed shadow --baseline {legacy} --candidate {s}", "shadow_ndcg": None,
    "shadow_ann_recall": "embed shadow --baseline {legacy} --candidate {s}", "backup": "embed backup --out DIR", "verify": "embed verify --space {s} --where endpoint --sample 200",
}


def next_step(conn: psycopg.Connection, cfg: Config, reads: serving.Serving, p: PairStatus) -> NextStep | None:
    """The next command for one (source, space): init, backfill, sync, then the first gate that
    fails (smoke, shadow, backup, ...), then `embed gate`. None for the legacy space production
    no longer reads (rollback's target until it is retired) and for a space production reads
    whose vectors are all there."""
    sp = cfg.space(p.space)

    def here(cmd: str | None, why: str, ready: bool = False) -> NextStep:
        return NextStep(p.source, p.space, cmd, why, ready)

    c = p.totals
    if p.fingerprint == reads.space_fp:
        if c is None or c.pending <= 0 or sp.fingerprint == cfg.legacy_space.fingerprint:
            return None  # (the legacy space's column is the application's to fill)
        cmd = f"embed fill-column --space {p.space}" if p.kind == "column" else f"embed sync --space {p.space}"
        return here(cmd, f"production reads it and {c.pending} live row(s) have no current vector")
    if p.kind != "store":
        return None  # the legacy space in the application's own column: rollback's target
    if p.note is not None or c is None or p.store is None:
        return here("embed init", p.note or "no store table")
    run = p.store.last_run
    if run is not None and run.status == "running":
        return here(None, f"wait: {run.kind} run #{run.id} is running ({run.actor})")
    if p.store.stored == 0 and c.pending > 0:
        return here(f"embed backfill --space {p.space}", f"{c.pending} row(s) to embed")
    if c.pending > 0:
        return here(f"embed sync --space {p.space}", f"{c.pending} row(s) behind")
    if p.store.orphans > 0:
        return here(f"embed sync --space {p.space}", f"{p.store.orphans} vector(s) of deleted rows to remove")
    failed = [g for g in gates.evaluate(conn, cfg, sp, [p.source]) if not g["passed"]]
    if not failed:
        return here(f"embed gate --space {p.space}", "every gate embed status can judge passes; then `embed cutover "
                    f"--space {p.space}`", ready=True)
    g = failed[0]
    fix = GATE_FIX.get(g["gate"])
    why = f"gate {g['gate']} fails ({g['measured']})"
    if g["gate"] == "shadow_ann_recall":  # measured at the session's scan setting: a better one must be applied first
        why += ("; first apply the scan setting the shadow's filtered-recall table recommends (its ALTER ROLE ... SET"
                " hnsw.ef_search / hnsw.iterative_scan statements), then run the shadow again")
    return here(fix.format(s=p.space, legacy=cfg.legacy_space.name) if fix else None, why)


def _verify_failed(conn: psycopg.Connection, cfg: Config, st: serving.Serving) -> str | None:
    """One line when the newest `embed verify` of the space production reads found offenders."""
    from embed.verify import failures

    space = cfg.space_by_fp(st.space_fp)
    got = failures(conn, space).get(st.source)
    if got is None:
        return None
    return (f"{got.get('offenders')} vector(s) of another space in {got.get('location')} (embed verify): "
            f"`embed verify --space {space.name} --repair`, or `embed rollback`")


def _serving(cfg: Config, st: serving.Serving) -> ServingLine:
    """One source's line of what production reads, with the command that settles an interrupted switch."""
    views = cfg.label(st.views_fp) if st.views_fp else "not planned"
    nxt = None
    if st.switch_pending:
        nxt = (f"a switch to {cfg.label(st.target_fp)} was interrupted: `embed cutover --space "
               f"{cfg.label(st.target_fp)}` finishes it, `embed rollback` undoes it")
    elif st.views_behind:
        nxt = (f"the views are behind ({views}): `embed plan` (or the same cutover/rollback again) "
               "brings them to what production reads")
    elif st.untold:
        nxt = "Honcho's column holds this space: restart Honcho with the settings below"
    return ServingLine(cfg.label(st.space_fp), st.space_fp, st.mode or "initial", views, st.legacy_column,
                       cfg.label(st.from_fp) if st.from_fp else None, nxt)
