"""Everything a shadow run reads: each space's vectors and rankings, and the query sets.

Invariant 2 in code: a `SpaceReader` is bound to one (source, space). Every statement it builds
reads one vector column of one table, every query vector it accepts is a `QueryVectors` tagged
with the fingerprint of the space that made it (anything else is refused with
`CrossSpaceError`), and its numpy work (the exact global scan) only ever sees its own vectors.
Results leave a reader as ids and distances, never as vectors, so two spaces meet only as
ranked id lists.

Searches, per query and tenant (the source's tenant columns, as the application filters them):
  served  the application's read: `WHERE tenant AND live AND vec IS NOT NULL ORDER BY vec <op> q
          LIMIT k`, the planner's choice of plan (HNSW or not) — what users get;
  exact   the same rows and filters, scanned exactly with numpy, ties broken by id: the rows with
          a current vector are settled once per snapshot (`current`: one pass of the content
          hash check over the table, not one per query), then each tenant's queries are one
          matrix product against that tenant's vectors;
  probe   unfiltered over the whole table with `enable_seqscan = off`, so the HNSW index
          answers (checked with EXPLAIN); its exact counterpart is a numpy scan of all vectors
          of the same table read in the same snapshot (`exact_global`).

Query sets (`TextQueries`): the seeded labelled set in embed_eval (queries + qrels, judging the
`documents` source), or a JSONL file (`qid`, `text`, optional `lang`/`doc_langs`, and the
source's tenant columns) with qrels as JSONL (`qid`, `doc_id`, `relevance`) or TREC lines
(`qid 0 doc_id relevance`). Errors name a file line, never its text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql

from embed.config import Config, Source
from embed.db.idents import column
from embed.errors import EmbedError
from embed.spaces import Space
from embed.store import SCHEMA
from embed.store.location import locate
from embed.store.target import Target

if TYPE_CHECKING:
    import polars as pl

OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
# Distances equal within this are ties: two implementations (pgvector, numpy BLAS) sum float32
# products in different orders, so the same distance can differ in the 6th-7th digit.
TIE_EPS = 1e-5


class CrossSpaceError(EmbedError):
    """A query vector of one space was offered to a reader of another space."""


@dataclass(frozen=True)
class QueryVectors:
    """Query vectors and the fingerprint of the space that made them (rows align with `keys`)."""

    space_fp: str
    keys: tuple[str, ...]
    vectors: np.ndarray  # float32 (n, dims)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Hits:
    """Ranked results of many queries in one space: ids (as text) and distances per query."""

    ids: list[list[str]]
    dists: list[list[float]]
    ms: list[float]


def embed_queries(embedder: Any, space: Space, keys: Sequence[str], texts: Sequence[str]) -> QueryVectors:
    """Embed query texts with `space`'s own embedder (kind 'query') and tag them with its fingerprint."""
    if embedder.space.fingerprint != space.fingerprint:
        raise CrossSpaceError(f"the embedder of space {embedder.space.name} cannot make queries for {space.name}")
    vecs = embedder.embed(list(texts), "query").vectors if texts else np.zeros((0, space.dims), np.float32)
    return QueryVectors(space.fingerprint, tuple(keys), np.asarray(vecs, dtype=np.float32))


