"""`embed gate`, `embed cutover` and `embed rollback`: switch what production reads, behind gates.

What production reads is embed_store.serving (embed.store.serving); every command here starts from it,
so whatever a crash or a failure left, `cutover` can finish and `rollback` can undo it.

- gate: every blocking gate of embed/gates.py for making a space active now, plus the dims and
  single-space audits of its per-space views and store tables (a gate that did not run fails).
- cutover --mode view: gate, then a SQLMesh plan that points `embed.<source>_active` at the
  space (built before anything changes, so a configuration error changes nothing); recorded
  in embed_store.serving and the event log once the views serve it.
- cutover --mode honcho-inplace: gate, stage, check who writes, build the views' plan, then swap
  Honcho's columns in one short transaction that also records the switch (serving, event); only
  then apply the views' plan. After that commit nothing is left that can fail for a configuration
  reason; a transient failure leaves the views behind, which the same command finishes.
- rollback: back to what production read before the last cutover, in the mode that cutover
  used; rows written since get vectors in that space before the switch. A second rollback finds
  production there and says so. Going forward is only ever `embed cutover`, with its gates.

Only one cutover or rollback runs per database at a time (a session advisory lock); a lock
whose connection died (server restart, terminated backend) is noticed before the switch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psycopg

from embed import gates, mesh, store
from embed.config import Config
from embed.cutover import inplace, writers
from embed.cutover.inplace_sql import tagged_column
from embed.db import locks
from embed.db.connection import connect
from embed.db.hooks import pause_point
from embed.errors import Blocked, Busy, EmbedError, NotInitialized, SwitchIncomplete, first_line
from embed.honcho.settings import HonchoSettings, honcho_settings
from embed.spaces import Space
from embed.store import lifecycle, serving
from embed.store.location import check_legacy, live_fp
from embed.store.serving import Serving

MODES = ("view", "honcho-inplace")
VIEW, INPLACE = MODES


@contextmanager
def exclusive(url: str) -> Iterator[psycopg.Connection]:
    """Hold the database-wide cutover lock, or fail at once: two switches must never interleave."""
    conn = connect(url, autocommit=True)
    try:
        with locks.held(conn, locks.CUTOVER, wait_s=0,
                        busy="another embed cutover or rollback is running on this database; nothing changed"):
            yield conn
    finally:
        conn.close()


def _still_exclusive(conn: psycopg.Connection) -> None:
    """Right before the switch: a session lock dies with its connection (server restart, a
    terminated backend), and another switch could then start next to this one."""
    if not locks.still_held(conn, locks.CUTOVER):
        raise Busy("lost the database connection holding the cutover lock; nothing switched: run it again")


def _ready(cfg: Config, url: str) -> None:
    """What every command here needs before it looks at anything else."""
    with connect(url) as conn:
        check_legacy(conn, cfg)
        if not store.is_initialized(conn):
            raise NotInitialized()
        serving.ensure(conn, cfg)


# ---------------------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class GateRow:
    source: str
    gate: str
    status: str  # PASS | FAIL | NOT RUN
    measured: str

    @property
    def passed(self) -> bool:
        return self.status == mesh.PASS


@dataclass(frozen=True)
class GateResult:
    space: str
    fingerprint: str
    gates: tuple[GateRow, ...]
    ahead: str = ""  # standalone, all passed: what building the view cutover's views ahead did

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def summary(self) -> str:
        failed = [g for g in self.gates if not g.passed]
        shown = "; ".join(f"{g.source}.{g.gate} ({g.status}: {g.measured})" for g in failed[:4])
        return f"{len(failed)} gate(s) failed: {shown}" + ("; ..." if len(failed) > 4 else "")

    def as_dict(self) -> dict[str, Any]:
        return {"space": self.space, "fingerprint": self.fingerprint, "passed": self.passed,
                "gates": [{**asdict(g), "passed": g.passed} for g in self.gates], "views_ahead": self.ahead}


def _audit_rows(cfg: Config, url: str, space: Space, sources: list[str], ctx: Any = None,
                rendered: str | None = None) -> list[GateRow]:
    """The dims / single-space audits of the space's per-space views and store tables, run now
    (in `ctx`, a loaded SQLMesh context, when given; else in one loaded with `rendered`)."""
    models = [f"embed.{s}__{space.name}" for s in sources]
    if space.fingerprint != cfg.legacy_space.fingerprint:
        models += [f"{store.SCHEMA}.{store.table_name(cfg.source(s), space)}" for s in sources]
    try:
        results = mesh.audit(cfg, url, models, ctx=ctx, rendered=rendered)
    except Exception as e:  # a model SQLMesh does not know yet: the views were never planned
        return [GateRow("*", "audits", mesh.NOT_RUN,
                        f"cannot audit the space's views ({first_line(str(e))}): run `embed plan`")]
    return [GateRow(r.model, f"audit {r.audit}", r.status,
                    r.error or (f"{r.count} bad row(s)" if r.count else "ok")) for r in results]


def gate(cfg: Config, url: str, space_name: str, sources: list[str] | None = None, *, ctx: Any = None) -> GateResult:
    """Every blocking gate for making `space_name` active now; recorded as a 'gate' event. `ctx`:
    the switch's loaded SQLMesh context, for the audits (the project is loaded once per command).
    Standalone (`embed gate`), when every gate passes, the views a view cutover to the space
    would build are built ahead (`_build_ahead`), so that cutover only re-points them."""
    space = cfg.space(space_name)
    names = [cfg.source(s).name for s in sources] if sources else list(cfg.sources)
    _ready(cfg, url)
    with connect(url) as conn:
        rows = [GateRow(r["source"], r["gate"], mesh.PASS if r["passed"] else mesh.FAIL, r["measured"])
                for r in gates.evaluate(conn, cfg, space, names)]
        ahead = None if ctx is not None else serving.render(_aimed(serving.read(conn, cfg), {s: space for s in names}))
    with ExitStack() as stack:
        # Standalone (`embed gate`), the project is loaded once, as the view cutover to the space
        # will load it (the audited models do not read embed_serving), for the audits and the
        # build ahead: SQLMesh caches each model by the variables it was loaded with, so that
        # cutover finds every model in the cache instead of parsing them all.
        if ctx is None and ahead is not None:
            try:
                ctx = stack.enter_context(mesh.context(cfg, url, ahead))
            except Exception:  # a project that does not load: the audits say so, NOT RUN
                ctx = None
        audited = _audit_rows(cfg, url, space, names, ctx, ahead)
        result = GateResult(space.name, space.fingerprint, tuple(rows + audited))
        with connect(url) as conn, conn.transaction():
            store.record_event(conn, "gate", "ok" if result.passed else "blocked", space=space,
                               reason=None if result.passed else result.summary(),
                               details={"gates": result.as_dict()["gates"], "sources": names},
                               move="gate" if result.passed else None)
        if ahead is None or ctx is None or not result.passed:
            return result
        return replace(result, ahead=_build_ahead(url, ctx))


def _build_ahead(url: str, ctx: Any) -> str:
    """Build the view versions of the cutover `ctx` was loaded for now, unpromoted
    (embed.mesh.prebuild): a view cutover's first plan spends most of its time building them.
    Production's views are untouched. Only while no cutover or rollback runs (their plans must
    not meet another); anything that stops it is said and left to the cutover's own plan."""
    try:
        with exclusive(url):
            built = mesh.prebuild(ctx)
    except Exception as e:  # only work done ahead: production's views are untouched either way
        return f"not built ahead ({first_line(str(e))}): the cutover builds them"
    return f"built ahead for a view cutover: {', '.join(built)}" if built else "built already"


