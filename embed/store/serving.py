"""What production reads, per source: `embed_store.serving`, the record every switch changes.

A source without a row was never switched: production reads the legacy space from the source's
own vector column, and the views serve it too. A row says:

- space_fp: the space production reads now. For an in-place cutover it is written in the same
  transaction as the column swap, so the record and Honcho's columns never disagree; for a view
  switch, right after the SQLMesh plan that moved `embed.<source>_active`.
- legacy_column: the column of the source table that holds the legacy space (the live column,
  or after an in-place swap the space-tagged column it was renamed to).
- from_fp / from_mode: what production read before the last cutover. `embed rollback` goes
  there, and a second rollback finds production there already.
- views_fp / target_fp: the space the SQLMesh views were last planned with, and the one the next
  plan must give them (set before a switch's plan, cleared after it). While they differ from
  space_fp the views are behind, and `embed cutover`, `embed rollback` or `embed plan` finish it.
- told_fp: the space whose Honcho settings embed last delivered at the end of a switch; while
  Honcho's column holds another, `embed status` prints the settings again.

config.yaml never holds any of this: SQLMesh receives it through the `embed_serving` variable
(`$EMBED_SERVING`, rendered here from the database before every plan embed runs), and the
before_all guard refuses a plan whose rendering differs from this table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from embed.config import Config
from embed.errors import EmbedError
from embed.store import SCHEMA, migrations

ENV = "EMBED_SERVING"
TABLE = sql.Identifier(SCHEMA, "serving")
MODES = ("view", "honcho-inplace")

COLUMNS = ("source", "space_fp", "mode", "legacy_column", "from_fp", "from_mode", "views_fp", "target_fp", "told_fp")
# Plain SQL (no psycopg composition): the before_all guard runs it through SQLMesh's own adapter.
EXISTS_SQL = f"SELECT to_regclass('{SCHEMA}.serving') IS NOT NULL"
READ_SQL = f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.serving"


@dataclass(frozen=True)
class Serving:
    """What one source's production reads and views serve (see the module docstring)."""

    source: str
    space_fp: str
    mode: str | None  # None: never switched
    legacy_column: str | None
    from_fp: str | None = None
    from_mode: str | None = None
    views_fp: str | None = None
    target_fp: str | None = None
    told_fp: str | None = None

    @property
    def views_expected(self) -> str:
        """The space the views must serve after the next plan."""
        return self.target_fp or self.space_fp

    @property
    def switch_pending(self) -> bool:
        """A view switch was begun (its plan not confirmed): only cutover or rollback settles it."""
        return self.target_fp is not None and self.target_fp != self.space_fp

    @property
    def views_behind(self) -> bool:
        return self.target_fp is not None or self.views_fp != self.space_fp

    @property
    def untold(self) -> bool:
        """Honcho's live column holds a space whose settings no switch finished delivering."""
        return self.mode == "honcho-inplace" and self.told_fp != self.space_fp


def initial(cfg: Config, source: str) -> Serving:
    """A source never switched: the legacy space, in its own vector column."""
    legacy = cfg.legacy_space.fingerprint
    return Serving(source, legacy, None, cfg.source(source).vector_column, views_fp=legacy, told_fp=legacy)


def from_rows(cfg: Config, rows: Iterable[tuple[Any, ...]]) -> dict[str, Serving]:
    """One Serving per declared source from READ_SQL rows (absent: `initial`)."""
    got = {r[0]: Serving(*r) for r in rows}
    return {name: got.get(name) or initial(cfg, name) for name in cfg.sources}


def read(conn: psycopg.Connection, cfg: Config) -> dict[str, Serving]:
    """What production reads for every declared source, from the database (a store an older
    embed made is adopted first, so no reader ever takes its switches for the legacy space)."""
    if not conn.execute("SELECT to_regclass('embed_store.spaces') IS NOT NULL").fetchone()[0]:
        return {name: initial(cfg, name) for name in cfg.sources}  # no store: nothing was switched
    if not _adopted(conn):
        ensure(conn, cfg)
    return from_rows(cfg, conn.execute(READ_SQL).fetchall())


