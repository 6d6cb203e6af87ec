"""`embed retire`, `embed pin/unpin`: delayed deletion of a space's vectors.

Old vectors are kept through a retention window after cutover so rollback stays instant and
lossless (invariant 4); only then, with no pin and a verified backup taken after the space
stopped being active (invariant 5), may they be dropped: one `DROP TABLE` per store table
(no HNSW vacuum storm), plus, after a Honcho in-place cutover, the renamed old vector column
`<vector_column>__<space>_<fp8>` on the source tables. Every drop is an event.

When a space stopped being active: the last 'cutover' or 'rollback' event (outcome ok) whose
details carry `from_fp` = the space's fingerprint. A space that never served reads (no such
event) counts from when it was declared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config
from embed.cutover import inplace_queue
from embed.db import locks
from embed.db.connection import connect
from embed.db.idents import qualified
from embed.errors import Blocked, Busy, EmbedError, NotInitialized
from embed.result import Result
from embed.safety.backup import VerifiedBackup, ensure_ops_tables, find_verified_backup
from embed.spaces import Space
from embed.store import registry, serving
from embed.store.location import COLUMNS, live_fp, recorded

DEFAULT_RETENTION_DAYS = 14
DROP_LOCK_TIMEOUT = "10s"  # a column drop locks a live source table: fail rather than queue Honcho behind us


def retention_days(cfg: Config) -> int:
    raw = (cfg.variables.get("embed_retention") or {}).get("days", DEFAULT_RETENTION_DAYS)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise EmbedError(f"embed_retention.days must be a whole number of days >= 0, got {raw!r}")
    return raw


def _has_bookkeeping(conn: psycopg.Connection) -> None:
    if not store.is_initialized(conn):
        raise NotInitialized()
    ensure_ops_tables(conn)


@dataclass(frozen=True)
class DropTarget(Result):
    """One object to drop: a store table, or an old vector column on a source table."""

    kind: str  # 'table' | 'column'
    schema: str
    table: str
    column: str | None
    source: str | None
    bytes: int  # freed at once (the table, or the column's indexes)
    bytes_after_rewrite: int = 0  # a dropped column's data, reclaimed by the next table rewrite
    dependents: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}" + (f".{self.column}" if self.column else "")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "sql": self.statement().as_string(None), "lock": self.lock}

    @property
    def lock(self) -> str:
        """The lock the DROP takes (a catalog change: held for as long as the drop itself)."""
        from embed.preview import ACCESS_EXCLUSIVE

        return f"{ACCESS_EXCLUSIVE} on {self.schema}.{self.table}"

    def statement(self) -> sql.Composed:
        tbl = sql.Identifier(self.schema, self.table)
        if self.kind == "table":
            return sql.SQL("DROP TABLE {}").format(tbl)
        return sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(tbl, sql.Identifier(self.column or ""))


def _dependents(conn: psycopg.Connection, schema: str, table: str, attnum: int | None) -> tuple[str, ...]:
    """Views (SQLMesh's included) that read the object: DROP would fail, CASCADE would break them."""
    rows = conn.execute(
        """SELECT DISTINCT v.oid::regclass::text FROM pg_depend d
           JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
           WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
             AND d.refobjid = format('%%I.%%I', %s::text, %s::text)::regclass AND v.oid <> d.refobjid
             AND (%s::int IS NULL OR d.refobjsubid = %s::int)
           ORDER BY 1""",
        (schema, table, attnum, attnum),
    ).fetchall()
    return tuple(r[0] for r in rows)


def _targets(conn: psycopg.Connection, cfg: Config, space: Space) -> list[DropTarget]:
    """Every object holding `space`'s vectors: its store table per source (embed.store's name for
    it) and the source columns recorded for it (embed.store.location's record) other than the live one;
    a column merely named like the space is not taken for it."""
    held = recorded(conn)
    out: list[DropTarget] = []
    for src in cfg.sources.values():
        tbl = store.table_name(src, space)
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{store.SCHEMA}"."{tbl}"',)).fetchone()[0]:
            size = conn.execute(
                "SELECT pg_total_relation_size(format('%%I.%%I', %s::text, %s::text)::regclass)", (store.SCHEMA, tbl)
            ).fetchone()[0]
            out.append(DropTarget("table", store.SCHEMA, tbl, None, src.name, size,
                              dependents=_dependents(conn, store.SCHEMA, tbl, None)))
        schema, table = src.schema_table
        mine = sorted(c for (s, c), (fp, _) in held.items()
                      if s == src.name and fp == space.fingerprint and c != src.vector_column)
        if not mine or conn.execute("SELECT to_regclass(%s) IS NULL", (f'"{schema}"."{table}"',)).fetchone()[0]:
            continue
        cols = conn.execute(
            """SELECT attname, attnum FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass
               AND attnum > 0 AND NOT attisdropped AND attname = ANY(%s) ORDER BY attnum""",
            (schema, table, mine),
        ).fetchall()
        for col, attnum in cols:
            idx = conn.execute(
                """SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i
                   WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND %s = ANY(i.indkey)""",
                (schema, table, attnum),
            ).fetchone()[0]
            data = conn.execute(
                sql.SQL("SELECT coalesce(sum(pg_column_size({})), 0)::bigint FROM {}").format(
                    sql.Identifier(col), qualified(f"{schema}.{table}")
                )
            ).fetchone()[0]
            out.append(DropTarget("column", schema, table, col, src.name, idx, data,
                              dependents=_dependents(conn, schema, table, attnum)))
    return out


def _deactivated_at(conn: psycopg.Connection, space: Space) -> tuple[datetime | None, str]:
    row = conn.execute(
        sql.SQL(
            "SELECT max(at) FROM {}.events WHERE kind IN ('cutover', 'rollback') AND outcome = 'ok' "
            "AND details ->> 'from_fp' = %s"
        ).format(sql.Identifier(store.SCHEMA)),
        (space.fingerprint,),
    ).fetchone()
    if row[0] is not None:
        return row[0], "last cutover/rollback away from it"
    row = conn.execute(
        sql.SQL("SELECT declared_at FROM {}.spaces WHERE fingerprint = %s").format(sql.Identifier(store.SCHEMA)),
        (space.fingerprint,),
    ).fetchone()
    return (row[0], "declared (never active)") if row else (None, "not in embed_store")


@dataclass(frozen=True)
class RetirePlan(Result):
    """What retiring a space would drop, the space it frees, and every reason it may not yet."""

    space: str
    fingerprint: str
    state: str | None
    retention_days: int
    inactive_since: str | None
    inactive_since_what: str
    eligible_at: str | None
    backup: VerifiedBackup | None  # the verified backup that covers every table touched
    targets: tuple[DropTarget, ...]
    bytes: int  # freed at once
    bytes_after_rewrite: int  # dropped columns' data, reclaimed by the next table rewrite
    blockers: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return not self.blockers

    def as_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "targets": [t.as_dict() for t in self.targets],
                "backup": asdict(self.backup) if self.backup else None, "allowed": self.allowed}