def distances(q: np.ndarray, mat: np.ndarray, metric: str, sq: np.ndarray | None) -> np.ndarray:
    """(len(q), len(mat)) distances as pgvector's operator of `metric` defines them; `mat` rows are
    unit vectors for cosine, `sq` their squared norms for l2."""
    q = q.astype(np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    dots = q @ mat.T
    if metric == "cosine":
        return 1.0 - dots
    if metric == "ip":
        return -dots
    assert sq is not None
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", q, q)[:, None] + sq[None, :] - 2.0 * dots, 0.0))


def top_k(dist: np.ndarray, ids: np.ndarray, k: int, within: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k nearest, ordered by distance then id (as `ORDER BY dist, id`); only
    positions in `within` are sorted when it holds at least k of them."""
    cols = within if within is not None and len(within) >= k else None
    if cols is None:
        kth = np.partition(dist, k - 1)[k - 1] if len(dist) > k else np.inf
        cols = np.flatnonzero(dist <= kth)
    return cols[np.lexsort((ids[cols], dist[cols]))][:k]


def tenant_key(values: Sequence[Any]) -> tuple[str | None, ...]:
    """A tenant filter's values as compared in SQL (`col = value` on text, `IS NULL` for None)."""
    return tuple(None if v is None else str(v) for v in values)


@dataclass
class Current:
    """One space's live rows with a current vector, settled once per snapshot: ids, tenant
    values, vectors (unit rows for cosine), and row positions per tenant filter (made on use)."""

    ids: np.ndarray  # str
    tenants: list[tuple[str | None, ...]]
    mat: np.ndarray  # float32 (n, dims)
    sq: np.ndarray | None  # squared norms, l2 only
    groups: dict[int, dict[tuple[str | None, ...], np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, ids: list[str], tenants: list[tuple[Any, ...]], vecs: list[Any], space: Space) -> Current:
        mat = np.stack([v.to_numpy() for v in vecs]).astype(np.float32) if vecs else np.zeros((0, space.dims))
        if space.metric == "cosine":
            mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-30)
        sq = np.einsum("ij,ij->i", mat, mat) if space.metric == "l2" else None
        return cls(np.array(ids, dtype=str), [tenant_key(t) for t in tenants], mat, sq)

    def rows_of(self, key: tuple[str | None, ...]) -> np.ndarray:
        """Positions of the rows whose leading tenant values equal `key` (all rows for `()`)."""
        if len(key) not in self.groups:
            by: dict[tuple[str | None, ...], list[int]] = {}
            for i, t in enumerate(self.tenants):
                by.setdefault(t[: len(key)], []).append(i)
            self.groups[len(key)] = {t: np.array(ix, dtype=np.int64) for t, ix in by.items()}
        return self.groups[len(key)].get(key, np.zeros(0, dtype=np.int64))


def _regclass(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


class SpaceReader:
    """Reads and ranks one space's vectors of one source; refuses query vectors of other spaces."""

    def __init__(self, conn: psycopg.Connection, cfg: Config, source: Source, space: Space) -> None:
        self.source = source
        self.space = space
        self.target = Target(source, space)
        loc = locate(conn, cfg, source, space)
        self.table, self.column, self.in_source = loc.relation, loc.column, loc.in_source
        self.op = sql.SQL(OPERATORS[space.metric])
        self.tenants = [column(c) for c in source.tenant_columns]
        self._current: Current | None = None

    @property
    def fingerprint(self) -> str:
        return self.space.fingerprint

    @property
    def relation(self) -> str:
        """`schema.table` holding the vectors (the source table, or the store table)."""
        name = self.source.table if self.in_source else f"{SCHEMA}.{self.target.table}"
        return name if "." in name else f"public.{name}"

    @property
    def where(self) -> str:
        """Where the vectors are read from, for messages and params (names only)."""
        return f"{self.relation}.{self.column}"

    # ------------------------------------------------------------------ SQL pieces
    def rows(self) -> sql.Composed:
        """Derived table (id, tenant columns..., vec) of the live rows with a current vector.

        For a store table this is what the per-space SQLMesh view serves: store rows joined to
        live source rows whose content hash still matches, the hash check written as the view
        writes it (`NULLIF(match, FALSE) IS NOT NULL`, models/space_vectors.sql): as a second join
        key the planner would expect one row per query and sort the whole store instead of using
        its HNSW index, and inside COALESCE it would expect half the rows (a tenant's read sorted
        where Honcho's would use the index).
        """
        t = self.target
        vec = column(self.column)
        if self.in_source:
            cols = [sql.SQL("{} AS id").format(t.id), *self.tenants, sql.SQL("{} AS vec").format(vec)]
            return sql.SQL("SELECT {} FROM {} WHERE ({}) AND {} IS NOT NULL").format(
                sql.SQL(", ").join(cols), t.src, t.live, vec
            )
        live_cols = [sql.SQL("{} AS id").format(t.id), *self.tenants, sql.SQL("{}::text AS text").format(t.text)]
        live = sql.SQL("SELECT {} FROM {} WHERE ({})").format(sql.SQL(", ").join(live_cols), t.src, t.live)
        cols = [
            sql.SQL("v.source_id AS id"),
            *(sql.SQL("s.{}").format(c) for c in self.tenants),
            sql.SQL("v.{} AS vec").format(vec),
        ]
        return sql.SQL(
            "SELECT {cols} FROM {store} AS v JOIN ({live}) AS s ON s.id = v.source_id"
            " WHERE v.space_fp = {fp} AND NULLIF({sha} = v.content_sha256, FALSE) IS NOT NULL"
        ).format(
            cols=sql.SQL(", ").join(cols), store=self.table, live=live, sha=t.sha(), fp=sql.Literal(self.fingerprint)
        )

    def _tenant_where(self, values: Sequence[Any]) -> tuple[sql.Composable, list[Any]]:
        """Filters on the leading tenant columns given (a workspace alone filters on the first)."""
        if len(values) > len(self.tenants):
            raise EmbedError(f"{len(values)} tenant values for {len(self.tenants)} tenant columns")
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for col, v in zip(self.tenants, values, strict=False):
            if v is None:
                parts.append(sql.SQL("r.{} IS NULL").format(col))
            else:
                parts.append(sql.SQL("r.{} = %s").format(col))
                params.append(v)
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params

    def _search_sql(self, where: sql.Composable, k: int) -> sql.Composed:
        dist = sql.SQL("r.vec {} %b::vector").format(self.op)
        return sql.SQL("SELECT r.id::text, {dist} FROM ({rows}) AS r WHERE {where} ORDER BY {dist} LIMIT {k}").format(
            dist=dist, rows=self.rows(), where=where, k=sql.Literal(int(k))
        )

    # ------------------------------------------------------------------ checks
    def check(self, conn: psycopg.Connection, *, count: bool = True) -> dict[str, Any]:
        """A one-line error naming the fix unless this space has vectors of the right type here.

        Returns where they are read from, how many live rows have one (count=False: only
        whether any does) and the HNSW index on the column, if any."""
        fix = f"run `embed backfill --space {self.space.name} --source {self.source.name}` first"
        if not self.in_source and not self.target.has_store_table(conn):
            raise EmbedError(
                f"{self.space.name} has no store table for {self.source.name}: run `embed init`, then {fix[4:]}"
            )
        typ = conn.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
            (self.relation, self.column),
        ).fetchone()
        if typ is None:
            raise EmbedError(f"{self.where} does not exist (space {self.space.name})")
        if typ[0] not in (f"vector({self.space.dims})", f"halfvec({self.space.dims})"):  # storage: either holds the space
            raise EmbedError(
                f"{self.where} is {typ[0]}, but space {self.space.name} is vector({self.space.dims}): "
                "that column holds another space"
            )
        probe = (
            "SELECT count(*) FROM ({}) AS r" if count else "SELECT count(*) FROM (SELECT 1 FROM ({}) AS r LIMIT 1) AS x"
        )
        n = conn.execute(sql.SQL(probe).format(self.rows())).fetchone()[0]
        if not n:
            if self.in_source:
                raise EmbedError(f"{self.where} holds no vectors of live rows (space {self.space.name})")
            raise EmbedError(f"{self.space.name} has no current vectors for {self.source.name}: {fix}")
        return {"rows": int(n), "where": self.where, "hnsw": self.hnsw_index(conn)}

    def hnsw_index(self, conn: psycopg.Connection) -> str | None:
        """The valid HNSW index on the vector column, if any (the one served reads may use)."""
        row = conn.execute(
            """SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_am a ON a.oid = c.relam
               JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = i.indkey[0]
               WHERE i.indrelid = to_regclass(%s) AND att.attname = %s AND a.amname = 'hnsw' AND i.indisvalid
               ORDER BY c.relname LIMIT 1""",
            (self.relation, self.column),
        ).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ vectors in
    def _own(self, qv: QueryVectors) -> None:
        if not isinstance(qv, QueryVectors) or qv.space_fp != self.fingerprint:
            got = getattr(qv, "space_fp", None) or "an untagged value"
            raise CrossSpaceError(
                f"refusing a query vector of space {str(got)[:12]} in a read of {self.space.name} "
                f"({self.fingerprint[:12]}): vectors of two spaces are never compared"
            )

    def stored(self, conn: psycopg.Connection, ids: Sequence[str]) -> QueryVectors:
        """This space's current vectors of the given rows (ids as text), tagged; missing ids are left out."""
        rows = conn.execute(
            sql.SQL("SELECT r.id::text, r.vec FROM ({}) AS r WHERE r.id = ANY(%s::{}[])").format(
                self.rows(), self.target.id_type
            ),
            (list(ids),),
            binary=True,
        ).fetchall()
        got = {i: v for i, v in rows}
        keys = tuple(i for i in ids if i in got)
        vecs = (
            np.stack([got[i].to_numpy() for i in keys]).astype(np.float32)
            if keys
            else np.zeros((0, self.space.dims), np.float32)
        )
        return QueryVectors(self.fingerprint, keys, vecs)

    # ------------------------------------------------------------------ searches
    def search(
        self, conn: psycopg.Connection, qv: QueryVectors, tenants: Sequence[Sequence[Any]], k: int, *, exact: bool
    ) -> Hits:
        """Top-k per query under its tenant's filters (served: the planner's choice, one unprepared
        statement per query as Honcho sends them, so each tenant gets the custom plan EXPLAIN
        shows; timed; exact: numpy over the rows `current` settled)."""
        self._own(qv)
        if len(tenants) != len(qv):
            raise EmbedError(f"{len(tenants)} tenant filters for {len(qv)} queries")
        if exact:
            return self._exact(conn, qv, tenants, k)
        stmts: dict[tuple[bool, ...], sql.Composed] = {}
        jobs = []
        for vec, tenant in zip(qv.vectors, tenants, strict=True):
            where, values = self._tenant_where(tenant)
            shape = tuple(v is None for v in tenant)  # NULL values need `IS NULL`, fewer values fewer filters
            if shape not in stmts:
                stmts[shape] = self._search_sql(where, k)
            jobs.append((stmts[shape], [vec, *values, vec]))
        return self._run(conn, jobs, prepare=False)

    def current(self, conn: psycopg.Connection) -> Current:
        """The live rows with a current vector in this space (`rows()`), read once per reader:
        a reader lives inside one snapshot, so the content hash check runs once per run, not
        once per query and tenant."""
        if self._current is None:
            n_t = len(self.tenants)
            tcols = sql.SQL("").join(sql.SQL(", r.{}").format(c) for c in self.tenants)
            got = conn.execute(
                sql.SQL("SELECT r.id::text, r.vec{} FROM ({}) AS r").format(tcols, self.rows()), binary=True
            ).fetchall()
            self._current = Current.of(
                [r[0] for r in got], [tuple(r[2 : 2 + n_t]) for r in got], [r[1] for r in got], self.space
            )
        return self._current

    def release(self) -> None:
        """Forget the rows `current` settled: their vectors are most of a run's memory."""
        self._current = None

    def _exact(self, conn: psycopg.Connection, qv: QueryVectors, tenants: Sequence[Sequence[Any]], k: int) -> Hits:
        """Exact top-k under each query's tenant filter: one matrix product per tenant's queries."""
        cur = self.current(conn)
        by_tenant: dict[tuple[str | None, ...], list[int]] = {}
        for i, t in enumerate(tenants):
            if len(t) > len(self.tenants):
                raise EmbedError(f"{len(t)} tenant values for {len(self.tenants)} tenant columns")
            by_tenant.setdefault(tenant_key(t), []).append(i)
        ids: list[list[str]] = [[] for _ in range(len(qv))]
        dists: list[list[float]] = [[] for _ in range(len(qv))]
        for key, qs in by_tenant.items():
            rows = cur.rows_of(key)
            if not len(rows):
                continue
            dist = distances(qv.vectors[qs], cur.mat[rows], self.space.metric, None if cur.sq is None else cur.sq[rows])
            names = cur.ids[rows]
            for q, row in zip(qs, dist, strict=True):
                top = top_k(row, names, k)
                ids[q] = names[top].tolist()
                dists[q] = row[top].astype(np.float64).tolist()
        return Hits(ids, dists, [0.0] * len(qv))

    def served_uses_index(
        self, conn: psycopg.Connection, qv: QueryVectors, tenant: Sequence[Any], k: int, index: str | None
    ) -> bool:
        """Whether the planner serves the first query through `index` (EXPLAIN, not run): evidence
        of what the served recall and latency measured."""
        self._own(qv)
        if not index or not len(qv):
            return False
        where, values = self._tenant_where(tenant)
        plan = conn.execute(
            sql.SQL("EXPLAIN ") + self._search_sql(where, k), [qv.vectors[0], *values, qv.vectors[0]]
        )
        return any(index in r[0] for r in plan.fetchall())

    @contextmanager
    def _index_forced(self, conn: psycopg.Connection) -> Iterator[None]:
        """enable_seqscan off in the caller's transaction, its previous value restored after."""
        was = conn.execute("SELECT current_setting('enable_seqscan')").fetchone()[0]
        conn.execute("SET LOCAL enable_seqscan = off")
        try:
            yield
        finally:
            conn.execute("SELECT set_config('enable_seqscan', %s, true)", (was,))

    def _probe_sql(self, k: int) -> sql.Composed:
        return sql.SQL(
            "SELECT t.{id}::text, t.{vec} {op} %b::vector FROM {tbl} AS t ORDER BY t.{vec} {op} %b::vector LIMIT {k}"
        ).format(id=self._raw_id, vec=column(self.column), op=self.op, tbl=self.table, k=sql.Literal(int(k)))

    @property
    def _raw_id(self) -> sql.Identifier:
        return self.target.id if self.in_source else sql.Identifier("source_id")

    def probe(self, conn: psycopg.Connection, qv: QueryVectors, k: int, index: str) -> Hits | None:
        """Unfiltered top-k over the whole table with the HNSW index forced (enable_seqscan off);
        None when EXPLAIN shows the plan would not use `index` after all."""
        self._own(qv)
        stmt = self._probe_sql(k)
        with self._index_forced(conn):
            if not len(qv):
                return None
            plan = conn.execute(sql.SQL("EXPLAIN ") + stmt, (qv.vectors[0], qv.vectors[0])).fetchall()
            if not any(index in r[0] for r in plan):
                return None
            return self._run(conn, [(stmt, (v, v)) for v in qv.vectors])

    @staticmethod
    def _run(
        conn: psycopg.Connection, jobs: Sequence[tuple[sql.Composed, Sequence[Any]]], *, prepare: bool | None = None
    ) -> Hits:
        """Execute each (statement, parameters): ids (text), distances and milliseconds per query.

        One cursor, and the same few statements over and over, so psycopg prepares them unless
        `prepare` is False (served reads: Honcho never prepares, so each gets a custom plan)."""
        out = Hits([], [], [])
        with conn.cursor() as cur:
            for stmt, p in jobs:
                t0 = time.perf_counter()
                rows = cur.execute(stmt, p, prepare=prepare).fetchall()
                out.ms.append((time.perf_counter() - t0) * 1000.0)
                out.ids.append([r[0] for r in rows])
                out.dists.append([float(r[1]) for r in rows])
        return out

    def exact_global(self, conn: psycopg.Connection, qv: QueryVectors, k: int, bound: Sequence[float | None]) -> Hits:
        """Exact unfiltered top-k: every vector of the probed table, scanned with numpy.

        The same rows the index holds (all non-NULL vectors of the table), read in the caller's
        snapshot; one matrix product per block of queries instead of a sequential scan per query.
        `bound[i]` is the k-th distance the probe found for query i (None if it found fewer than
        k): the exact k nearest lie within it, so only rows inside it are sorted.
        """
        self._own(qv)
        rows = conn.execute(
            sql.SQL("SELECT t.{id}::text, t.{vec} FROM {tbl} AS t WHERE t.{vec} IS NOT NULL").format(
                id=self._raw_id, vec=column(self.column), tbl=self.table
            ),
            binary=True,
        ).fetchall()
        table = Current.of([r[0] for r in rows], [() for _ in rows], [r[1] for r in rows], self.space)
        del rows
        ids = table.ids
        lim = np.array([np.inf if b is None else b + TIE_EPS for b in bound], dtype=np.float64)
        out = Hits([], [], [])
        for lo in range(0, len(qv), 256):
            dist = distances(qv.vectors[lo : lo + 256], table.mat, self.space.metric, table.sq)
            inside = dist <= lim[lo : lo + len(dist), None]
            for i, row in enumerate(dist):
                order = top_k(row, ids, k, np.flatnonzero(inside[i]))  # no usable bound: sort everything
                out.ids.append(ids[order].tolist())
                out.dists.append(row[order].astype(np.float64).tolist())
                out.ms.append(0.0)
        return out

    def query_distances(
        self, conn: psycopg.Connection, qv: QueryVectors, docs: Sequence[Sequence[str]]
    ) -> list[dict[str, float]]:
        """Distance in this space from each query vector to the given documents (per query)."""
        self._own(qv)
        stmt = sql.SQL(
            "SELECT r.id::text, r.vec {op} %b::vector FROM ({rows}) AS r WHERE r.id = ANY(%s::{t}[])"
        ).format(op=self.op, rows=self.rows(), t=self.target.id_type)
        out = []
        with conn.cursor() as cur:
            for vec, ids in zip(qv.vectors, docs, strict=True):
                out.append({i: float(d) for i, d in cur.execute(stmt, (vec, list(ids))).fetchall()})
        return out


def tie_aware_exact(ann: Hits, exact: Hits, k: int, eps: float = TIE_EPS) -> list[list[str]]:
    """Per query, the exact top-k id list that agrees most with the ANN list among equal distances.

    The exact top-k is a set only up to ties: when several rows lie at the k-th distance, any of
    them completes it. An ANN row at (within eps) the exact k-th distance is as correct as the
    exact row it displaced, so it takes that row's place before recall is counted.
    """
    out: list[list[str]] = []
    for a_ids, a_d, e_ids, e_d in zip(ann.ids, ann.dists, exact.ids, exact.dists, strict=True):
        e_ids = list(e_ids[:k])
        if not e_ids:
            out.append([])
            continue
        kth = e_d[: len(e_ids)][-1]
        in_exact = set(e_ids)
        in_ann = set(a_ids[:k])
        extra = [i for i, d in zip(a_ids[:k], a_d[:k], strict=True) if i not in in_exact and d <= kth + eps]
        tail = [j for j, (i, d) in enumerate(zip(e_ids, e_d, strict=False)) if i not in in_ann and d >= kth - eps]
        for j, i in zip(reversed(tail), extra, strict=False):
            e_ids[j] = i
        out.append(e_ids)
    return out


# ----------------------------------------------------------------------------- query sets

SEEDED_SOURCE = "documents"  # embed_eval (embed.honcho.synthetic.seed) judges the documents source


@dataclass(frozen=True)
class TextQueries:
    """Text queries of one source: ids, texts (embedded, never reported), tenant filter values,
    language pairs ('pl->en', None when unknown) and optional qrels (qid, doc_id, relevance)."""

    name: str
    qids: tuple[str, ...]
    texts: tuple[str, ...]
    tenants: tuple[tuple[Any, ...], ...]
    lang_pairs: tuple[str | None, ...]
    qrels: pl.DataFrame | None = None
    qrels_name: str | None = None

    def with_qrels(self, qrels: pl.DataFrame | None, name: str | None) -> TextQueries:
        """These queries judged by `qrels` (a file's) instead of their own; qids must match."""
        if qrels is None:
            return self
        unknown = set(qrels["qid"].to_list()) - set(self.qids)
        if unknown:
            raise EmbedError(
                f"qrels judge {len(unknown)} qid(s) not in the query set {self.name}, e.g. {sorted(unknown)[0]!r}"
            )
        return replace(self, qrels=qrels, qrels_name=name)


def _lang_pair(lang: Any, doc_langs: Any) -> str | None:
    return f"{lang}->{doc_langs}" if lang and doc_langs else None


def seeded_queries(conn: psycopg.Connection, source: Source) -> TextQueries | None:
    """The labelled set seeded into embed_eval, when this database has one for `source`."""
    if source.name != SEEDED_SOURCE or not _regclass(conn, "embed_eval.queries"):
        return None
    cols = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'embed_eval' AND table_name = 'queries'"
        ).fetchall()
    }
    if not set(source.tenant_columns) <= cols:
        return None
    rows = conn.execute(
        sql.SQL("SELECT qid, text, lang, doc_langs{} FROM embed_eval.queries ORDER BY qid").format(
            sql.SQL("").join(sql.SQL(", {}").format(column(c)) for c in source.tenant_columns)
        )
    ).fetchall()
    if not rows:
        return None
    qrels = None
    if _regclass(conn, "embed_eval.qrels"):
        q = conn.execute("SELECT qid, doc_id, relevance FROM embed_eval.qrels ORDER BY qid, doc_id").fetchall()
        qrels = _qrels_frame(q)
    return TextQueries(
        name="embed_eval.queries",
        qids=tuple(r[0] for r in rows),
        texts=tuple(r[1] for r in rows),
        tenants=tuple(tuple(r[4:]) for r in rows),
        lang_pairs=tuple(_lang_pair(r[2], r[3]) for r in rows),
        qrels=qrels,
        qrels_name="embed_eval.qrels" if qrels is not None else None,
    )


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EmbedError(f"cannot read the {what} file {Path(path).name}: {type(e).__name__}") from None
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise EmbedError(f"the {what} file {Path(path).name} is empty")
    return lines