ADOPTED = "serving_adopted"  # the embed_store.migrations row saying `ensure` adopted older records


def _adopted(conn: psycopg.Connection) -> bool:
    if not conn.execute(f"SELECT to_regclass('{SCHEMA}.migrations') IS NOT NULL").fetchone()[0]:
        return False
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.migrations WHERE name = %s)", (ADOPTED,)).fetchone()[0]


def ensure(conn: psycopg.Connection, cfg: Config) -> None:
    """The table (a migration), and once per store the rows of sources an older embed switched,
    from what it recorded (the in-place column records, else the last switch events). Any other
    command may have run the migration first: adopting is its own step, and never overwrites a
    row this version wrote."""
    with conn.transaction():
        migrations.migrate(conn)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('embed_store.serving_adopt'))")
        if _adopted(conn):
            return
        for state in _recorded_before(conn, cfg):
            _upsert(conn, state, overwrite=False)
        conn.execute(f"INSERT INTO {SCHEMA}.migrations (name) VALUES (%s)", (ADOPTED,))


def _recorded_before(conn: psycopg.Connection, cfg: Config) -> list[Serving]:
    legacy = cfg.legacy_space.fingerprint
    columns: dict[tuple[str, str], tuple[str, str | None]] = {}
    if conn.execute("SELECT to_regclass('embed_store.inplace_columns') IS NOT NULL").fetchone()[0]:
        rows = conn.execute(f"SELECT source, column_name, space_fp, previous_fp FROM {SCHEMA}.inplace_columns")
        columns = {(s, c): (fp, prev) for s, c, fp, prev in rows.fetchall()}
    out = []
    for name, src in cfg.sources.items():
        live = columns.get((name, src.vector_column or ""))
        if live and live[0] != legacy:
            parked = next((c for (s, c), (fp, _) in columns.items() if s == name and fp == legacy), None)
            out.append(Serving(name, live[0], "honcho-inplace", parked, live[1], "honcho-inplace", told_fp=live[0]))
            continue
        ev = conn.execute(
            f"SELECT details FROM {SCHEMA}.events WHERE kind IN ('cutover', 'rollback') AND outcome = 'ok'"
            " AND source = %s ORDER BY at DESC, id DESC LIMIT 1", (name,)).fetchone()
        to = (ev[0] if ev else {}).get("to_fp")
        if to and to != legacy:
            out.append(Serving(name, to, "view", src.vector_column, ev[0].get("from_fp"), "view", views_fp=to,
                               told_fp=legacy))
    return out


def _upsert(conn: psycopg.Connection, s: Serving, event_id: int | None = None, *, overwrite: bool = True) -> None:
    on_conflict = sql.SQL("DO UPDATE SET {sets}, event_id = EXCLUDED.event_id, at = clock_timestamp()").format(
        sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in COLUMNS[1:])
    ) if overwrite else sql.SQL("DO NOTHING")
    conn.execute(
        sql.SQL("INSERT INTO {t} ({cols}, event_id) VALUES ({vals}, %s) ON CONFLICT (source) {on_conflict}").format(
            t=TABLE, cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            vals=sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)), on_conflict=on_conflict),
        (*(getattr(s, c) for c in COLUMNS), event_id),
    )


def _change(conn: psycopg.Connection, cfg: Config, source: str, event_id: int | None = None, **fields: Any) -> Serving:
    """Lock the source's row (in the caller's transaction), change `fields`, return the new state."""
    conn.execute(sql.SQL("SELECT 1 FROM {} WHERE source = %s FOR UPDATE").format(TABLE), (source,))
    new = replace(read(conn, cfg)[source], **fields)
    _upsert(conn, new, event_id)
    return new