@dataclass(frozen=True)
class Retired(Result):
    plan: RetirePlan
    dropped: tuple[str, ...]  # in the order dropped

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "dropped": list(self.dropped), "state": "retired"}


@dataclass(frozen=True)
class Pin(Result):
    space: str
    fingerprint: str
    reason: str  # pin: why it is kept; unpin: why it had been


def _plan(conn: psycopg.Connection, cfg: Config, space: Space) -> tuple[RetirePlan, list[DropTarget]]:
    """What retiring `space` would drop, and every reason it may not (in the order they are reported)."""
    blockers: list[str] = []
    reads = serving.read(conn, cfg)
    active = [s for s, st in reads.items() if space.fingerprint in (st.space_fp, st.views_expected)]
    if active:
        blockers.append(f"space {space.name} is what production reads for source(s) {', '.join(active)}: "
                        "cut over away from it first")
    legacy_name = cfg.variables.get("embed_legacy_space")
    legacy_fp = cfg.spaces[legacy_name].fingerprint if legacy_name in cfg.spaces else None
    is_legacy = legacy_fp == space.fingerprint or (legacy_fp is None and legacy_name == space.name)
    holders = [s.name for s in cfg.sources.values() if s.vector_column and live_fp(conn, cfg, s) == legacy_fp]
    if is_legacy and holders:
        blockers.append(
            f"space {space.name} is the legacy space of gateway {cfg.gateway}: the vector columns of "
            f"{', '.join(holders)} still hold it (an in-place cutover moves it to a retirable column)"
        )
    pin = conn.execute(
        sql.SQL("SELECT reason, actor, at FROM {}.pins WHERE space_fp = %s").format(sql.Identifier(store.SCHEMA)),
        (space.fingerprint,),
    ).fetchone()
    if pin:
        blockers.append(f"space {space.name} is pinned by {pin[1]} since {pin[2]:%Y-%m-%d}: {pin[0]} (embed unpin to release)")
    days = retention_days(cfg)
    since, since_what = _deactivated_at(conn, space)
    eligible_at = None
    if since is None:
        blockers.append(f"space {space.name} is not in embed_store: nothing to retire")
    else:
        elapsed, eligible_at = conn.execute(
            "SELECT now() - %s >= make_interval(days => %s), %s + make_interval(days => %s)",
            (since, days, since, days),
        ).fetchone()
        if not elapsed:
            blockers.append(
                f"retention window of {days} day(s) since {since:%Y-%m-%d %H:%M} ({since_what}) has not passed: "
                f"eligible from {eligible_at:%Y-%m-%d %H:%M %Z}"
            )
    targets = _targets(conn, cfg, space)
    needed = {f"{t.schema}.{t.table}" for t in targets}
    backup, why = find_verified_backup(conn, since, needed)
    if why:
        blockers.append(why)
    for t in targets:
        if t.dependents:
            blockers.append(
                f"{t.name} is still read by view(s) {', '.join(t.dependents[:3])}: remove space {space.name} "
                "from embed_spaces, run `embed plan` and `sqlmesh janitor --ignore-ttl`, then retry"
            )
            break
    state = store.space_states(conn).get(space.fingerprint)
    if state == "retired" and not targets:
        blockers.append(f"space {space.name} is already retired")
    return RetirePlan(
        space.name, space.fingerprint, state, days, since.isoformat() if since else None, since_what,
        eligible_at.isoformat() if eligible_at else None, backup, tuple(targets), sum(t.bytes for t in targets),
        sum(t.bytes_after_rewrite for t in targets), tuple(blockers)), targets