def _json_object(name: str, n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise EmbedError(f"{name} line {n}: not a JSON object")
    return obj


def _scalar(v: Any) -> bool:
    return v is None or (isinstance(v, (str, int)) and not isinstance(v, bool))


def load_query_set(path: Path, source: Source) -> TextQueries:
    """A JSONL query set for `source`: one object per line with qid, text and its tenant columns."""
    name = Path(path).name
    qids: list[str] = []
    texts: list[str] = []
    tenants: list[tuple[Any, ...]] = []
    pairs: list[str | None] = []
    for n, line in _lines(path, "query set"):
        obj = _json_object(name, n, line)
        qid, text = obj.get("qid"), obj.get("text")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise EmbedError(f"{name} line {n}: needs a qid (string)")
        if not isinstance(text, str) or not text.strip():
            raise EmbedError(f"{name} line {n}: needs a non-empty text")
        missing = [c for c in source.tenant_columns if c not in obj]
        if missing:
            raise EmbedError(f"{name} line {n}: lacks tenant column(s) {', '.join(missing)} of source {source.name}")
        if not all(_scalar(obj[c]) for c in source.tenant_columns):
            raise EmbedError(f"{name} line {n}: tenant values must be strings or integers")
        if str(qid) in qids:
            raise EmbedError(f"{name} line {n}: qid {str(qid)!r} repeats")
        qids.append(str(qid))
        texts.append(text)
        tenants.append(tuple(obj[c] for c in source.tenant_columns))
        pairs.append(_lang_pair(obj.get("lang"), obj.get("doc_langs")))
    return TextQueries(name, tuple(qids), tuple(texts), tuple(tenants), tuple(pairs))


def _qrels_frame(rows: Sequence[tuple[str, str, int]]) -> pl.DataFrame:
    """Judgments as the metrics take them; polars is imported here, not with the module, so the
    steps that only read a recorded sweep (honcho_settings in cutover and status) do not pay for it."""
    import polars as pl

    return pl.DataFrame(rows, schema={"qid": pl.String, "doc_id": pl.String, "relevance": pl.Int64}, orient="row")


def load_qrels(path: Path) -> pl.DataFrame:
    """Relevance judgments from JSONL ({qid, doc_id, relevance}) or TREC (`qid 0 doc_id rel`) lines."""
    name = Path(path).name
    rows: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for n, line in _lines(path, "qrels"):
        if line.startswith("{"):
            obj = _json_object(name, n, line)
            qid, doc, rel = obj.get("qid"), obj.get("doc_id"), obj.get("relevance")
        else:
            parts = line.split()
            if len(parts) != 4:
                raise EmbedError(f"{name} line {n}: expected `qid 0 doc_id relevance` or a JSON object")
            qid, _, doc, rel = parts
            try:
                rel = int(rel)
            except ValueError:
                raise EmbedError(f"{name} line {n}: relevance must be an integer") from None
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) and str(x) != "" for x in (qid, doc)):
            raise EmbedError(f"{name} line {n}: needs qid and doc_id")
        if not isinstance(rel, int) or isinstance(rel, bool):
            raise EmbedError(f"{name} line {n}: relevance must be an integer")
        key = (str(qid), str(doc))
        if key in seen:
            raise EmbedError(f"{name} line {n}: judges ({key[0]}, {key[1]}) twice")
        seen.add(key)
        rows.append((key[0], key[1], rel))
    return _qrels_frame(rows)