# ------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class SwitchResult:
    """What a cutover or rollback did. outcome: 'switched'; 'finished' (production read the
    space already: the views or the settings of an interrupted switch were completed); 'already'
    (nothing to do)."""

    kind: str
    mode: str
    outcome: str
    switched: dict[str, tuple[str, str]]  # source -> (from space, to space)
    views_rebuilt: tuple[str, ...] = ()
    seconds: float = 0.0
    gates: GateResult | None = None
    staged: inplace.Staged | None = None
    swap: dict[str, Any] | None = None
    caught_up: dict[str, int] = field(default_factory=dict)  # rows embedded into the target first
    writers: writers.Writers | None = None
    honcho: HonchoSettings | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mode": self.mode, "outcome": self.outcome,
                "switched": {s: {"from": a, "to": b} for s, (a, b) in self.switched.items()},
                "views_rebuilt": list(self.views_rebuilt), "seconds": self.seconds,
                "gates": self.gates.as_dict() if self.gates else None, "staged": self.staged.as_dict() if self.staged else None, "swap": self.swap,
                "caught_up": self.caught_up, "writers": asdict(self.writers) if self.writers else None,
                "honcho_settings": self.honcho.as_dict() if self.honcho else None}


def _names(cfg: Config, sources: list[str] | None, mode: str) -> list[str]:
    names = [cfg.source(s).name for s in sources] if sources else list(cfg.sources)
    if mode == INPLACE:
        every = [s for s, src in cfg.sources.items() if src.vector_column]
        if sorted(names) != sorted(every):
            raise EmbedError("--mode honcho-inplace moves every source with a vector column together (Honcho needs "
                             f"both tables at the same dims): drop --source ({', '.join(every)}); nothing changed")
    return names