def retire_plan(cfg: Config, url: str, name: str) -> RetirePlan:
    """The dry run: what would be dropped, the space it frees, and what blocks it (drops nothing)."""
    with connect(url, vector=False) as conn:
        _has_bookkeeping(conn)
        with conn.transaction():
            return _plan(conn, cfg, registry.by_name(conn, cfg, name))[0]


def retire(cfg: Config, url: str, name: str, *, confirm: Callable[[RetirePlan], bool] | None = None) -> Retired:
    """Re-check everything under the retire lock, ask `confirm`, then drop object by object
    (each its own transaction and event, so an interrupted retire resumes where it stopped)."""
    with connect(url, vector=False, autocommit=True) as conn:
        _has_bookkeeping(conn)
        space = registry.by_name(conn, cfg, name)
        with locks.held(conn, locks.RETIRE):
            plan, targets = _plan(conn, cfg, space)
            if plan.blockers:
                store.record_event(conn, "retire", "blocked", space=space, reason=plan.blockers[0][:500])
                raise Blocked(f"cannot retire {space.name}: {plan.blockers[0]}")
            if confirm is not None and not confirm(plan):
                raise EmbedError("retire cancelled: nothing dropped")
            dropped: list[str] = []
            for i, t in enumerate(targets):
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DROP_LOCK_TIMEOUT)))
                    try:
                        conn.execute(t.statement())
                        if t.kind == "column":  # the record goes with the column, or it would point at nothing
                            conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND column_name = %s").format(
                                COLUMNS), (t.source, t.column))
                            inplace_queue.forget(conn, cfg.source(t.source), space.fingerprint)  # its change queue
                    except psycopg.errors.LockNotAvailable:
                        raise Busy(
                            f"{t.name} is busy (lock not free within {DROP_LOCK_TIMEOUT}); "
                            f"dropped so far: {', '.join(dropped) or 'nothing'}; rerun to continue"
                        ) from None
                    store.record_event(
                        conn, "retire", "ok", space=space, source=t.source, reason=f"dropped {t.kind} {t.name}",
                        details={"object": t.name, "kind": t.kind, "bytes": t.bytes,
                                 "bytes_after_rewrite": t.bytes_after_rewrite,
                                 "backup": plan.backup.id if plan.backup else None},
                        move="retired" if i == len(targets) - 1 else "retire",
                    )
                dropped.append(t.name)
            if not targets:
                store.record_event(conn, "retire", "ok", space=space, reason="nothing left to drop",
                                   details={"backup": plan.backup.id if plan.backup else None}, move="retired")
    return Retired(plan, tuple(dropped))


# ---------------------------------------------------------------- pins
def pin(cfg: Config, url: str, name: str, reason: str) -> Pin:
    """Hold a space's vectors past retention (a pin blocks retire until unpinned)."""
    reason = " ".join(reason.split())
    if not reason:
        raise EmbedError("--reason must say why the space is pinned")
    with connect(url, vector=False, autocommit=True) as conn:
        _has_bookkeeping(conn)
        space = registry.by_name(conn, cfg, name)
        with conn.transaction():
            locks.xact(conn, locks.RETIRE)
            if store.space_states(conn).get(space.fingerprint) == "retired":
                raise EmbedError(f"space {space.name} is already retired: nothing left to pin")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.pins (space_fp, name, reason, actor) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (space_fp) DO UPDATE SET reason = EXCLUDED.reason, actor = EXCLUDED.actor, "
                    "at = clock_timestamp()"
                ).format(sql.Identifier(store.SCHEMA)),
                (space.fingerprint, space.name, reason, store.actor()),
            )
            store.record_event(conn, "pin", "ok", space=space, reason=reason)
    return Pin(space.name, space.fingerprint, reason)


def unpin(cfg: Config, url: str, name: str) -> Pin:
    """Release a space's pin; retire's other conditions still apply."""
    with connect(url, vector=False, autocommit=True) as conn:
        _has_bookkeeping(conn)
        space = registry.by_name(conn, cfg, name)
        with conn.transaction():
            locks.xact(conn, locks.RETIRE)
            gone = conn.execute(
                sql.SQL("DELETE FROM {}.pins WHERE space_fp = %s RETURNING reason").format(sql.Identifier(store.SCHEMA)),
                (space.fingerprint,),
            ).fetchone()
            if gone is None:
                raise EmbedError(f"space {space.name} is not pinned")
            store.record_event(conn, "unpin", "ok", space=space)
    return Pin(space.name, space.fingerprint, gone[0])
