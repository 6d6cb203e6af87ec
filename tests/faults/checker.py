"""The invariants, checked after a run by reading the database (and the run's logs) directly.

- store: every live source row with non-blank text has exactly one vector in every space kept
  in sync, under the sha256 of its current text (for the HTTP space also the exact vector the
  endpoint gives that text); no vector for a deleted or soft-deleted row, no duplicates; the
  only skip records are blank rows ('empty');
- active: per source, the space the last successful cutover/rollback recorded is the one the
  active view serves and the one config.yaml names, and no switch still holds its lock;
- events: per source and mode, every successful cutover/rollback starts where the previous
  one ended (the first from the legacy space), and every cutover had a passing gate for its
  space after the previous switch;
- in-place: Honcho's own column holds, in every live row, the recorded space's vector of the
  row's current text (or NULL: 'pending', Honcho's reconciler fills it);
- privacy: no memory text (seeded corpus, anything in the tables, anything the simulator
  wrote: its marker) and not the planted API key in any log line of the run.

Every check returns violations (dicts of ids, names and counts); the caller decides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from embed.config import Config
from embed.db.connection import connect
from embed.honcho.synthetic.corpus import generate
from embed.store import serving
from tests.faults.world import CANDIDATES, CORPUS, HTTP, LEGACY, http_vectors, legacy_vectors
from tests.support.backfill import expected, skipped, store_table

MIN_TEXT = 12  # shorter texts ("ok", "👍") would match innocent log lines; the marker covers the rest
GENERATORS = {LEGACY: legacy_vectors, HTTP: http_vectors}


@dataclass
class Report:
    checks: Counter[str] = field(default_factory=Counter)
    violations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, check: str, found: Iterable[dict[str, Any]]) -> None:
        found = list(found)
        self.checks[check] += 1
        self.violations += [{"check": check, **v} for v in found]


def _last_switches(conn: Any, mode: str | None = None) -> dict[str, dict[str, Any]]:
    """Per source, the newest successful cutover/rollback (of `mode`; any mode moves the views)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (source) source, id, details FROM embed_store.events WHERE kind IN ('cutover', 'rollback') "
        "AND outcome = 'ok' AND (%s::text IS NULL OR coalesce(details ->> 'mode', 'view') = %s) "
        "ORDER BY source, at DESC, id DESC", (mode, mode)).fetchall()
    return {r[0]: {"id": r[1], **r[2]} for r in rows}


def check_store(cfg: Config, url: str, space: str, source: str) -> list[dict[str, Any]]:
    keep, blank = expected(url, cfg, source)
    with connect(url) as conn:
        rows = conn.execute(sql.SQL("SELECT source_id, content_sha256, space_fp, embedding FROM {}").format(
            sql.SQL(store_table(cfg, source, space)))).fetchall()
        texts = dict(conn.execute(sql.SQL("SELECT {}, {} FROM {}").format(
            sql.Identifier(cfg.source(source).id_column), sql.Identifier(cfg.source(source).text_column),
            sql.SQL(cfg.source(source).table))).fetchall())
    where = {"space": space, "source": source}
    out: list[dict[str, Any]] = []
    dups = [i for i, n in Counter(r[0] for r in rows).items() if n > 1]
    if dups:
        out.append({**where, "what": "duplicate vectors", "ids": [str(i) for i in dups[:5]], "rows": len(dups)})
    fp = cfg.space(space).fingerprint
    if any(r[2] != fp for r in rows):
        out.append({**where, "what": "vector of another space in the store table"})
    got = {r[0]: bytes(r[1]) for r in rows}
    missing = sorted(str(i) for i in keep.keys() - got.keys())
    dead = sorted(str(i) for i in got.keys() - keep.keys())
    stale = sorted(str(i) for i in keep.keys() & got.keys() if keep[i] != got[i])
    for what, ids in (("live row without a vector", missing), ("vector of a deleted/blank row", dead),
                      ("vector of old content", stale)):
        if ids:
            out.append({**where, "what": what, "ids": ids[:5], "rows": len(ids)})
    skips = skipped(url, cfg, source, space)
    odd = sorted(i for i, (_, reason) in skips.items() if reason != "empty")
    if odd:
        out.append({**where, "what": "row skipped for a reason other than blank text", "ids": odd[:5],
                    "rows": len(odd), "reasons": sorted({skips[i][1] for i in odd})})
    unrecorded = sorted(str(i) for i in blank if str(i) not in skips)
    if unrecorded:
        out.append({**where, "what": "blank row without a skip record", "ids": unrecorded[:5]})
    gen = GENERATORS.get(space)
    fresh = [r for r in rows if r[0] in keep and keep[r[0]] == bytes(r[1])]
    if gen is not None and fresh:
        want = gen([texts[r[0]] for r in fresh])
        have = np.stack([np.asarray(r[3].to_numpy(), np.float32) for r in fresh])
        wrong = [str(fresh[i][0]) for i in np.flatnonzero(np.abs(have - want).max(axis=1) > 1e-5)]
        if wrong:
            out.append({**where, "what": "vector is not the space's vector of the current text", "ids": wrong[:5],
                        "rows": len(wrong)})
    return out