def _moves(conn: psycopg.Connection, cfg: Config, kind: str, to: dict[str, Space], before: dict[str, Serving]) -> None:
    """Lifecycle after a switch: the spaces now read become active; a space no source reads any
    more is replaced (cutover: retiring) or undone (rollback: back to gated)."""
    now = serving.read(conn, cfg)
    for sp in {s.fingerprint: s for s in to.values()}.values():
        lifecycle.move(conn, sp.fingerprint, "activate")
    for fp in {st.space_fp for st in before.values()} - {st.space_fp for st in now.values()}:
        lifecycle.move(conn, fp, "replace" if kind == "cutover" else "undo")


# -------------------------------------------------------------------------------------- cutover
def cutover(cfg: Config, url: str, space_name: str, *, mode: str = VIEW, sources: list[str] | None = None,
            lock_timeout_s: float = 2.0, stage_only: bool = False, writers_policy: str = writers.CHECK,
            progress: bool | str = False) -> SwitchResult | inplace.Staged:
    """Make `space_name` what each source's production reads, if and only if every gate passes;
    or finish a switch to it that a crash or a failure left half-done. `progress`: the in-place
    staging's Progress on stderr (True, or a format of embed.fill.progress)."""
    if mode not in MODES:
        raise EmbedError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    space = cfg.space(space_name)
    names = _names(cfg, sources, mode)
    _ready(cfg, url)
    if stage_only:
        if mode != INPLACE:
            raise EmbedError("--stage-only stages Honcho's columns: it needs --mode honcho-inplace")
        staged = inplace.stage(cfg, url, space.name, sources=names, progress=progress)
        _load_ahead(cfg, url, space)
        return staged
    with exclusive(url) as lock:
        states = serving.read(lock, cfg)
        column = {s: live_fp(lock, cfg, cfg.source(s)) for s in names if cfg.source(s).vector_column}
        other = [f"{s} ({cfg.label(states[s].space_fp)}, {states[s].mode} mode)" for s in names
                 if states[s].mode not in (None, mode) and states[s].space_fp != column.get(s)]
        if other:  # the views read another space than Honcho's column: switch them back together first
            raise EmbedError(f"production reads {', '.join(other)}: `embed rollback` before switching in {mode} "
                             "mode; nothing changed")
        if all(states[s].space_fp == space.fingerprint for s in names):
            return _settle(cfg, url, "cutover", names, states, space)
        blocked = [f"{s} (to {cfg.label(states[s].target_fp)})" for s in names
                   if states[s].switch_pending and states[s].target_fp != space.fingerprint]
        if blocked:
            raise EmbedError(f"a switch of {', '.join(blocked)} was interrupted: finish it with `embed cutover` to "
                             "that space or undo it with `embed rollback` first; nothing changed")
        to = {s: space for s in names}
        with ExitStack() as stack:
            # who writes is the first question (again right before the swap); its window runs
            # while SQLMesh loads the project and builds the views' plan, once for the whole command
            watch = stack.enter_context(writers.Watch(url, cfg)) if mode == INPLACE else None
            after = _aimed(states, to) if mode == VIEW else _swapped(cfg, states, space)
            sw = stack.enter_context(mesh.Switch(cfg, url, serving.render(after)))
            if watch is not None:
                _writers(watch, writers_policy)
            checked = gate(cfg, url, space.name, names, ctx=sw.ctx)
            if not checked.passed:
                _record(url, "cutover", "blocked", space, names, reason=checked.summary(), details={"mode": mode})
                raise Blocked(f"cutover blocked, nothing changed: {checked.summary()}")
            pause_point("cutover_gated")
            _still_exclusive(lock)
            if mode == VIEW:
                return replace(_switch_views(cfg, url, lock, sw, "cutover", to, states), gates=checked)
            staged = None  # staged ahead (`--stage-only`): the swap catches up what changed since
            if not inplace.swappable(cfg, url, space.name, names):
                staged = inplace.stage(cfg, url, space.name, sources=names, progress=progress)
                if any(st.rows_written or st.rows_cleared for st in staged.sources.values()):
                    watch = stack.enter_context(writers.Watch(url, cfg))  # staging's own writes: a fresh window
            out = _switch_inplace(cfg, url, lock, sw, "cutover", space, states, writers_policy, lock_timeout_s,
                                  watch)
            return replace(out, gates=checked, staged=staged)


