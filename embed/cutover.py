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
one exits at once with a clear message and changes nothing. Every outcome is an event whose
details carry from_fp/to_fp, which `embed retire` reads to start the retention clock.
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
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK,))
    finally:
        conn.close()


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
    with exclusive(url):
        if mode == "view" and all(cfg.active_space(s).fingerprint == space.fingerprint for s in names):
            raise EmbedError(f"{space.name} already serves {', '.join(names)}; nothing to do")
        checked = gate(cfg, url, space.name, names)
        if not checked["passed"]:
            _record(url, "cutover", "blocked", space, names, reason=summary(checked["gates"]), details={"mode": mode})
            raise EmbedError(f"cutover blocked, nothing changed: {summary(checked['gates'])}")
        if mode == "view":
            out = _switch_views(cfg, url, {s: space for s in names}, kind="cutover")
        else:
            out = _swap_inplace(cfg, url, space, names, lock_timeout_s)
    return {"space": space.name, "fingerprint": space.fingerprint, "mode": mode, "gates": checked["gates"], **out}


def _record(url: str, kind: str, outcome: str, space: Space, sources: list[str], **kw: Any) -> None:
    with connect(url) as conn, conn.transaction():
        for s in sources:
            store.record_event(conn, kind, outcome, space=space, source=s, **kw)


def _switch_views(cfg: Config, url: str, mapping: dict[str, Space], *, kind: str) -> dict[str, Any]:
    """Rewrite embed_active and plan it; config.yaml goes back as it was if the plan fails."""
    started = time.monotonic()
    previous = {s: cfg.active_space(s) for s in mapping}
    new_cfg, before = activeconfig.set_active(cfg, {s: sp.name for s, sp in mapping.items()})
    try:
        planned = mesh.plan(new_cfg, url)
    except BaseException as e:
        activeconfig.restore(cfg, before)
        for s, sp in mapping.items():
            _record(url, kind, "failed", sp, [s], reason=str(e).splitlines()[0] if str(e) else type(e).__name__,
                    details={"mode": "view", "from_fp": previous[s].fingerprint, "to_fp": sp.fingerprint})
        if isinstance(e, EmbedError):
            raise EmbedError(f"{kind} failed, config.yaml restored: {e}") from None
        raise
    seconds = round(time.monotonic() - started, 3)
    with connect(url) as conn, conn.transaction():
        for s, sp in mapping.items():
            store.record_event(conn, kind, "ok", space=sp, source=s, state="active", details={
                "mode": "view", "from_fp": previous[s].fingerprint, "to_fp": sp.fingerprint,
                "from_space": previous[s].name, "to_space": sp.name, "seconds": seconds,
            })
    return {"switched": {s: {"from": previous[s].name, "to": sp.name} for s, sp in mapping.items()},
            "views_rebuilt": planned["new_snapshots"], "seconds": seconds}


def _swap_inplace(cfg: Config, url: str, space: Space, sources: list[str], lock_timeout_s: float) -> dict[str, Any]:
    from embed import inplace

    before = inplace.state(cfg, url)
    staged = inplace.stage(cfg, url, space.name, sources=sources)
    try:
        swapped = inplace.swap(cfg, url, space.name, lock_timeout_s=lock_timeout_s)
    except EmbedError as e:
        _record(url, "cutover", "failed", space, sources, reason=str(e), details={"mode": "honcho-inplace"})
        raise
    with connect(url) as conn, conn.transaction():
        for s in sources:
            old = _column_space(cfg, before, s)
            store.record_event(conn, "cutover", "ok", space=space, source=s, state="active", details={
                "mode": "honcho-inplace", "from_fp": old.fingerprint if old else None, "to_fp": space.fingerprint,
                "from_space": old.name if old else None, "to_space": space.name,
                "lock_ms": swapped.get("lock_ms"),
            })
    return {"staged": staged, "swap": swapped, "honcho_settings": inplace.honcho_settings(cfg, url, space.name)}


def _column_space(cfg: Config, state: dict[str, Any], source: str) -> Space | None:
    fp = (state.get("sources", {}).get(source) or {}).get("live_fp")
    return next((s for s in cfg.spaces.values() if s.fingerprint == fp), cfg.legacy_space)


def last_switch(conn: psycopg.Connection, source: str) -> dict[str, Any] | None:
    """The newest successful cutover/rollback of a source: its event row as a dict."""
    row = conn.execute(
        f"SELECT id, kind, details FROM {store.SCHEMA}.events WHERE kind IN ('cutover', 'rollback') "
        "AND outcome = 'ok' AND source = %s ORDER BY at DESC, id DESC LIMIT 1",
        (source,),
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
            if mode == "view" and cfg.active_space(s).fingerprint != ev["to_fp"]:
                raise EmbedError(
                    f"{s}: config.yaml serves {cfg.active_space(s).name}, but the last {ev['kind']} switched to "
                    f"{by_fp.get(ev['to_fp'], ev['to_fp'])}; fix embed_active by hand first (nothing changed)"
                )
            targets[s] = to
        if mode == "view":
            synced = _catch_up(cfg, url, targets)
            out = _switch_views(cfg, url, targets, kind="rollback")
            return {"mode": mode, "synced_before_switch": synced, **out}
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
    from embed import inplace

    space = next(iter(targets.values()))
    out = inplace.swap_back(cfg, url, lock_timeout_s=lock_timeout_s)
    with connect(url) as conn, conn.transaction():
        for s, to in targets.items():
            ev = last_switch(conn, s) or {}
            store.record_event(conn, "rollback", "ok", space=to, source=s, state="active", details={
                "mode": "honcho-inplace", "from_fp": ev.get("to_fp"), "to_fp": to.fingerprint,
                "to_space": to.name, "lock_ms": out.get("lock_ms"),
            })
    return {"mode": "honcho-inplace", "space": space.name, **out}
