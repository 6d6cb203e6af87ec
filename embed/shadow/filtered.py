"""Filtered recall as Honcho sees it: served recall and latency per pgvector scan setting.

Honcho's reads (v3: src/crud/document.py, src/utils/search.py) are `WHERE <tenant> ORDER BY
embedding <=> q LIMIT k`, sent unprepared (its engine sets psycopg's prepare_threshold None: a
custom plan per statement) with whatever `hnsw.ef_search` and `hnsw.iterative_scan` its
session has: it sets neither, so a deployment runs pgvector's defaults (40, off) unless its role
or database says otherwise. With `iterative_scan = off` an HNSW scan hands the tenant filter
ef_search candidates once: a selective filter leaves fewer than k rows (Honcho bug #1048).
`strict_order` / `relaxed_order` (pgvector >= 0.8) resume the scan until k rows pass or
`hnsw.max_scan_tuples` is reached; relaxed results may come back slightly out of distance order,
and Honcho's read has no outer ORDER BY to fix that.

The sweep reuses a shadow run's queries (its labelled text queries, under their own tenant
filters: a workspace alone for Honcho's message search, and its sampled stored rows) and their
exact per-tenant rankings.
It measures only the queries whose tenant the planner serves through the HNSW index (EXPLAIN,
per tenant and setting: pgvector's cost estimate grows with ef_search); a tenant answered by a
btree and an exact sort is exact at every setting and says nothing about the index. Each setting
is applied with SET LOCAL inside the shadow's read transaction and restored after.

The recommendation is the cheapest setting whose recall meets the gate's floor
(`embed_gates.min_ann_recall`), in `SETTINGS` order: the lowest ef_search first (it is the work
of every read, filtered or not), then off, strict_order, relaxed_order (an iterative scan costs
more only when the filter starves the first pass; relaxed last for the ordering above). The gate
reads the served recall at the session's own settings (what Honcho runs with), never at the
recommended one: a recommendation is applied (`ALTER ROLE ... SET`) and the shadow run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from embed.shadow.inputs import (
    TIE_EPS,
    CrossSpaceError,
    Hits,
    QueryVectors,
    SpaceReader,
    tenant_key,
    tie_aware_exact,
)

ITERATIVE_SCANS = ("off", "strict_order", "relaxed_order")
EF_SEARCH = (40, 100, 200)
PGVECTOR_DEFAULT = (40, "off")
MAX_QUERIES = 100  # per space and source: the sweep runs each of them once per setting (~20 % of a run at Honcho scale)
ROLE_PLACEHOLDER = "<honcho role>"


@dataclass(frozen=True)
class ScanSetting:
    """One pair of pgvector session settings an HNSW read runs with."""

    ef_search: int
    iterative_scan: str

    @property
    def cost_rank(self) -> tuple[int, int]:
        """Cheapest first: the lower ef_search, then off, strict_order, relaxed_order."""
        return self.ef_search, ITERATIVE_SCANS.index(self.iterative_scan)

    @property
    def label(self) -> str:
        return f"ef_search={self.ef_search} iterative_scan={self.iterative_scan}"

    @property
    def is_default(self) -> bool:
        return (self.ef_search, self.iterative_scan) == PGVECTOR_DEFAULT

    def statements(self, role: str | None) -> list[str]:
        """The `ALTER ROLE ... SET` statements that give every new session of `role` this setting."""
        who = sql.Identifier(role).as_string(None) if role else ROLE_PLACEHOLDER
        return [
            f"ALTER ROLE {who} SET hnsw.ef_search = {int(self.ef_search)};",
            f"ALTER ROLE {who} SET hnsw.iterative_scan = {sql.Literal(self.iterative_scan).as_string(None)};",
        ]


SETTINGS = tuple(ScanSetting(ef, it) for ef in EF_SEARCH for it in ITERATIVE_SCANS)  # cheapest first


@dataclass(frozen=True)
class FilteredRecall:
    """Served recall and latency of one space's sweep queries at one setting."""

    space: str
    space_fp: str
    ef_search: int
    iterative_scan: str
    k: int
    queries: int  # sweep queries (on tenant filters the planner serves through HNSW at some setting)
    index_queries: int  # of them, planned through the HNSW index at this setting (EXPLAIN)
    recall: float | None  # mean |served top-k ∩ exact top-k| / |exact top-k|
    short: int  # queries that returned fewer rows than the tenant holds up to k
    unordered: int  # queries whose rows came back out of distance order
    p50_ms: float | None
    p95_ms: float | None
    session: bool  # the setting of this session: what Honcho runs with, what the gate reads

    @property
    def setting(self) -> ScanSetting:
        return ScanSetting(self.ef_search, self.iterative_scan)


