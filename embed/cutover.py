"""`embed gate`, `embed cutover` and `embed rollback`: switch what production reads, behind gates.

- gate: every blocking gate of embed/gates.py for making a space active now, plus the dims and
  single-space audits of its per-space views and store tables, run explicitly (SQLMesh would
  skip them when re-promoting a version it built before). Recorded as a 'gate' event.
- cutover --mode view: gate, then rewrite `embed_active` in config.yaml and `sqlmesh plan` it
  (the plan's own audits and before_all guard run the same gates again); config.yaml is
  restored when the plan fails. --mode honcho-inplace: gate, then embed.inplace stages the
  space into shadow columns of the Honcho tables and swaps them in one short transaction.
- rollback: back to the space the last cutover/rollback came from, in the mode it used. Rows
  written since the cutover get vectors in the space rolled back to *before* the switch: the
  legacy column is written by the application itself (view mode), a store-backed space by one
  `embed sync` pass, an in-place column by embed.inplace.swap_back.

Only one cutover or rollback runs per database at a time (a session advisory lock); a second
one exits at once with a clear message and changes nothing. A lock whose connection died
(server restart, terminated backend) is noticed before the switch, which then does not happen.
Every outcome is an event whose details carry from_fp/to_fp, which `embed retire` reads to
start the retention clock. The event log is the truth about what was switched: a view switch
rewrites config.yaml, plans, then records its event, so a process killed in between leaves
config.yaml ahead of the log, and the next cutover (or rollback) to that same space completes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from embed import activeconfig, gates, mesh, store
from embed.config import Config
from embed.database import connect
from embed.errors import EmbedError
from embed.hooks import pause_point
from embed.spaces import Space

MODES = ("view", "honcho-inplace")
LOCK = "embed.cutover"


@contextmanager
def exclusive(url: str) -> Iterator[psycopg.Connection]:
    """Hold the database-wide cutover lock, or fail at once: two switches must never interleave."""
    conn = connect(url, autocommit=True)
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK,)).fetchone()[0]:
            raise EmbedError("another embed cutover or rollback is running on this database; nothing changed")
        try:
            yield conn
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK,))
            except psycopg.OperationalError:
                pass  # the connection is gone (server restart, terminated backend): the lock went with it
    finally:
        conn.close()


def _still_exclusive(conn: psycopg.Connection) -> None:
    """Right before the switch: a session lock dies with its connection (server restart, a
    terminated backend), and another switch could then start next to this one."""
    try:
        held = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND objsubid = 1 AND objid = (hashtext(%s)::bigint & 4294967295)::oid)", (LOCK,)
        ).fetchone()[0]
    except psycopg.OperationalError:
        held = False
    if not held:
        raise EmbedError("lost the database connection holding the cutover lock; nothing switched: run it again")


def _require_store(conn: psycopg.Connection) -> None:
    if not store.is_initialized(conn):
        raise EmbedError("embed_store is missing in this database: run `embed init` first")


def _audit_rows(cfg: Config, url: str, space: Space, sources: list[str]) -> list[dict[str, Any]]:
    """The dims / single-space audits of the space's per-space views and store tables, run now."""
    models = [f"embed.{s}__{space.name}" for s in sources]
    if space.fingerprint != cfg.legacy_space.fingerprint:
        models += [f"{store.SCHEMA}.{store.table_name(cfg.source(s), space)}" for s in sources]
    try:
        results = mesh.audit(cfg, url, models)
    except Exception as e:  # a model SQLMesh does not know yet: the views were never planned
        return [{"source": "*", "gate": "audits", "passed": False,
                 "measured": f"cannot audit the space's views ({str(e).splitlines()[0]}): run `embed plan`"}]
    return [
        {"source": r["model"], "gate": f"audit {r['audit']}", "passed": r["passed"],
         "measured": r["error"] or (f"{r['count']} bad row(s)" if r["count"] else "ok")}
        for r in results
    ]


def gate(cfg: Config, url: str, space_name: str, sources: list[str] | None = None) -> dict[str, Any]:
    """Every blocking gate for making `space_name` active now; recorded as a 'gate' event."""
    space = cfg.space(space_name)
    names = [cfg.source(s).name for s in sources] if sources else list(cfg.sources)
    with connect(url) as conn:
        _require_store(conn)
        rows = gates.evaluate(conn, cfg, space, names)
    rows += _audit_rows(cfg, url, space, names)
    passed = all(r["passed"] for r in rows)
    with connect(url) as conn, conn.transaction():
        store.record_event(conn, "gate", "ok" if passed else "blocked", space=space,
                           reason=None if passed else summary(rows), details={"gates": rows, "sources": names},
                           state="gated" if passed and space.fingerprint not in _active_fps(cfg) else None)
    return {"space": space.name, "fingerprint": space.fingerprint, "passed": passed, "gates": rows}