def _load_ahead(cfg: Config, url: str, space: Space) -> None:
    """Load the SQLMesh project as the in-place cutover to `space` will, so that it finds every
    model in SQLMesh's cache (kept per variables a project was loaded with) instead of parsing them
    all. Changes nothing in the database; a project that does not load now fails that cutover's
    own plan, with SQLMesh's message, and is no failure of the staging that is done."""
    with connect(url) as conn:
        states = serving.read(conn, cfg)
    try:
        with mesh.context(cfg, url, serving.render(_swapped(cfg, states, space))):
            pass
    except Exception:  # only a cache warm-up
        pass


def _record(url: str, kind: str, outcome: str, space: Space, sources: list[str], **kw: Any) -> None:
    with connect(url) as conn, conn.transaction():
        for s in sources:
            store.record_event(conn, kind, outcome, space=space, source=s, **kw)


def _settle(cfg: Config, url: str, kind: str, names: list[str], states: dict[str, Serving], space: Space
            ) -> SwitchResult:
    """Production reads `space` already: bring the views in line and deliver the Honcho settings
    where a switch stopped before doing so; 'already' when there is nothing left."""
    mode = states[names[0]].mode or VIEW
    behind = [s for s in names if states[s].views_behind]
    rebuilt: tuple[str, ...] = ()
    t0 = time.monotonic()
    if behind:
        rebuilt = _plan_views(cfg, url, names, states)
    honcho = None
    if any(states[s].untold for s in names) or (behind and mode == INPLACE):
        honcho = _told(cfg, url, names, space)
    outcome = "finished" if behind or honcho else "already"
    return SwitchResult(kind, mode, outcome, {s: (space.name, space.name) for s in names}, rebuilt,
                        round(time.monotonic() - t0, 3), honcho=honcho)


def _plan_views(cfg: Config, url: str, names: list[str], states: dict[str, Serving]) -> tuple[str, ...]:
    """Give the views what the database says (idempotent: a plan that changes nothing is cheap)."""
    with mesh.Switch(cfg, url, serving.render(states)) as sw:
        rebuilt = sw.apply()
    with connect(url) as conn, conn.transaction():
        for s in names:
            serving.views_planned(conn, cfg, s, states[s].views_expected)
    return tuple(rebuilt)


def _told(cfg: Config, url: str, names: list[str], space: Space, honcho: HonchoSettings | None = None
          ) -> HonchoSettings:
    """Record that Honcho's settings for `space` were printed (`honcho`: made already)."""
    honcho = honcho or honcho_settings(cfg, url, space)
    with connect(url) as conn, conn.transaction():
        for s in names:
            serving.told(conn, cfg, s, space.fingerprint)
    return honcho


# ----------------------------------------------------------------------------------- the switches
def _aimed(states: dict[str, Serving], to: dict[str, Space]) -> dict[str, Serving]:
    """What embed_store.serving says once the views of the sources in `to` are aimed at it."""
    return {s: replace(st, target_fp=to[s].fingerprint) if s in to else st for s, st in states.items()}