def check_active(cfg: Config, url: str) -> list[dict[str, Any]]:
    """The views, the event log and embed_store.serving agree on what each source reads, and no
    switch is left half-done."""
    out: list[dict[str, Any]] = []
    with connect(url) as conn:
        last = _last_switches(conn)
        reads = serving.read(conn, cfg)
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                            "AND objid = (hashtext('embed.cutover.switch')::bigint & 4294967295)::oid").fetchone()[0]
        for source in cfg.sources:
            recorded = (last.get(source) or {}).get("to_fp") or cfg.legacy_space.fingerprint
            served = {r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT space_fp FROM {}").format(
                sql.Identifier("embed", f"{source}_active")))}
            st = reads[source]
            if served - {recorded} or st.space_fp != recorded or st.views_behind:
                names = {s.fingerprint: s.name for s in cfg.spaces.values()}
                out.append({"source": source, "what": "active space disagrees", "recorded": names.get(recorded),
                            "served": sorted(names.get(f, f) for f in served), "serving": names.get(st.space_fp),
                            "views_behind": st.views_behind})
    if held:
        out.append({"what": "a cutover/rollback lock is still held after the run"})
    return out


def check_events(cfg: Config, url: str) -> list[dict[str, Any]]:
    """Every successful switch starts where the previous one left what it switches: a view switch
    where the last switch of any mode left the views (an in-place switch moves them too), an
    in-place switch where the last in-place switch left Honcho's column; and every cutover had a
    passing gate for its space since the source's previous switch."""
    out: list[dict[str, Any]] = []
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT id, kind, outcome, source, space_fp, coalesce(details ->> 'mode', 'view'), details ->> 'from_fp', "
            "details ->> 'to_fp' FROM embed_store.events WHERE kind IN ('cutover', 'rollback', 'gate') ORDER BY at, id"
        ).fetchall()
    legacy = cfg.legacy_space.fingerprint
    views: dict[str, str] = {}
    column: dict[str, str] = {}
    since: dict[str, int] = {}
    gated: list[tuple[int, str]] = [(r[0], r[4]) for r in rows if r[1] == "gate" and r[2] == "ok"]
    for rid, kind, outcome, source, _, mode, from_fp, to_fp in rows:
        if kind == "gate" or outcome != "ok":
            continue
        where = column if mode == "honcho-inplace" else views
        if from_fp != where.get(source, legacy):
            out.append({"event": rid, "source": source, "what": f"{kind} ({mode}) starts where the previous "
                        "switch did not end"})
        if kind == "cutover" and not any(since.get(source, 0) < g < rid and fp == to_fp for g, fp in gated):
            out.append({"event": rid, "source": source, "what": "cutover without a passing gate since the last switch"})
        views[source], since[source] = to_fp, rid
        if mode == "honcho-inplace":
            column[source] = to_fp
    return out


def check_inplace(cfg: Config, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names = {s.fingerprint: s.name for s in cfg.spaces.values()}
    with connect(url) as conn:
        last = _last_switches(conn, "honcho-inplace")
        for source, src in cfg.sources.items():
            fp = (last.get(source) or {}).get("to_fp") or cfg.legacy_space.fingerprint
            gen = GENERATORS.get(names.get(fp, ""))
            if gen is None:
                continue
            # every row, the soft-deleted included: a swap must not bring one back with its old text's vector
            rows = conn.execute(sql.SQL("SELECT {}, {}, {} FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(src.id_column), sql.Identifier(src.text_column), sql.Identifier(src.vector_column),
                sql.SQL(src.table), sql.Identifier(src.vector_column))).fetchall()
            if not rows:
                continue
            want = gen([r[1] for r in rows])
            have = np.stack([np.asarray(r[2].to_numpy(), np.float32) for r in rows])
            wrong = [str(rows[i][0]) for i in np.flatnonzero(np.abs(have - want).max(axis=1) > 1e-5)]
            if wrong:
                out.append({"source": source, "space": names.get(fp), "what": "Honcho's column holds a vector that is "
                            "not the recorded space's vector of the row's text", "ids": wrong[:5], "rows": len(wrong)})
    return out


def memory_texts(cfg: Config, url: str) -> set[str]:
    """Every text the run could leak: the seeded corpus and whatever the tables hold now."""
    corpus = generate(**CORPUS)
    texts = {r["content"] for table in (corpus.documents, corpus.messages, corpus.message_embeddings) for r in table}
    with connect(url) as conn:
        for table in ("documents", "messages", "message_embeddings"):
            texts |= {r[0] for r in conn.execute(sql.SQL("SELECT content FROM {}").format(sql.Identifier(table)))}
    return {t.strip() for t in texts if t and len(t.strip()) >= MIN_TEXT}


def check_privacy(files: Iterable[Path], texts: set[str], marker: re.Pattern[str],
                  secrets: Iterable[str]) -> tuple[int, list[dict[str, Any]]]:
    """(lines scanned, leaks): a leak names the file and line number and what kind of thing leaked."""
    secrets = [s for s in secrets if s]
    lines, out = 0, []
    for f in files:
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            lines += 1
            what = ("secret" if any(s in line for s in secrets) else "simulator text" if marker.search(line)
                    else "memory text" if any(t in line for t in texts) else None)
            if what:
                out.append({"file": f.name, "line": n, "what": what})
    return lines, out


def check_all(cfg: Config, url: str, *, inplace: bool) -> Report:
    """Every database invariant (privacy is checked by the driver, which knows the log files)."""
    report = Report()
    for space in CANDIDATES:
        for source in cfg.sources:
            report.add("store", check_store(cfg, url, space, source))
    report.add("active", check_active(cfg, url))
    report.add("events", check_events(cfg, url))
    if inplace:
        report.add("inplace", check_inplace(cfg, url))
    return report