def summary(rows: list[dict[str, Any]]) -> str:
    failed = [r for r in rows if not r["passed"]]
    shown = "; ".join(f"{r['source']}.{r['gate']} ({r['measured']})" for r in failed[:4])
    return f"{len(failed)} gate(s) failed: {shown}" + ("; ..." if len(failed) > 4 else "")


def _active_fps(cfg: Config) -> set[str]:
    return {cfg.active_space(s).fingerprint for s in cfg.sources}


def cutover(
    cfg: Config, url: str, space_name: str, *, mode: str = "view", sources: list[str] | None = None,
    lock_timeout_s: float = 2.0, stage_only: bool = False,
) -> dict[str, Any]:
    """Make `space_name` what each source's production reads see, if and only if every gate passes."""
    if mode not in MODES:
        raise EmbedError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    space = cfg.space(space_name)
    names = [cfg.source(s).name for s in sources] if sources else list(cfg.sources)
    if mode == "honcho-inplace" and stage_only:
        from embed import inplace

        return {"space": space.name, "mode": mode, "staged": inplace.stage(cfg, url, space.name, sources=names)}
    with exclusive(url) as lock_conn:
        previous = _view_recorded(cfg, lock_conn, names, space) if mode == "view" else {}
        checked = gate(cfg, url, space.name, names)
        if not checked["passed"]:
            _record(url, "cutover", "blocked", space, names, reason=summary(checked["gates"]), details={"mode": mode})
            raise EmbedError(f"cutover blocked, nothing changed: {summary(checked['gates'])}")
        pause_point("cutover_gated")
        _still_exclusive(lock_conn)
        if mode == "view":
            out = _switch_views(cfg, url, {s: space for s in names}, kind="cutover", previous=previous)
        else:
            out = _swap_inplace(cfg, url, space, names, lock_timeout_s)
    return {"space": space.name, "fingerprint": space.fingerprint, "mode": mode, "gates": checked["gates"], **out}


def _view_recorded(cfg: Config, conn: psycopg.Connection, names: list[str], space: Space) -> dict[str, Space]:
    """The space each source's last recorded switch made active (legacy when none), checked
    against config.yaml. The log is the truth; config.yaml is rewritten before `sqlmesh plan` and
    the event recorded after it, so a switch killed in between leaves config.yaml ahead of the
    log. When config.yaml already names `space`, that interrupted switch is completed now (the
    plan is idempotent); when it names a third space, nothing is done."""
    by_fp = {s.fingerprint: s for s in cfg.spaces.values()}
    recorded: dict[str, Space] = {}
    for s in names:
        ev = last_switch(conn, s) or {}  # an in-place switch moves the views too
        recorded[s] = by_fp.get(ev.get("to_fp") or "", cfg.legacy_space)
    if all(recorded[s].fingerprint == space.fingerprint == cfg.active_space(s).fingerprint for s in names):
        raise EmbedError(f"{space.name} already serves {', '.join(names)}; nothing to do")
    stray = [s for s in names if cfg.active_space(s).fingerprint not in (recorded[s].fingerprint, space.fingerprint)]
    if stray:
        shown = ", ".join(f"{s}: {cfg.active_space(s).name} (recorded: {recorded[s].name})" for s in stray)
        raise EmbedError(
            f"config.yaml names a space no recorded switch made active ({shown}): an interrupted cutover/rollback "
            "to it, or a hand edit; complete that switch or put embed_active back first; nothing changed"
        )
    return recorded


def _record(url: str, kind: str, outcome: str, space: Space, sources: list[str], **kw: Any) -> None:
    with connect(url) as conn, conn.transaction():
        for s in sources:
            store.record_event(conn, kind, outcome, space=space, source=s, **kw)