def _switch_views(cfg: Config, url: str, lock: psycopg.Connection, sw: mesh.Switch, kind: str, to: dict[str, Space],
                  states: dict[str, Serving], caught_up: dict[str, int] | None = None) -> SwitchResult:
    """Point `embed.<source>_active` at `to` with `sw`, the SQLMesh plan rendered for `_aimed(states,
    to)` and built before anything changes."""
    t0 = time.monotonic()
    with connect(url) as conn, conn.transaction():
        for s, sp in to.items():
            serving.aim_views(conn, cfg, s, sp.fingerprint)
    pause_point("switch_aimed")
    _still_exclusive(lock)
    try:
        rebuilt = sw.apply()
    except EmbedError as e:
        restored = _restore_views(cfg, url, list(to), states)
        for s, sp in to.items():
            _record(url, kind, "failed", sp, [s], reason=str(e), details={"mode": VIEW})
        raise EmbedError(f"{kind} failed: {e}; " + (
            "the views were put back, nothing switched" if restored else
            "the views may be half-switched: `embed rollback` puts them back")) from None
    pause_point("switch_views_done")
    seconds = round(time.monotonic() - t0, 3)
    with connect(url) as conn, conn.transaction():
        for s, sp in to.items():
            before = states[s]
            ev = store.record_event(conn, kind, "ok", space=sp, source=s, details={
                "mode": VIEW, "from_fp": before.space_fp, "to_fp": sp.fingerprint,
                "from_space": cfg.label(before.space_fp), "to_space": sp.name, "seconds": seconds})
            serving.switched(conn, cfg, s, to_fp=sp.fingerprint, mode=VIEW, kind=kind,
                             legacy_column=before.legacy_column, event_id=ev, views_done=True)
        _moves(conn, cfg, kind, to, states)
    return SwitchResult(kind, VIEW, "switched", {s: (cfg.label(states[s].space_fp), sp.name) for s, sp in to.items()},
                        tuple(rebuilt), seconds, caught_up=caught_up or {})


def _restore_views(cfg: Config, url: str, names: list[str], states: dict[str, Serving]) -> bool:
    """After a failed or interrupted view switch: the views back on what production reads."""
    try:
        with connect(url) as conn, conn.transaction():
            for s in names:
                serving.aim_views(conn, cfg, s, None)
        _plan_views(cfg, url, names, {s: replace(st, target_fp=None) for s, st in states.items()})
        return True
    except (EmbedError, psycopg.Error):
        with connect(url) as conn, conn.transaction():  # still unknown: keep the switch visible as pending
            for s in names:
                serving.aim_views(conn, cfg, s, states[s].target_fp or states[s].space_fp)
        return False


def _writers(watch: writers.Watch, policy: str) -> writers.Writers:
    """Who else is connected and writing to the source tables; refused unless `policy` allows it."""
    seen = watch.look()
    writers.require(policy, seen)
    return seen


def _legacy_after(cfg: Config, st: Serving, to: Space) -> str | None:
    """Where the legacy space's vectors sit once `to` is in the live column."""
    src = cfg.source(st.source)
    legacy = cfg.legacy_space
    if to.fingerprint == legacy.fingerprint:
        return src.vector_column
    if st.space_fp == legacy.fingerprint:  # the live column holds it now: the swap parks it
        return tagged_column(src, legacy)
    return st.legacy_column


def _swapped(cfg: Config, states: dict[str, Serving], to: Space) -> dict[str, Serving]:
    """What embed_store.serving says once Honcho's columns hold `to`."""
    return {s: replace(st, space_fp=to.fingerprint, legacy_column=_legacy_after(cfg, st, to),
                       target_fp=to.fingerprint) for s, st in states.items()}


def _switch_inplace(cfg: Config, url: str, lock: psycopg.Connection, sw: mesh.Switch, kind: str, to: Space,
                    states: dict[str, Serving], policy: str, lock_timeout_s: float, watch: writers.Watch
                    ) -> SwitchResult:
    """Swap Honcho's columns to `to` in one transaction that records the switch, then apply `sw`
    (the views' plan rendered for `_swapped(cfg, states, to)`, built before anything changed)."""
    names = list(states)
    seen = _writers(watch, policy)
    after = _swapped(cfg, states, to)
    t0 = time.monotonic()
    _still_exclusive(lock)

    def record(conn: psycopg.Connection, per: dict[str, dict[str, Any]]) -> None:
        for s in names:
            ev = store.record_event(conn, kind, "ok", space=to, source=s, details={
                **(per.get(s) or {}), "mode": INPLACE, "from_fp": states[s].space_fp, "to_fp": to.fingerprint,
                "from_space": cfg.label(states[s].space_fp), "to_space": to.name})
            serving.switched(conn, cfg, s, to_fp=to.fingerprint, mode=INPLACE, kind=kind,
                             legacy_column=after[s].legacy_column, event_id=ev, views_done=False)
        _moves(conn, cfg, kind, {s: to for s in names}, states)

    try:
        if kind == "cutover":
            swapped = inplace.swap(cfg, url, to.name, lock_timeout_s=lock_timeout_s, record=record)
        else:
            swapped = inplace.swap_back(cfg, url, to, lock_timeout_s=lock_timeout_s, record=record)
    except EmbedError as e:
        _record(url, kind, "failed", to, names, reason=str(e), details={"mode": INPLACE})
        raise
    pause_point("switch_committed")
    honcho = honcho_settings(cfg, url, to)
    came = {s: (cfg.label(states[s].space_fp), to.name) for s in names}
    try:
        rebuilt = sw.apply()
    except EmbedError as e:
        raise SwitchIncomplete(
            f"Honcho's columns now hold {to.name} (committed, recorded), but the views still serve "
            f"{cfg.label(states[names[0]].space_fp)}: {e}. `embed {kind}` again finishes it; `embed rollback` "
            "undoes it", honcho) from None
    pause_point("switch_views_done")
    with connect(url) as conn, conn.transaction():
        for s in names:
            serving.views_planned(conn, cfg, s, to.fingerprint)
    _told(cfg, url, names, to, honcho)
    return SwitchResult(kind, INPLACE, "switched", came, tuple(rebuilt), round(time.monotonic() - t0, 3),
                        swap=swapped, writers=seen, honcho=honcho)