@dataclass(frozen=True)
class FilteredSweep:
    """One space's sweep for one source, and the setting it recommends."""

    space: str
    space_fp: str
    sampled: int  # queries the shadow ran (text queries and stored rows)
    tenants: int  # distinct tenant filters among them
    index_tenants: int  # of them, planned through the HNSW index at some setting
    index: str | None
    session: ScanSetting
    floor: float
    rows: tuple[FilteredRecall, ...]
    recommended: ScanSetting | None  # None: nothing served through HNSW, or no setting meets the floor
    max_scan_tuples: int | None

    @property
    def needed(self) -> bool:
        """Whether Honcho must be told a setting: one is recommended and it is not pgvector's default."""
        return self.recommended is not None and not self.recommended.is_default

    def at(self, setting: ScanSetting) -> FilteredRecall | None:
        return next((r for r in self.rows if r.setting == setting), None)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["session"] = asdict(self.session)
        out["recommended"] = asdict(self.recommended) if self.recommended else None
        out["rows"] = [asdict(r) for r in self.rows]
        return out


def session_setting(conn: psycopg.Connection) -> ScanSetting:
    """The session's hnsw.ef_search / hnsw.iterative_scan (the database's and role's defaults)."""
    ef, it = conn.execute(
        "SELECT current_setting('hnsw.ef_search', true), current_setting('hnsw.iterative_scan', true)"
    ).fetchone()
    return ScanSetting(int(ef or PGVECTOR_DEFAULT[0]), str(it or PGVECTOR_DEFAULT[1]))


def _apply(conn: psycopg.Connection, s: ScanSetting) -> None:
    conn.execute(
        "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true)",
        (str(s.ef_search), s.iterative_scan),
    )


def _recall(ann: Hits, exact: Hits, k: int) -> tuple[float | None, int, int]:
    """(mean recall@k, queries short of rows, queries out of distance order)."""
    truth = tie_aware_exact(ann, exact, k)
    rec, short, unordered = [], 0, 0
    for ids, dists, e in zip(ann.ids, ann.dists, truth, strict=True):
        if not e:
            continue
        rec.append(len(set(ids[:k]) & set(e)) / len(e))
        short += len(ids[:k]) < len(e)
        unordered += any(a > b + TIE_EPS for a, b in pairwise(dists))
    return (float(np.mean(rec)) if rec else None), short, unordered


def _pct(ms: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(ms, q)), 3) if len(ms) else None


def sweep(
    conn: psycopg.Connection,
    reader: SpaceReader,
    qv: QueryVectors,
    tenants: Sequence[Sequence[Any]],
    exact: Hits,
    k: int,
    *,
    floor: float,
    settings: Sequence[ScanSetting] = SETTINGS,
    limit: int = MAX_QUERIES,
    fetch: int | None = None,
) -> FilteredSweep:
    """Served recall@k and latency of `qv` (one query per tenant filter, `exact` their exact
    rankings, at least k deep) at each setting, on the tenant filters the planner serves through
    the HNSW index; at most `limit` of those queries, a seeded sample. `fetch` rows are read per
    query (default k); recall is counted on the first k."""
    index = reader.hnsw_index(conn)
    session = session_setting(conn)
    max_tuples = conn.execute("SELECT current_setting('hnsw.max_scan_tuples', true)").fetchone()[0]
    first: dict[tuple, int] = {}
    for i, t in enumerate(tenants):
        first.setdefault(tenant_key(t), i)
    settings = sorted(set(settings) | {session}, key=lambda s: s.cost_rank)  # the gate's setting too

    def planned(setting: ScanSetting, keys: Sequence[tuple]) -> set[tuple]:
        _apply(conn, setting)
        return {key for key in keys if reader.served_uses_index(conn, _one(qv, first[key]), tenants[first[key]],
                                                                 fetch or k, index)}

    indexed: set[tuple] = set()
    rows: list[FilteredRecall] = []
    try:
        if index and len(qv):
            # pgvector's cost estimate grows with ef_search: a tenant not indexed at the lowest is not at any
            cheapest = min(s.ef_search for s in settings)
            for it in sorted({s.iterative_scan for s in settings}):
                indexed |= planned(ScanSetting(cheapest, it), list(first))
        picked = [i for i, t in enumerate(tenants) if tenant_key(t) in indexed]
        if len(picked) > limit:
            picked = sorted(np.random.default_rng(0).choice(picked, limit, replace=False).tolist())
        if picked:
            sub = _one(qv, picked)
            sub_tenants = [tenants[i] for i in picked]
            sub_exact = _cut(Hits([exact.ids[i] for i in picked], [exact.dists[i] for i in picked], []), k)
            keys = sorted({tenant_key(t) for t in sub_tenants}, key=str)
            for s in settings:
                uses = planned(s, keys)
                got = reader.search(conn, sub, sub_tenants, fetch or k, exact=False)
                recall, short, unordered = _recall(_cut(got, k), sub_exact, k)
                rows.append(FilteredRecall(
                    reader.space.name, reader.fingerprint, s.ef_search, s.iterative_scan, k, len(picked),
                    sum(tenant_key(t) in uses for t in sub_tenants), recall, short, unordered,
                    _pct(got.ms, 50), _pct(got.ms, 95), s == session,
                ))
    finally:
        _apply(conn, session)
    ok = [r for r in rows if r.recall is not None and r.recall >= floor]
    return FilteredSweep(
        reader.space.name, reader.fingerprint, len(qv), len(first), len(indexed), index, session, floor,
        tuple(rows), ok[0].setting if ok else None, int(max_tuples) if max_tuples else None,
    )