def switched(conn: psycopg.Connection, cfg: Config, source: str, *, to_fp: str, mode: str, kind: str,
             legacy_column: str | None, event_id: int | None, views_done: bool) -> Serving:
    """Record a committed switch of production (cutover or rollback) in the caller's transaction.
    A cutover remembers where production came from (rollback's target); a rollback keeps it."""
    if mode not in MODES:
        raise EmbedError(f"unknown mode {mode!r}")
    cur = read(conn, cfg)[source]
    came = {"from_fp": cur.space_fp, "from_mode": cur.mode or "view"} if kind == "cutover" else {}
    views = {"views_fp": to_fp, "target_fp": None} if views_done else {"target_fp": to_fp}
    return _change(conn, cfg, source, event_id, space_fp=to_fp, mode=mode, legacy_column=legacy_column,
                   **came, **views)


def aim_views(conn: psycopg.Connection, cfg: Config, source: str, fp: str | None) -> Serving:
    """Say which space the next plan gives the views (None: the one production reads)."""
    return _change(conn, cfg, source, target_fp=fp)


def views_planned(conn: psycopg.Connection, cfg: Config, source: str, fp: str) -> Serving:
    """A plan gave the views `fp`: they are no longer behind (when that is what production reads)."""
    cur = read(conn, cfg)[source]
    target = None if cur.views_expected == fp else cur.target_fp
    if (cur.views_fp, cur.target_fp) == (fp, target):
        return cur
    return _change(conn, cfg, source, views_fp=fp, target_fp=target)


def told(conn: psycopg.Connection, cfg: Config, source: str, fp: str) -> Serving:
    """The Honcho settings for `fp` were delivered at the end of a switch."""
    return _change(conn, cfg, source, told_fp=fp)


# ------------------------------------------------------------------------- what SQLMesh renders
@dataclass(frozen=True)
class Rendered:
    """What one plan gives the views of one source: the space `<source>_active` serves and the
    column the legacy space's view reads."""

    fp: str
    legacy_column: str | None


def render(states: Mapping[str, Serving]) -> str:
    """The `embed_serving` variable's value for a plan that brings the views to `states`."""
    return json.dumps({s: {"fp": st.views_expected, "legacy_column": st.legacy_column}
                       for s, st in sorted(states.items())}, sort_keys=True, separators=(",", ":"))


def parse(cfg: Config, text: str | None) -> dict[str, Rendered]:
    """The rendering of `embed_serving` (empty: nothing was ever switched) for every source."""
    try:
        raw = json.loads(text) if text and text.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        given = {s: Rendered(str(v["fp"]), v.get("legacy_column")) for s, v in raw.items()}
    except (ValueError, KeyError, TypeError) as e:
        raise EmbedError(f"${ENV} is not what `embed db env` prints ({e})") from None
    legacy = cfg.legacy_space.fingerprint
    return {n: given.get(n) or Rendered(legacy, src.vector_column) for n, src in cfg.sources.items()}


def mismatch(cfg: Config, rendered: Mapping[str, Rendered], fetch: Callable[[str], list[tuple[Any, ...]]]) -> str:
    """'' when a plan rendered with `rendered` gives the views what the database says they must
    serve; else one line naming the difference. `fetch` runs plain SQL on the target database
    (psycopg, or SQLMesh's engine adapter in the before_all guard)."""
    states = from_rows(cfg, fetch(READ_SQL)) if fetch(EXISTS_SQL)[0][0] else {n: initial(cfg, n) for n in cfg.sources}
    wrong = []
    for name, want in states.items():
        got = rendered[name]
        if got.fp != want.views_expected:
            wrong.append(f"{name} on {cfg.label(got.fp)} instead of {cfg.label(want.views_expected)}")
        elif got.legacy_column != want.legacy_column:
            wrong.append(f"{name}'s legacy view on column {got.legacy_column} instead of {want.legacy_column}")
    if not wrong:
        return ""
    return ("this plan would serve " + "; ".join(wrong) + " (embed_store.serving says what production reads): "
            "switch with `embed cutover` / `embed rollback`, plan with `embed plan`, or for a plain `sqlmesh` "
            'run `eval "$(embed db env)"` first')
