"""A production reader sampling what the migration serves, continuously, from another process.

    python -m tests.faults.reader URL --project DIR --workdir DIR [--seed N] [--interval S]

Per source and sample: every row of `embed.<source>_active` grouped by space tag, and a
Honcho-style query through the view (`ORDER BY embedding <=> q LIMIT k` under one tenant's
filter, q a vector of the recorded space), each in ONE statement that also reads the space the
newest successful cutover/rollback event recorded (the legacy space when there is none). Any
row tagged with another space is a violation. With --inplace it also reads Honcho's own tables the way unmodified Honcho
does: the `embedding` column's typmod must be the recorded space's dims and every vector a
Honcho query returns must be the recorded space's vector for that row's current content.

Whether an `embed cutover`/`rollback` held its lock at the time is noted with each violation
(a mismatch inside a switch and one outside it are different bugs). Violations go to
DIR/reader.violations.jsonl (ids, fingerprints, counts; never text), counts to
DIR/reader.stats.json. Dropped connections and server restarts are counted and survived.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embed.config import Config
from tests.faults.common import connect_until, write_json
from tests.faults.world import HTTP, LEGACY, http_vectors, legacy_vectors

K = 10
# Vectors the reader can recompute from a row's content: the spaces the simulator writes into
# Honcho's own column (an in-place cutover only ever swaps between these in the suite).
GENERATORS: dict[str, Callable[[list[str]], np.ndarray]] = {LEGACY: legacy_vectors, HTTP: http_vectors}
SWITCH_LOCK = "embed.cutover.switch"
INPLACE = "honcho-inplace"

# Every check is ONE statement that also reads, in its own snapshot, what the event log says:
# a view's definition is looked up at parse time, its rows and the log at the statement's
# snapshot, so two statements (even in one REPEATABLE READ transaction) could pair a new view
# with an old log. `r` holds: fp, the space the newest successful cutover/rollback of the source
# (of a mode, for Honcho's columns) recorded (legacy when none); in_switch, whether a cutover/rollback holds its lock;
# targets, where a switch in flight may be going (the last switch's from_fp for a rollback, a
# space that passed its gate since the last switch for a cutover). The views are switched by
# `sqlmesh plan` (Honcho's columns by a swap) and the event recorded right after, in another
# transaction, so during a switch (or after one killed in between, until its rerun) a view may
# already serve the switch's target; any other space is a violation.
_RECORDED = sql.SQL("""(SELECT coalesce(last.to_fp, {legacy}) AS fp,
    EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND objid = (hashtext({lock})::bigint & 4294967295)::oid) AS in_switch,
    array_remove(ARRAY[last.from_fp], NULL) || ARRAY(SELECT g.space_fp FROM embed_store.events AS g
      WHERE g.kind = 'gate' AND g.outcome = 'ok' AND g.id > coalesce(last.id, 0)) AS targets
  FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT e.id, e.details ->> 'to_fp' AS to_fp, e.details ->> 'from_fp' AS from_fp FROM embed_store.events AS e
    WHERE e.kind IN ('cutover', 'rollback') AND e.outcome = 'ok' AND e.source = {source}
      AND ({mode}::text IS NULL OR coalesce(e.details ->> 'mode', 'view') = {mode})
    ORDER BY e.at DESC, e.id DESC LIMIT 1) AS last ON true) AS r""")


class Reader:
    def __init__(self, url: str, project: Path, workdir: Path, seed: int, interval: float, inplace: bool) -> None:
        self.url, self.interval, self.inplace = url, interval, inplace
        self.project = project
        self.cfg = Config.load(project, "local")
        self.by_fp = {s.fingerprint: s for s in self.cfg.spaces.values()}
        self.rng = random.Random(seed)
        self.violations = (workdir / "reader.violations.jsonl").open("a", buffering=1)
        self.error_log = (workdir / "reader.errors.jsonl").open("a", buffering=1)  # read errors other than lost connections
        self.stats_file = workdir / "reader.stats.json"
        self.stats: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.tenants: dict[str, list[tuple]] = {}
        self.stop = False

    # -- plumbing --------------------------------------------------------------------------
    def connect(self) -> psycopg.Connection:
        return connect_until(self.url, "fault-reader", self.errors, lambda: self.stop, autocommit=True)

    def write_stats(self) -> None:
        write_json(self.stats_file, {"pid": os.getpid(), **self.stats, "errors": dict(self.errors)})

    def wrong(self, kind: str, source: str, expected: str, got: str | None, in_switch: bool, targets: list[str],
              left: tuple[str, ...], **kw: Any) -> None:
        """A read of `got` where `expected` was recorded. Not a wrong space when `got` is where a
        switch is going or coming from: while it holds its lock (a switch window), or after it died
        midway, when `left` (what the database records: the views' target or the space they are
        still planned for in embed_store.serving, the swap's own record for Honcho's column) names
        `got` (an interrupted switch; its rerun must close the gap: the driver checks after every
        step that log, views, embed_store.serving and columns agree). Anything else is a violation."""
        if got in targets and (in_switch or got in left):
            self.stats[f"{'switch_window' if in_switch else 'interrupted_switch'}:{kind}"] += 1
            return
        self.violation(kind, source, expected, got, in_switch, **kw)

    def violation(self, kind: str, source: str, expected: str, got: str | None, in_switch: bool, **kw: Any) -> None:
        self.stats[f"violation:{kind}"] += 1
        self.violations.write(json.dumps({
            "t": time.time(), "kind": kind, "source": source, "expected": self._name(expected),
            "got": self._name(got), "in_switch": in_switch, **kw}) + "\n")

    def _name(self, fp: str | None) -> str | None:
        sp = self.by_fp.get(fp or "")
        return sp.name if sp else (fp[:12] if fp else None)

    def query_vector(self, fp: str) -> np.ndarray:
        """A query in the recorded space (a Honcho bound to that space embeds its queries there)."""
        name = self._name(fp) or "?"
        seed_text = f"query {self.rng.randrange(10**6)}"
        gen = GENERATORS.get(name)
        if gen is not None:
            return gen([seed_text])[0]
        v = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{name}:{seed_text}".encode()).digest()[:8], "little"))
        out = v.standard_normal(self.by_fp[fp].dims).astype(np.float32)
        return out / np.linalg.norm(out)

    # -- one sample ----------------------------------------------------------------------------
    def load_tenants(self, conn: psycopg.Connection) -> None:
        for name, src in self.cfg.sources.items():
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in src.tenant_columns)
            table = sql.Identifier(*src.table.split("."))
            self.tenants[name] = conn.execute(
                sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(cols, table)).fetchall()

    def recorded(self, name: str, mode: str | None = None) -> sql.Composable:
        """`r` for one source: the last switch of any mode for the views (an in-place switch moves
        them too), the last in-place switch for Honcho's own column."""
        return _RECORDED.format(source=sql.Literal(name), legacy=sql.Literal(self.cfg.legacy_space.fingerprint),
                                lock=sql.Literal(SWITCH_LOCK), mode=sql.Literal(mode))

    def aimed(self, conn: psycopg.Connection, name: str) -> tuple[str, ...]:
        """Where embed_store.serving says the views may be: aimed at by a view switch before its plan
        (target_fp), or still planned for (views_fp: an in-place swap committed, its views not yet)."""
        if not conn.execute("SELECT to_regclass('embed_store.serving') IS NOT NULL").fetchone()[0]:
            return ()
        row = conn.execute("SELECT target_fp, views_fp FROM embed_store.serving WHERE source = %s", (name,)).fetchone()
        return tuple(fp for fp in row or () if fp)

    def swapped(self, conn: psycopg.Connection, name: str) -> tuple[str, ...]:
        """The space Honcho's live column holds per the swap's own record (written in the swap's
        transaction); none before any in-place work."""
        if not conn.execute("SELECT to_regclass('embed_store.inplace_columns') IS NOT NULL").fetchone()[0]:
            return ()
        row = conn.execute("SELECT space_fp FROM embed_store.inplace_columns WHERE source = %s AND column_name = %s",
                           (name, self.cfg.source(name).vector_column)).fetchone()
        return (row[0],) if row else ()

    def sample(self, conn: psycopg.Connection) -> None:
        for name, src in self.cfg.sources.items():
            expected = self.check_view(conn, name)
            self.check_query(conn, name, src.tenant_columns, expected)
            if self.inplace:
                self.check_column(conn, name, expected)
        self.stats["samples"] += 1

    def check_view(self, conn: psycopg.Connection, name: str) -> str:
        """Every row the active view serves, by space tag, against the recorded space."""
        rows = conn.execute(sql.SQL(
            "SELECT r.fp, r.in_switch, r.targets, v.space_fp, count(v.*) FROM {r} LEFT JOIN {view} AS v ON true "
            "GROUP BY 1, 2, 3, 4").format(r=self.recorded(name), view=sql.Identifier("embed", f"{name}_active"))
        ).fetchall()
        for expected, in_switch, targets, fp, n in rows:
            self.stats["view_rows"] += n
            if fp is not None and fp != expected:
                self.wrong("view", name, expected, fp, in_switch, targets, self.aimed(conn, name), rows=n)
        return rows[0][0]

    def check_query(self, conn: psycopg.Connection, name: str, tenant_cols: tuple[str, ...], expected: str) -> None:
        """A Honcho-style top-k through the view under one tenant's filter."""
        if not self.tenants.get(name):
            return
        tenant = self.rng.choice(self.tenants[name])
        where = sql.SQL(" AND ").join(sql.SQL("v.{} IS NOT DISTINCT FROM %s").format(sql.Identifier(c))
                                      for c in tenant_cols)
        rows = conn.execute(
            sql.SQL("SELECT r.fp, r.in_switch, r.targets, v.source_id, v.space_fp FROM {r} LEFT JOIN LATERAL ("
                    "SELECT * FROM {view} AS v WHERE {w} ORDER BY v.embedding OPERATOR(public.<=>) %s LIMIT {k}"
                    ") AS v ON true").format(r=self.recorded(name), view=sql.Identifier("embed", f"{name}_active"),
                                             w=where, k=sql.Literal(K)),
            (*tenant, self.query_vector(expected)),
        ).fetchall()
        self.stats["queries"] += 1
        self.stats["query_rows"] += sum(1 for r in rows if r[3] is not None)
        bad = [r for r in rows if r[3] is not None and r[4] != r[0]]
        if bad:
            self.wrong("query", name, bad[0][0], bad[0][4], bad[0][1], bad[0][2], self.aimed(conn, name),
                       ids=[str(r[3]) for r in bad[:5]])

    def check_column(self, conn: psycopg.Connection, name: str, expected: str) -> None:
        """What an unmodified Honcho sees: the column's declared dims, and the vectors a query returns."""
        src = self.cfg.source(name)
        schema, table = src.table.split(".")
        fp, in_switch, typ = conn.execute(
            sql.SQL("SELECT r.fp, r.in_switch, (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a "
                    "WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped) FROM {r}").format(
                r=self.recorded(name, INPLACE)), (src.table, src.vector_column)).fetchone()
        space = self.by_fp.get(fp)
        self.stats["typmod_checks"] += 1
        if space is None or typ != f"vector({space.dims})":
            self.violation("typmod", name, fp, None, in_switch, column_type=typ)
            return
        if not self.tenants.get(name):
            return
        tenant = self.rng.choice(self.tenants[name])
        where = sql.SQL(" AND ").join(sql.SQL("t.{} IS NOT DISTINCT FROM %s").format(sql.Identifier(c))
                                      for c in src.tenant_columns)
        rows = conn.execute(
            sql.SQL("SELECT r.fp, r.in_switch, r.targets, t.id, t.content, t.embedding FROM {r} LEFT JOIN LATERAL ("
                    "SELECT t.{id} AS id, t.{text} AS content, t.{vec} AS embedding FROM {t} AS t WHERE {w} AND {live} "
                    "AND t.{vec} IS NOT NULL ORDER BY t.{vec} OPERATOR(public.<=>) %s LIMIT {k}) AS t ON true").format(
                r=self.recorded(name, INPLACE), id=sql.Identifier(src.id_column), text=sql.Identifier(src.text_column),
                vec=sql.Identifier(src.vector_column), t=sql.Identifier(schema, table), w=where,
                live=sql.SQL(src.live_filter), k=sql.Literal(K)),
            (*tenant, self.query_vector(expected)),
        ).fetchall()
        self.stats["column_queries"] += 1
        fp, in_switch, targets = rows[0][:3]
        rows = [r for r in rows if r[3] is not None]
        self.stats["column_rows"] += len(rows)
        if not rows:
            return
        got = np.stack([np.asarray(r[5].to_numpy(), np.float32) for r in rows])

        def off_in(space_fp: str) -> list[str] | None:
            """Ids whose vector is not `space_fp`'s vector of their text (None: cannot tell, a real model)."""
            gen = GENERATORS.get(self._name(space_fp) or "")
            if gen is None:
                return None
            want = gen([r[4] for r in rows])
            return [str(rows[i][3]) for i in np.flatnonzero(np.abs(got - want).max(axis=1) > 1e-5)]

        off = off_in(fp)
        if off:
            going = next((t for t in targets if off_in(t) == []), None)
            self.wrong("column", name, fp, going, in_switch, targets if going else [], self.swapped(conn, name),
                       ids=off[:5], rows=len(off))

    # -- loop --------------------------------------------------------------------------------------
    def run(self) -> None:
        conn = self.connect()
        last = 0.0
        while not self.stop:
            try:
                if conn.closed:
                    conn = self.connect()
                    self.stats["reconnects"] += 1
                if not self.tenants or self.stats["samples"] % 200 == 0:
                    self.load_tenants(conn)
                self.sample(conn)
            except psycopg.OperationalError as e:
                self.errors[type(e).__name__] += 1
                conn.close()
            except psycopg.Error as e:  # e.g. a view being replaced: counted, not a wrong-space read
                what = e.diag.message_primary if e.sqlstate == "42P01" else None  # names a relation, never text
                key = f"{type(e).__name__}:{e.sqlstate}" + (f" ({what})" if what else "")
                self.errors[key] += 1
                self.error_log.write(json.dumps({"t": time.time(), "error": key}) + "\n")
            if time.monotonic() - last > 0.5:
                self.write_stats()
                last = time.monotonic()
            time.sleep(self.interval)
        self.write_stats()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--inplace", action="store_true", help="also check Honcho's own vector columns")
    a = ap.parse_args(argv)
    reader = Reader(a.url, a.project, a.workdir, a.seed, a.interval, a.inplace)

    def on_term(signum: int, frame: FrameType | None) -> None:
        reader.stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    reader.run()


if __name__ == "__main__":
    main()