def _one(qv: QueryVectors, idx: int | Sequence[int]) -> QueryVectors:
    pick = [idx] if isinstance(idx, int) else list(idx)
    return QueryVectors(qv.space_fp, tuple(qv.keys[i] for i in pick), qv.vectors[pick])


def _cut(h: Hits, k: int) -> Hits:
    return Hits([x[:k] for x in h.ids], [x[:k] for x in h.dists], h.ms)


def joined(a: QueryVectors, b: QueryVectors) -> QueryVectors:
    """Two query sets of one space as one (a's rows first)."""
    if a.space_fp != b.space_fp:
        raise CrossSpaceError("query vectors of two spaces are never joined")
    return QueryVectors(a.space_fp, (*a.keys, *b.keys), np.concatenate([a.vectors, b.vectors]))


def joined_hits(a: Hits, b: Hits) -> Hits:
    return Hits([*a.ids, *b.ids], [*a.dists, *b.dists], [*a.ms, *b.ms])


def role_of(url: str) -> str | None:
    """The role a connection URL logs in as (None: not in the URL)."""
    try:
        return conninfo_to_dict(url).get("user") or None
    except psycopg.ProgrammingError:
        return None


def combine(sweeps: Sequence[FilteredSweep]) -> ScanSetting | None:
    """The cheapest setting that meets the floor in every sweep that measured the index (one
    session setting serves all of Honcho's tables); None when none does or none measured."""
    measured = [s for s in sweeps if s.rows]
    if not measured:
        return None
    ok = [set(r.setting for r in s.rows if r.recall is not None and r.recall >= s.floor) for s in measured]
    both = set.intersection(*ok)
    return min(both, key=lambda s: s.cost_rank) if both else None


def from_dict(d: dict[str, Any]) -> FilteredSweep:
    """A sweep as `as_dict` wrote it (a stored shadow result)."""
    rows = tuple(FilteredRecall(**r) for r in d["rows"])
    rec = ScanSetting(**d["recommended"]) if d.get("recommended") else None
    return FilteredSweep(**{**d, "rows": rows, "session": ScanSetting(**d["session"]), "recommended": rec})


def advice(sw: FilteredSweep, role: str | None = None) -> list[str]:
    """What the sweep says to do, as lines (the statements with `role`, or a placeholder)."""
    if sw.index is None:
        return [f"{sw.space}: no HNSW index on its column: every read is exact, no scan setting matters"]
    if not sw.rows:
        return [f"{sw.space}: the planner answers all {sw.tenants} sampled tenant filter(s) with an exact plan, "
                "not the HNSW index: no scan setting matters at this size"]
    here = sw.at(sw.session)
    now = (f"this session runs {sw.session.label}"
           + (f" (recall {fmt(here.recall)})" if here else " (not swept)"))
    if sw.recommended is None:
        best = max(sw.rows, key=lambda r: (r.recall or 0.0, [-x for x in r.setting.cost_rank]))
        return [f"{sw.space}: no swept setting reaches recall {sw.floor} on HNSW-served tenants (best: "
                f"{best.setting.label}, {fmt(best.recall)}); {now}: raise ef_search further or rebuild the index"]
    rec = sw.at(sw.recommended)
    head = f"{sw.space}: cheapest setting with recall >= {sw.floor}: {sw.recommended.label} ({fmt(rec and rec.recall)})"
    if here is not None and here.recall is not None and here.recall >= sw.floor:
        return [f"{head}; {now}: it meets the floor, nothing to apply"]
    order = (f" (relaxed_order: {rec.unordered} of {rec.queries} queries came back out of distance order, and "
             "Honcho's read has no outer ORDER BY to fix it)" if rec and rec.unordered else "")
    return [f"{head}; {now}: apply it for Honcho's role (new sessions pick it up), then run embed shadow again{order}:",
            *(f"  {s}" for s in sw.recommended.statements(role))]


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