def _switch_views(cfg: Config, url: str, mapping: dict[str, Space], *, kind: str,
                  previous: dict[str, Space], columns: dict[str, str | None] | None = None,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rewrite embed_active (and, after an in-place swap, embed_legacy_columns: where the legacy
    vectors now sit) and plan it; config.yaml goes back as it was if the plan fails.
    `previous`: what each source's last recorded switch made active (the event's from_fp)."""
    started = time.monotonic()
    extra = {"mode": "view", **(details or {})}
    wanted: dict[str, dict[str, str | None]] = {"embed_active": {s: sp.name for s, sp in mapping.items()}}
    if columns is not None:
        wanted["embed_legacy_columns"] = dict(columns)
    new_cfg, before = activeconfig.set_variables(cfg, wanted)
    pause_point("switch_config_written")
    try:
        planned = mesh.plan(new_cfg, url)
    except BaseException as e:
        activeconfig.restore(cfg, before)
        for s, sp in mapping.items():
            _record(url, kind, "failed", sp, [s], reason=str(e).splitlines()[0] if str(e) else type(e).__name__,
                    details={**extra, "from_fp": previous[s].fingerprint, "to_fp": sp.fingerprint})
        if isinstance(e, EmbedError):
            raise EmbedError(f"{kind} failed, config.yaml restored: {e}") from None
        raise
    seconds = round(time.monotonic() - started, 3)
    pause_point("switch_views_done")
    with connect(url) as conn, conn.transaction():
        for s, sp in mapping.items():
            store.record_event(conn, kind, "ok", space=sp, source=s, state="active", details={
                **extra, "from_fp": previous[s].fingerprint, "to_fp": sp.fingerprint,
                "from_space": previous[s].name, "to_space": sp.name, "seconds": seconds,
            })
    return {"switched": {s: {"from": previous[s].name, "to": sp.name} for s, sp in mapping.items()},
            "views_rebuilt": planned["new_snapshots"], "seconds": seconds}


def _legacy_columns(cfg: Config, url: str, sources: list[str]) -> dict[str, str | None]:
    """Where each source's legacy vectors sit after a swap: None when back in the live column."""
    from embed import inplace, inplace_sql

    live = inplace.state(cfg, url)["sources"]
    legacy = cfg.legacy_space
    return {s: None if (live.get(s) or {}).get("live_fp") == legacy.fingerprint
            else inplace_sql.tagged_column(cfg.source(s), legacy) for s in sources}


def _swap_inplace(cfg: Config, url: str, space: Space, sources: list[str], lock_timeout_s: float) -> dict[str, Any]:
    """Swap Honcho's columns (the short lock), then point the views at the same space, so every
    reader (Honcho and embed.<source>_active) agrees on one space per source."""
    from embed import inplace

    before = inplace.state(cfg, url)
    # an undeclared space in Honcho's column is an error, never silently taken for the legacy one
    previous = {s: cfg.space_by_fp((before["sources"].get(s) or {}).get("live_fp")) for s in sources}
    with connect(url) as conn:
        recorded = {s: cfg.space_by_fp((last_switch(conn, s, mode="honcho-inplace") or {}).get("to_fp"))
                    for s in sources}
    staged: dict[str, Any] = {}
    if all(previous[s].fingerprint == space.fingerprint for s in sources):
        if all(recorded[s].fingerprint == space.fingerprint for s in sources):
            raise EmbedError(f"{space.name} is already live in Honcho's columns of {', '.join(sources)}; nothing to do")
        # The swap is done but no cutover recorded it: one that died (or failed) after its swap.
        previous, swapped = recorded, {"completed": "the swap of an interrupted cutover"}
    else:
        staged = inplace.stage(cfg, url, space.name, sources=sources)
        try:
            swapped = inplace.swap(cfg, url, space.name, lock_timeout_s=lock_timeout_s)
        except EmbedError as e:
            _record(url, "cutover", "failed", space, sources, reason=str(e), details={"mode": "honcho-inplace"})
            raise
    views = _views_after_swap(cfg, url, {s: space for s in sources}, "cutover", previous, swapped)
    return {"staged": staged, "swap": swapped, **views,
            "honcho_settings": inplace.honcho_settings(cfg, url, space.name)}


def _views_after_swap(cfg: Config, url: str, mapping: dict[str, Space], kind: str, previous: dict[str, Space],
                      swapped: dict[str, Any]) -> dict[str, Any]:
    """The views and the event after an in-place swap. The swap is committed by then: a failure
    here must say so, and rerunning the same command finishes the switch (it finds the columns
    swapped and does not swap them again)."""
    try:
        return _switch_views(cfg, url, mapping, kind=kind, previous=previous,
                             columns=_legacy_columns(cfg, url, list(mapping)),
                             details={"mode": "honcho-inplace", "lock_ms": swapped.get("lock_ms")})
    except EmbedError as e:
        raise EmbedError(f"Honcho's columns were swapped, but the views and the event log were not updated ({e}); "
                         f"run the same `embed {kind}` again to finish") from None