# ------------------------------------------------------------------------------------- rollback
def rollback(cfg: Config, url: str, *, sources: list[str] | None = None, lock_timeout_s: float = 2.0,
             writers_policy: str = writers.CHECK) -> SwitchResult:
    """Back to what production read before the last cutover, in that cutover's mode. Idempotent:
    when production reads it already, only what an interrupted rollback left undone is done."""
    _ready(cfg, url)
    with exclusive(url) as lock:
        states = serving.read(lock, cfg)
        names = [cfg.source(s).name for s in sources] if sources else list(states)
        back = {s: cfg.space_by_fp(states[s].from_fp or states[s].space_fp) for s in names}
        pending = [s for s in names if states[s].switch_pending and states[s].target_fp != back[s].fingerprint]
        if pending:  # an interrupted cutover's view switch: production still reads what it read before
            t0 = time.monotonic()
            if not _restore_views(cfg, url, pending, states):
                raise EmbedError("the views could not be planned back yet; run `embed rollback` again")
            return SwitchResult("rollback", VIEW, "finished",
                                {s: (cfg.label(states[s].target_fp), cfg.label(states[s].space_fp)) for s in pending},
                                seconds=round(time.monotonic() - t0, 3))
        moving = [s for s in names if back[s].fingerprint != states[s].space_fp]
        if not moving:
            if len({back[s].fingerprint for s in names}) == 1:
                return _settle(cfg, url, "rollback", names, states, back[names[0]])
            return SwitchResult("rollback", states[names[0]].mode or VIEW, "already",
                                {s: (back[s].name, back[s].name) for s in names})
        modes = {states[s].mode for s in moving}
        if len(modes) > 1:
            raise EmbedError("the sources were switched in different modes; roll back one --source at a time")
        mode = modes.pop() or VIEW
        _still_exclusive(lock)
        to = {s: back[s] for s in moving}
        if mode == VIEW:
            caught = _catch_up(cfg, url, to)
            with mesh.Switch(cfg, url, serving.render(_aimed(states, to))) as sw:
                return _switch_views(cfg, url, lock, sw, "rollback", to, states, caught)
        _names(cfg, moving, INPLACE)  # Honcho's tables go back together too (--source cannot pick one)
        if len({back[s].fingerprint for s in moving}) > 1:
            raise EmbedError("the in-place sources came from different spaces: roll back by hand; nothing changed")
        sub = {s: states[s] for s in moving}
        with writers.Watch(url, cfg) as watch, \
                mesh.Switch(cfg, url, serving.render(_swapped(cfg, sub, back[moving[0]]))) as sw:
            return _switch_inplace(cfg, url, lock, sw, "rollback", back[moving[0]], sub, writers_policy,
                                   lock_timeout_s, watch)


def _catch_up(cfg: Config, url: str, targets: dict[str, Space]) -> dict[str, int]:
    """Vectors for rows written since the cutover, in each store-backed space rolled back to,
    before the switch (the legacy column is the application's own, always current)."""
    from embed.fill.sync import sync_once

    out: dict[str, int] = {}
    for s, sp in targets.items():
        if sp.fingerprint != cfg.legacy_space.fingerprint:
            out[s] = sync_once(cfg, url, sp, sources=[s]).rows_written
    return out