def last_switch(conn: psycopg.Connection, source: str, mode: str | None = None) -> dict[str, Any] | None:
    """The newest successful cutover/rollback of a source (in `mode`, if given): its event row as a dict."""
    row = conn.execute(
        f"SELECT id, kind, details FROM {store.SCHEMA}.events WHERE kind IN ('cutover', 'rollback') "
        "AND outcome = 'ok' AND source = %s AND (%s::text IS NULL OR coalesce(details ->> 'mode', 'view') = %s) "
        "ORDER BY at DESC, id DESC LIMIT 1",
        (source, mode, mode),
    ).fetchone()
    return {"id": row[0], "kind": row[1], **row[2]} if row else None


def rollback(cfg: Config, url: str, *, sources: list[str] | None = None, lock_timeout_s: float = 2.0) -> dict[str, Any]:
    """Back to the space each source's last cutover/rollback came from, in the mode it used."""
    names = [cfg.source(s).name for s in sources] if sources else list(cfg.sources)
    by_fp = {s.fingerprint: s for s in cfg.spaces.values()}
    with exclusive(url) as lock_conn:
        _require_store(lock_conn)
        last = {s: last_switch(lock_conn, s) for s in names}
        missing = [s for s, ev in last.items() if ev is None]
        if missing:
            raise EmbedError(f"nothing to roll back for {', '.join(missing)}: no cutover recorded; nothing changed")
        modes = {ev.get("mode", "view") for ev in last.values()}
        if len(modes) > 1:
            raise EmbedError("the sources were switched in different modes; roll back one --source at a time")
        mode = modes.pop()
        targets: dict[str, Space] = {}
        for s, ev in last.items():
            to = by_fp.get(ev.get("from_fp") or "")
            if to is None:
                raise EmbedError(f"{s}: the space it came from ({str(ev.get('from_fp'))[:12]}) is no longer declared")
            # config.yaml names the rollback's target already: a rollback killed between rewriting
            # it and recording the event; completing it is this rollback.
            if mode == "view" and cfg.active_space(s).fingerprint not in (ev["to_fp"], to.fingerprint):
                raise EmbedError(
                    f"{s}: config.yaml serves {cfg.active_space(s).name}, but the last {ev['kind']} switched to "
                    f"{by_fp.get(ev['to_fp'], ev['to_fp'])}; fix embed_active by hand first (nothing changed)"
                )
            targets[s] = to
        if mode == "view":
            synced = _catch_up(cfg, url, targets)
            _still_exclusive(lock_conn)
            out = _switch_views(cfg, url, targets, kind="rollback",
                                previous={s: by_fp.get(ev["to_fp"], cfg.legacy_space) for s, ev in last.items()})
            return {"mode": mode, "synced_before_switch": synced, **out}
        _still_exclusive(lock_conn)
        return _swap_back(cfg, url, targets, lock_timeout_s)


def _catch_up(cfg: Config, url: str, targets: dict[str, Space]) -> dict[str, Any]:
    """Vectors for rows written since the cutover, in each store-backed space rolled back to,
    before the switch (the legacy column is the application's own, always current)."""
    from embed.sync import sync_once

    out: dict[str, Any] = {}
    for s, sp in targets.items():
        if sp.fingerprint != cfg.legacy_space.fingerprint:
            res = sync_once(cfg, url, sp, sources=[s])
            out[s] = {"written": res.get("written", 0), "rows_pending": res["rows_pending"]}
    return out


def _swap_back(cfg: Config, url: str, targets: dict[str, Space], lock_timeout_s: float) -> dict[str, Any]:
    """Swap Honcho's columns back (rows written since the cutover are embedded in the old space
    before the swap, by embed.inplace.swap_back), then point the views back the same way."""
    from embed import inplace

    with connect(url) as conn:
        previous = {s: cfg.space_by_fp((last_switch(conn, s) or {}).get("to_fp")) for s in targets}
    live = inplace.state(cfg, url)["sources"]
    if all((live.get(s) or {}).get("live_fp") == to.fingerprint for s, to in targets.items()):
        # Swapped back already by a rollback that died (or failed) before recording it: swapping
        # "back" again would put the cutover's space in the column under a rollback event.
        out: dict[str, Any] = {"completed": "the swap of an interrupted rollback"}
    else:
        out = inplace.swap_back(cfg, url, lock_timeout_s=lock_timeout_s)
    views = _views_after_swap(cfg, url, targets, "rollback", previous, out)
    return {"mode": "honcho-inplace", "swap": out, **views}
