"""`embed shadow`: rank the same queries in the baseline and each candidate space, separately,
compare the ranked id lists (embed.shadow.report), and persist the result for the gate audits.

Per source, inside one REPEATABLE READ snapshot, each space is read through its own
`SpaceReader` (embed.shadow.inputs):
  text queries   labelled (embed_eval for the seeded corpus, or --query-set/--qrels files),
                 each embedded by each space's own embedder (kind 'query');
  stored rows    `queries` live rows sampled with a seeded RNG (optionally from `sample_tenants`
                 tenants only), each queried with its own stored vector *in that space*;
both ranked under the source's tenant filters (served = the application's query; exact = the
same without any vector index), an unfiltered HNSW probe per space, and paired distances for
threshold recalibration. Only ids, counts and numbers leave the readers, and only those reach
the result, the store, the logs and the reports: never memory text (invariant 6).

Persisted per source in one transaction: an embed_store.shadow_runs row (result jsonb), its
numbers in embed_store.shadow_metrics (see `metric_rows` for the contract the gates read), and
a 'shadow' event per candidate.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

from embed import store
from embed.config import Config, Source
from embed.db.connection import connect
from embed.errors import EmbedError
from embed.fill.progress import Say
from embed.shadow import filtered as F
from embed.shadow import labels as L
from embed.shadow import metrics as M
from embed.shadow.inputs import (
    SEEDED_SOURCE,
    Hits,
    QueryVectors,
    SpaceReader,
    TextQueries,
    embed_queries,
    load_qrels,
    load_query_set,
    seeded_queries,
    tie_aware_exact,
)
from embed.shadow.recalibrate import recalibrate_threshold
from embed.shadow.report import build_result
from embed.spaces import Space

MAX_K = 1000
QUERY_THRESHOLDS = ("search_max_distance",)  # mapped on query->document pairs; the rest on document pairs
ROW_QID = "row:"  # stored-row queries in the rankings, kept apart from labelled qids


@dataclass(frozen=True)
class SourceShadow:
    """One source's shadow run: what its verdict rests on, and the whole result document
    (embed.shadow.report's schema: what the reports render, --json prints and shadow_runs stores)."""

    source: str
    run_id: int
    labels: str | None  # provenance | known-item | seeded | file; None: label-free only
    labelled_queries: int
    queries_needed: int | None  # at the gate's margin, the most any candidate needs
    verdicts: dict[str, str | None]  # candidate -> PASS | FAIL | INCONCLUSIVE (None: no labels or no margin)
    result: dict[str, Any]
    filtered: tuple[F.FilteredSweep, ...] = ()  # per space: served recall at each scan setting


@dataclass(frozen=True)
class ShadowResult:
    """What `shadow()` returns: one `SourceShadow` per source, in the order they ran."""

    sources: dict[str, SourceShadow]

    def __getitem__(self, source: str) -> SourceShadow:
        return self.sources[source]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{source: result document}, as --json prints it and --out writes it."""
        return {name: s.result for name, s in self.sources.items()}


class Phases:
    """Seconds per phase, summed over sources, with one progress line on stderr per phase."""

    def __init__(self, say: Say | None = None) -> None:
        self.say = say
        self.seconds: dict[str, float] = {}
        self.by_source: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, source: str, name: str, detail: str = "") -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        s = time.perf_counter() - t0
        self.seconds[name] = self.seconds.get(name, 0.0) + s
        mine = self.by_source.setdefault(source, {})
        mine[name] = mine.get(name, 0.0) + s
        if self.say:
            self.say(f"shadow {source}: {name} {s:.2f}s" + (f" ({detail})" if detail else ""))


def _check_args(
    cfg: Config,
    baseline: str | None,
    candidates: Sequence[str],
    k: int,
    queries: int,
    sample_tenants: int | None,
    n_boot: int,
    sweep: int = F.MAX_QUERIES,
) -> tuple[Space, list[Space]]:
    for name, v, lo in (("k", k, 1), ("queries", queries, 0), ("n_boot", n_boot, 1), ("sweep_queries", sweep, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise EmbedError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
    if k > MAX_K:
        raise EmbedError(f"--k must be <= {MAX_K}, got {k}")
    if sample_tenants is not None and (not isinstance(sample_tenants, int) or sample_tenants < 1):
        raise EmbedError(f"--sample-tenants must be an integer >= 1, got {sample_tenants!r}")
    base = cfg.space(baseline) if baseline else cfg.legacy_space
    if not candidates:
        raise EmbedError("name at least one --candidate space to compare with the baseline")
    cands = [cfg.space(c) for c in candidates]
    names = [c.name for c in cands]
    if base.name in names:
        raise EmbedError(f"candidate {base.name} is the baseline: compare a space with another one")
    if len(set(names)) != len(names):
        raise EmbedError(f"a candidate is named twice: {', '.join(names)}")
    fps = [base.fingerprint, *(c.fingerprint for c in cands)]
    if len(set(fps)) != len(fps):
        raise EmbedError("two of the compared spaces have the same spec (fingerprint): they are one space")
    return base, cands


def _thresholds(cfg: Config) -> dict[str, float]:
    raw = (cfg.variables.get("embed_gates") or {}).get("thresholds") or {}
    if not isinstance(raw, Mapping):
        raise EmbedError("embed_gates.thresholds must be a mapping of name: distance")
    out = {}
    for name, v in raw.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise EmbedError(f"embed_gates.thresholds.{name} must be a number or null, got {v!r}")
        out[str(name)] = float(v)
    return out


def _sources(cfg: Config, sources: Sequence[str] | None) -> list[Source]:
    names = list(cfg.sources) if not sources or list(sources) == ["all"] else list(sources)
    if not names:
        raise EmbedError("config.yaml declares no sources (variables.embed_sources)")
    return [cfg.source(n) for n in names]


# ----------------------------------------------------------------------------- frames


def _ranking(space: str, qids: Sequence[str], ids: Sequence[Sequence[str]]) -> pl.DataFrame:
    """Long (qid, space, rank, doc_id) rows; ranks 1..n per query."""
    q, r, d = [], [], []
    for qid, lst in zip(qids, ids, strict=True):
        q += [qid] * len(lst)
        r += list(range(1, len(lst) + 1))
        d += list(lst)
    return pl.DataFrame(
        {"qid": q, "space": [space] * len(q), "rank": r, "doc_id": d},
        schema={"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String},
    )


def _without_self(keys: Sequence[str], ids: Sequence[Sequence[str]], k: int) -> list[list[str]]:
    """Neighbour lists of stored rows: the row itself removed, cut to k."""
    return [[i for i in lst if i != key][:k] for key, lst in zip(keys, ids, strict=True)]


def _cut(h: Hits, k: int) -> Hits:
    return Hits([x[:k] for x in h.ids], [x[:k] for x in h.dists], h.ms)


# ----------------------------------------------------------------------------- one source


class SourceRun:
    """Everything one source's shadow run reads and computes (the snapshot connection is the caller's)."""

    def __init__(
        self,
        cfg: Config,
        source: Source,
        base: Space,
        cands: list[Space],
        k: int,
        phases: Phases,
        sweep_queries: int = F.MAX_QUERIES,
    ) -> None:
        from embed.gates import GateConfig

        self.cfg, self.source, self.base, self.cands, self.k, self.phases = cfg, source, base, cands, k, phases
        self.sweep_queries = sweep_queries
        self.floor = GateConfig.from_variables(cfg.variables).min_ann_recall
        self.spaces = [base, *cands]
        self.readers: dict[str, SpaceReader] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def phase(self, name: str, detail: str = "") -> Any:
        return self.phases(self.source.name, name, detail)

    def open(self, conn: psycopg.Connection) -> None:
        for sp in self.spaces:
            r = SpaceReader(conn, self.cfg, self.source, sp)
            self.info[sp.name] = r.check(conn)
            self.readers[sp.name] = r

    def sample(
        self, conn: psycopg.Connection, n: int, sample_tenants: int | None, seed: int
    ) -> tuple[list[str], list[tuple]]:
        """`n` live rows with a baseline vector, seeded; from `sample_tenants` random tenants if set."""
        if n == 0:
            return [], []
        r = self.readers[self.base.name]
        tcols = sql.SQL("").join(sql.SQL(", r.{}").format(c) for c in r.tenants)
        rows = conn.execute(
            sql.SQL("SELECT r.id::text{} FROM ({}) AS r ORDER BY r.id").format(tcols, r.rows())
        ).fetchall()
        rng = np.random.default_rng([seed, 0x5EED])
        if sample_tenants is not None and self.source.tenant_columns:
            tenants = sorted({row[1] for row in rows}, key=str)
            keep = set(rng.choice(len(tenants), min(sample_tenants, len(tenants)), replace=False).tolist())
            chosen = {tenants[i] for i in keep}
            rows = [row for row in rows if row[1] in chosen]
        pick = np.sort(rng.choice(len(rows), min(n, len(rows)), replace=False)) if rows else []
        return [rows[i][0] for i in pick], [tuple(rows[i][1:]) for i in pick]

    def stored_queries(
        self, conn: psycopg.Connection, ids: list[str], tenants: list[tuple]
    ) -> tuple[dict[str, QueryVectors], list[tuple]]:
        """Each space's own stored vectors of the sampled rows; rows lacking one in any space are dropped."""
        per = {sp.name: self.readers[sp.name].stored(conn, ids) for sp in self.spaces}
        common = set.intersection(*(set(qv.keys) for qv in per.values())) if per else set()
        keep = [i for i, key in enumerate(ids) if key in common]
        out = {}
        for name, qv in per.items():
            pos = {key: j for j, key in enumerate(qv.keys)}
            idx = [pos[ids[i]] for i in keep]
            out[name] = QueryVectors(qv.space_fp, tuple(ids[i] for i in keep), qv.vectors[idx])
        return out, [tenants[i] for i in keep]


def _tenant_label(values: tuple) -> str:
    """The tenant slice: the first tenant column (the workspace, for Honcho)."""
    return str(values[0]) if values else "all"


@dataclass
class SpaceReads:
    """One space's answers for one source: ranked ids (and distances) per query, nothing else."""

    text: Hits  # served, text queries, top k
    text_exact: Hits
    rows: Hits  # served, stored-row queries, top k + 1 (the row itself is usually first)
    rows_exact: Hits
    probe: Hits | None = None  # unfiltered, HNSW forced, top k
    probe_exact: Hits | None = None
    sweep: F.FilteredSweep | None = None  # text queries and stored rows on HNSW-served tenants, per scan setting


NO_HITS = Hits([], [], [])


def read_space(
    conn: psycopg.Connection,
    run: SourceRun,
    sp: Space,
    text: L.Labelled | None,
    tq: QueryVectors | None,
    rq: QueryVectors,
    tenants: list[tuple],
) -> SpaceReads:
    """Every search of one space: served and exact for text queries (tq) and stored rows (rq),
    then the unfiltered probe (rq) when the column has an HNSW index the planner really uses."""
    r, k, info = run.readers[sp.name], run.k, run.info[sp.name]
    with run.phase("ann", f"{sp.name}: {len(tq or ())} text queries"):
        served = r.search(conn, tq, text.tenants, k, exact=False) if text and tq else NO_HITS
    with run.phase("neighbours", f"{sp.name}: {len(rq)} stored rows"):
        rows = r.search(conn, rq, tenants, k + 1, exact=False)
    with run.phase("exact", sp.name):
        out = SpaceReads(
            served,
            r.search(conn, tq, text.tenants, k, exact=True) if text and tq else NO_HITS,
            rows,
            r.search(conn, rq, tenants, k + 1, exact=True),
        )
        r.release()
    if run.sweep_queries:  # text queries (Honcho's searches: a workspace alone for messages) and stored rows
        qs, ts, ex = rq, tenants, out.rows_exact
        if text and tq:
            qs, ts, ex = F.joined(tq, rq), [*text.tenants, *tenants], F.joined_hits(out.text_exact, out.rows_exact)
        with run.phase("sweep", f"{sp.name}: scan settings on HNSW-served tenants"):
            out.sweep = F.sweep(conn, r, qs, ts, ex, k, floor=run.floor, limit=run.sweep_queries)
    index = info["hnsw"]
    first = (tq, text.tenants[0]) if text and tq else (rq, tenants[0]) if len(rq) else None
    info["served_uses_index"] = bool(first and r.served_uses_index(conn, first[0], first[1], k, index))
    with run.phase("probe", f"{sp.name}: {len(rq)} unfiltered probes, index {index or 'none'}"):
        out.probe = r.probe(conn, rq, k, index) if index and len(rq) else None
        if out.probe is not None:
            bound = [d[k - 1] if len(d) >= k else None for d in out.probe.dists]
            out.probe_exact = r.exact_global(conn, rq, k, bound)
    info["probe_uses_index"] = out.probe is not None
    return out


def run_source(
    conn: psycopg.Connection,
    run: SourceRun,
    text: L.Labelled | None,
    text_vectors: Mapping[str, QueryVectors],
    *,
    queries: int,
    sample_tenants: int | None,
    seed: int,
    n_boot: int,
    thresholds: Mapping[str, float],
    margin: float | None = None,
    query_vectors: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read every space of one source in `conn`'s snapshot and build the result; returns (result, params)."""
    k, base = run.k, run.base.name
    with run.phase("sample", f"{queries} stored rows requested"):
        ids, tenants = run.sample(conn, queries, sample_tenants, seed)
        stored, tenants = run.stored_queries(conn, ids, tenants)
    reads = {
        sp.name: read_space(conn, run, sp, text, text_vectors.get(sp.name), stored[sp.name], tenants)
        for sp in run.spaces
    }
    settings = conn.execute(
        "SELECT current_setting('hnsw.ef_search', true), current_setting('hnsw.iterative_scan', true)"
    ).fetchone()
    with run.phase("distances"):
        pairs = _doc_pairs(conn, run, stored, reads[base].rows)
        labelled = text is not None and text.qrels is not None
        qd = (
            _query_pairs(conn, run, text, text_vectors, reads)
            if labelled and set(thresholds) & set(QUERY_THRESHOLDS)
            else {}
        )

    with run.phase("metrics"):
        keys = list(stored[base].keys)
        t_qids, row_qids = list(text.qids) if text else [], [ROW_QID + key for key in keys]
        f: dict[str, list[pl.DataFrame]] = {x: [] for x in ("rank", "nb", "ann", "exact", "gann", "gexact")}
        for name, rd in reads.items():
            f["rank"] += [
                _ranking(name, t_qids, rd.text.ids),
                _ranking(name, row_qids, _without_self(keys, rd.rows.ids, k)),
            ]
            f["nb"].append(_ranking(name, keys, rd.rows.ids))
            for ann, exact, qids in (
                (rd.text, rd.text_exact, t_qids),
                (_cut(rd.rows, k), _cut(rd.rows_exact, k), row_qids),
            ):
                f["ann"].append(_ranking(name, qids, ann.ids))
                f["exact"].append(_ranking(name, qids, tie_aware_exact(ann, exact, k)))
            if rd.probe is not None and rd.probe_exact is not None:
                f["gann"].append(_ranking(name, keys, rd.probe.ids))
                f["gexact"].append(_ranking(name, keys, tie_aware_exact(rd.probe, rd.probe_exact, k)))
        attrs = _query_attrs(text, t_qids, row_qids, tenants)
        doc_thr = {n: t for n, t in thresholds.items() if n not in QUERY_THRESHOLDS}
        result = build_result(
            pl.concat(f["rank"]),
            run.base,
            run.cands,
            k,
            queries=attrs,
            slices=[s for s in ("lang_pair", "crossing", "tenant") if attrs[s].drop_nulls().n_unique()],
            qrels=text.qrels if text else None,
            neighbours=pl.concat(f["nb"]) if keys else None,
            ann=pl.concat(f["ann"]),
            exact=pl.concat(f["exact"]),
            latency_ms={name: rd.text.ms + rd.rows.ms for name, rd in reads.items()},
            distances={c: p for c, p in pairs.items() if p.height} if doc_thr else None,
            thresholds=doc_thr,
            n_boot=n_boot,
            seed=seed,
            margin=margin,
            source=run.source.name,
        )
        result["ann_recall_global"] = _global_recall(f, k, n_boot, seed)
        result["filtered_recall"] = [rd.sweep.as_dict() for rd in reads.values() if rd.sweep is not None]
        result["labels"] = text.kind if labelled and text else None
        result["labelled_queries"] = result["run"]["n_labelled_queries"]
        result["queries_needed"] = max((c["queries_needed"] for c in result["confidence"]), default=None)
        result["label_details"] = {
            "source": text.name if text else None,
            "excluded": dict(text.excluded) if text else {},
            "query_vectors": dict(query_vectors or {}),
        }
        for name in QUERY_THRESHOLDS:
            for cand, p in qd.items() if name in thresholds else ():
                rc = recalibrate_threshold(
                    p["base_distance"].to_numpy(),
                    p["cand_distance"].to_numpy(),
                    thresholds[name],
                    p["relevant"].to_numpy(),
                )
                result["thresholds"].append({"candidate": cand, "name": name, **rc.to_dict()})
    params = {
        "k": k,
        "queries": queries,
        "stored_queries": len(keys),
        "text_queries": len(t_qids),
        "labelled": labelled,
        "labels": text.kind if text else None,
        "label_source": text.name if text else None,
        "seed": seed,
        "n_boot": n_boot,
        "sample_tenants": sample_tenants,
        "ef_search": settings[0],
        "iterative_scan": settings[1],
        "spaces": run.info,
        "thresholds": dict(thresholds),
        "pairs": {c: p.height for c, p in pairs.items()},
        "query_pairs": {c: p.height for c, p in qd.items()},
    }
    return result, params


def _doc_pairs(
    conn: psycopg.Connection, run: SourceRun, stored: Mapping[str, QueryVectors], base_rows: Hits
) -> dict[str, pl.DataFrame]:
    """Document pairs for dedup-style thresholds: each sampled row with its baseline neighbours
    (within tenant). The baseline distance is the one its search returned; the candidate's is
    measured between the same two rows' candidate vectors, in the candidate space alone."""
    keys = stored[run.base.name].keys
    if not keys:
        return {}
    nb = [
        [(i, d) for i, d in zip(ids, ds, strict=True) if i != key]
        for key, ids, ds in zip(keys, base_rows.ids, base_rows.dists, strict=True)
    ]
    out = {}
    for c in run.cands:
        cand = run.readers[c.name].query_distances(conn, stored[c.name], [[i for i, _ in x] for x in nb])
        pairs = [(d, got[i]) for x, got in zip(nb, cand, strict=True) for i, d in x if i in got]
        out[c.name] = pl.DataFrame(
            pairs, schema={"base_distance": pl.Float64, "cand_distance": pl.Float64}, orient="row"
        )
    return out


def _query_pairs(
    conn: psycopg.Connection,
    run: SourceRun,
    text: L.Labelled,
    vecs: Mapping[str, QueryVectors],
    reads: Mapping[str, SpaceReads],
) -> dict[str, pl.DataFrame]:
    """Query->document pairs with relevance labels: per labelled query, its judged documents and
    everything any space returned, each distance measured in each space with its own query vector."""
    assert text.qrels is not None
    judged: dict[str, dict[str, int]] = {}
    for qid, doc, rel in text.qrels.iter_rows():
        judged.setdefault(qid, {})[doc] = rel
    docs = []
    for i, qid in enumerate(text.qids):
        pool = set(judged.get(qid, {}))
        for rd in reads.values():
            pool.update(rd.text.ids[i])
        docs.append(sorted(pool))
    dist = {sp.name: run.readers[sp.name].query_distances(conn, vecs[sp.name], docs) for sp in run.spaces}
    out = {}
    for c in run.cands:
        rows = [
            (dist[run.base.name][i][d], dist[c.name][i][d], judged.get(qid, {}).get(d, 0) >= 1)
            for i, qid in enumerate(text.qids)
            for d in docs[i]
            if d in dist[run.base.name][i] and d in dist[c.name][i]
        ]
        out[c.name] = pl.DataFrame(
            rows,
            schema={"base_distance": pl.Float64, "cand_distance": pl.Float64, "relevant": pl.Boolean},
            orient="row",
        )
    return {c: p for c, p in out.items() if p.height}


def _query_attrs(text: L.Labelled | None, t_qids: list[str], row_qids: list[str], tenants: list[tuple]) -> pl.DataFrame:
    """Slice attributes per qid: lang_pair ('pl->en'; unset for stored rows), crossing (whether
    the relevant rows are in the query's language: same, cross-lingual, or both) and tenant."""
    lp = list(text.lang_pairs) if text else []
    tt = [_tenant_label(t) for t in text.tenants] if text else []
    return pl.DataFrame(
        {
            "qid": t_qids + row_qids,
            "lang_pair": lp + [None] * len(row_qids),
            "crossing": [_crossing(p) for p in lp] + [None] * len(row_qids),
            "tenant": tt + [_tenant_label(t) for t in tenants],
        },
        schema={"qid": pl.String, "lang_pair": pl.String, "crossing": pl.String, "tenant": pl.String},
    )


def _crossing(pair: str | None) -> str | None:
    """'pl->en' -> 'cross-lingual', 'pl->pl' -> 'same language', 'pl->en+pl' -> 'both'."""
    if not pair or "->" not in pair:
        return None
    query, docs = pair.split("->", 1)
    langs = docs.split("+")
    return "same language" if langs == [query] else "both" if query in langs else "cross-lingual"


def _global_recall(frames: dict[str, list[pl.DataFrame]], k: int, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """ann_recall rows of the unfiltered forced-index probe (same shape as result['ann_recall'])."""
    if not frames["gann"]:
        return []
    rec = M.aggregate(
        M.ann_recall(pl.concat(frames["gann"]), pl.concat(frames["gexact"]), k),
        ["ann_recall"],
        by=("space",),
        n_boot=n_boot,
        seed=seed,
    )
    return [
        {"space": x["space"], "k": k, **{f: x[f] for f in ("n", "value", "ci_low", "ci_high")}} for x in rec.to_dicts()
    ]


# ----------------------------------------------------------------------------- persistence


def metric_rows(result: Mapping[str, Any], fps: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """The shadow_metrics rows of a result: (space_fp, slice, slice_value, metric, n, value, ci_low, ci_high).

    The contract the gate audits read: quality -> the space's fp, metric as given ('ndcg@10');
    deltas -> the candidate's fp, 'delta_' + metric; agreement -> candidate, as given;
    neighbour_retention -> candidate, 'neighbour_retention@k'; ann_recall -> the space,
    'ann_recall@k' (served, tenant-filtered) and 'ann_recall_global@k' (unfiltered probe);
    filtered recall sweep -> the space, slice 'scan' = 'ef_search=N iterative_scan=M',
    'filtered_recall@k', 'filtered_latency_p50_ms'/'filtered_latency_p95_ms' (embed.shadow.filtered);
    latency -> the space, 'latency_p50_ms'/'latency_p95_ms'; how sure the nDCG delta is ->
    candidate, 'queries_needed_ndcg@k' (n = labelled queries used), 'wilcoxon_p_ndcg@k',
    'detectable_ndcg@k'; thresholds -> candidate,
    'threshold:<name>' (+ 'threshold_precision:<name>', 'threshold_recall:<name>' with labels).
    Slice-less rows use slice 'all', slice_value 'all'.
    """
    out: list[tuple[Any, ...]] = []

    def add(fp: str, metric: str, r: Mapping[str, Any], value: Any = None, n: Any = None, ci: bool = True) -> None:
        out.append(
            (
                fp,
                r.get("slice", "all"),
                r.get("slice_value", "all"),
                metric,
                r.get("n") if n is None else n,
                r.get("value") if value is None else value,
                r.get("ci_low") if ci else None,
                r.get("ci_high") if ci else None,
            )
        )

    for r in result.get("quality", []):
        add(fps[r["space"]], r["metric"], r)
    for r in result.get("deltas", []):
        add(fps[r["candidate"]], "delta_" + r["metric"], r)
    for r in result.get("agreement", []):
        add(fps[r["candidate"]], r["metric"], r)
    for r in result.get("neighbour_retention", []):
        add(fps[r["candidate"]], f"neighbour_retention@{r['k']}", r)
    for key, name in (("ann_recall", "ann_recall"), ("ann_recall_global", "ann_recall_global")):
        for r in result.get(key, []):
            add(fps[r["space"]], f"{name}@{r['k']}", r)
    for sw in result.get("filtered_recall", []):
        for r in sw["rows"]:
            at = {"slice": "scan", "slice_value": F.ScanSetting(r["ef_search"], r["iterative_scan"]).label}
            add(sw["space_fp"], f"filtered_recall@{r['k']}", at, value=r["recall"], n=r["queries"], ci=False)
            for p in ("p50", "p95"):
                if r.get(f"{p}_ms") is not None:
                    add(sw["space_fp"], f"filtered_latency_{p}_ms", at, value=r[f"{p}_ms"], n=r["queries"], ci=False)
    for r in result.get("latency_ms", []):
        for p in ("p50", "p95"):
            if r.get(p) is not None:
                add(fps[r["space"]], f"latency_{p}_ms", r, value=r[p], ci=False)
    for r in result.get("confidence", []):
        for what in ("queries_needed", "wilcoxon_p", "detectable"):
            if r.get(what) is not None:
                add(fps[r["candidate"]], f"{what}_{r['metric']}", r, value=r[what], ci=False)
    for r in result.get("thresholds", []):
        fp, name, n = fps[r["candidate"]], r["name"], r["n_pairs"]
        add(fp, f"threshold:{name}", {}, value=r["candidate_threshold"], n=n, ci=False)
        for what in ("precision", "recall"):
            if r.get(f"cand_{what}") is not None:
                add(fp, f"threshold_{what}:{name}", {}, value=r[f"cand_{what}"], n=n, ci=False)
    return out


def persist(
    conn: psycopg.Connection,
    result: dict[str, Any],
    params: dict[str, Any],
    *,
    source: str,
    started_at: dt.datetime,
    base: Space,
    cands: list[Space],
) -> int:
    """One all-or-nothing transaction: the run row, its metric rows, one event per candidate."""
    fps = {s.name: s.fingerprint for s in (base, *cands)}
    with conn.transaction():
        run_id = conn.execute(
            sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'id'))").format(
                sql.Literal(f"{store.SCHEMA}.shadow_runs")
            )
        ).fetchone()[0]
        result["run"]["run_id"] = str(run_id)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, started_at, actor, source, baseline_fp, candidate_fps, params, result)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(sql.Identifier(store.SCHEMA, "shadow_runs")),
            (
                run_id,
                started_at,
                store.actor(),
                source,
                base.fingerprint,
                [c.fingerprint for c in cands],
                json.dumps(params, allow_nan=False),
                json.dumps(result, allow_nan=False),
            ),
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (run_id, space_fp, slice, slice_value, metric, n, value, ci_low, ci_high)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(sql.Identifier(store.SCHEMA, "shadow_metrics")),
                [(run_id, *row) for row in metric_rows(result, fps)],
            )
        for c in cands:
            store.record_event(
                conn,
                "shadow",
                "ok",
                space=c,
                source=source,
                details={
                    "shadow_run": run_id,
                    "baseline_fp": base.fingerprint,
                    "candidate_fps": [x.fingerprint for x in cands],
                },
            )
    return int(run_id)


# ----------------------------------------------------------------------------- entry point


def _labels(
    conn: psycopg.Connection,
    cfg: Config,
    src: Source,
    labels: str,
    user_set: TextQueries | None,
    user_qrels: pl.DataFrame | None,
    qrels_name: str | None,
    queries: int,
    seed: int,
) -> L.Labelled | None:
    """The labelled queries of one source: a query-set file when given, else by `labels`
    (auto: provenance when the source has it, else the seeded set, else none)."""
    if user_set is not None:
        return L.from_text(user_set.with_qrels(user_qrels, qrels_name), "file")
    if user_qrels is not None:
        raise EmbedError(f"hand-written labels need --query-set: source {src.name} has no query texts for them")
    lab = None
    if labels in ("auto", "provenance"):
        lab = L.provenance(conn, cfg, src)
        if labels == "provenance" and not lab:
            why = "is not Honcho-shaped" if lab is None else f"has no usable provenance ({_excluded(lab)})"
            raise EmbedError(f"--labels provenance: source {src.name} {why}; use --labels auto, known-item or FILE")
    if labels in ("auto", "seeded") and not lab:
        tq = seeded_queries(conn, src)
        if tq is None and labels == "seeded" and src.name == SEEDED_SOURCE:  # it judges that source alone
            raise EmbedError("--labels seeded: this database has no seeded query set (`embed honcho seed` writes one)")
        lab = L.from_text(tq, "seeded") if tq is not None else None
    if labels == "known-item":
        lab = L.known_items(conn, src, max(queries, 1), seed)
    if not lab:  # auto, and nothing labels this source: label-free only, named in the result
        return None
    return L.capped(lab, queries, seed) if queries else lab


def _excluded(lab: L.Labelled) -> str:
    return ", ".join(f"{why}: {n}" for why, n in lab.excluded.items()) or "no message cites a live row"


def query_vectors(
    conn: psycopg.Connection, cfg: Config, lab: L.Labelled, sp: Space, embedder: Any
) -> tuple[QueryVectors, str]:
    """One space's query vectors for labelled queries, and how they were formed.

    Read, not computed, where the query's text is stored in this space (a message's chunk rows,
    a document's own row) and the space embeds queries and passages alike (no query prefix
    of its own): no model call, no text sent anywhere. A message with several chunk rows is
    the mean of its chunks' unit vectors (cosine), renormalised by the reader. A space with a
    query prefix stores passage vectors, the wrong kind for a query: its own query embedder
    embeds the text. Queries missing a stored vector are left out (the caller counts them).
    """
    if lab.rows is not None and lab.row_source and sp.query_prefix == sp.passage_prefix:
        reader = SpaceReader(conn, cfg, cfg.source(lab.row_source), sp)
        try:
            reader.check(conn, count=False)
        except EmbedError:
            reader = None
        if reader is not None:
            got = reader.stored(conn, sorted({r for rows in lab.rows for r in rows}))
            vecs = got.vectors
            if sp.metric == "cosine":
                vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
            pos = {key: i for i, key in enumerate(got.keys)}
            keys, out = [], []
            for qid, rows in zip(lab.qids, lab.rows, strict=True):
                have = [pos[r] for r in rows if r in pos]
                if have:
                    keys.append(qid)
                    out.append(vecs[have].mean(axis=0))
            arr = np.stack(out).astype(np.float32) if out else np.zeros((0, sp.dims), np.float32)
            several = any(len(rows) > 1 for rows in lab.rows)
            how = f"read from {reader.where}" + (
                " (several chunk rows: the mean of their unit vectors)" if several else ""
            )
            return QueryVectors(sp.fingerprint, tuple(keys), arr), how
    how = "embedded by the space's query embedder" + (" (its query prefix)" if sp.query_prefix else "")
    return embed_queries(embedder(sp), sp, lab.qids, lab.texts), how


def _aligned(lab: L.Labelled, vecs: dict[str, QueryVectors]) -> tuple[L.Labelled, dict[str, QueryVectors]]:
    """Only the queries every space has a vector for, in the same order in every space."""
    common = set.intersection(*(set(qv.keys) for qv in vecs.values())) if vecs else set(lab.qids)
    lab = lab.subset([q for q in lab.qids if q in common], "no stored query vector in a compared space")
    out = {}
    for name, qv in vecs.items():
        pos = {key: i for i, key in enumerate(qv.keys)}
        idx = [pos[q] for q in lab.qids]
        out[name] = QueryVectors(qv.space_fp, lab.qids, qv.vectors[idx])
    return lab, out


def shadow(
    cfg: Config,
    url: str,
    *,
    baseline: str | None = None,
    candidates: Sequence[str],
    sources: Sequence[str] | None = None,
    queries: int = 200,
    labels: str | Path = "auto",
    query_set: Path | None = None,
    qrels: Path | None = None,
    k: int = 10,
    sample_tenants: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    allow_cloud: bool = False,
    embedders: Mapping[str, Any] | None = None,
    phases: Phases | None = None,
    say: Say | None = None,
    sweep_queries: int = F.MAX_QUERIES,
) -> ShadowResult:
    """Compare retrieval in `baseline` (default: the legacy space) and each candidate, per source;
    persist each source's result and return them. Bad input changes nothing.

    `labels`: auto (provenance when the source has it, else the seeded set, else label-free
    only, named as such in the result), provenance, known-item, seeded (each refused where the
    source lacks it), none, or a qrels file (with `query_set`); `queries` caps the labelled
    queries (a seeded sample; a query-set file is used whole) as well as the stored rows sampled. `embedders` (space name ->
    embedder) reuses loaded models; they are not closed here.
    """
    from embed.embedders import get_embedder
    from embed.fill.backfill import check_ready
    from embed.gates import GateConfig

    base, cands = _check_args(cfg, baseline, candidates, k, queries, sample_tenants, n_boot, sweep_queries)
    srcs = _sources(cfg, sources)
    thresholds = _thresholds(cfg)
    margin = GateConfig.from_variables(cfg.variables).max_ndcg_drop or None
    if isinstance(labels, Path):
        if qrels is not None:
            raise EmbedError("give hand-written labels once: --labels FILE or --qrels FILE")
        labels, qrels = "file", labels
    if labels not in ("auto", "none", "file", *L.KINDS):
        raise EmbedError(f"--labels must be auto, provenance, known-item, seeded, none or a qrels FILE; got {labels!r}")
    if query_set is not None and len(srcs) != 1:
        raise EmbedError("--query-set judges one source: pass --source NAME with it")
    user_set = load_query_set(query_set, srcs[0]) if query_set is not None else None
    user_qrels = load_qrels(qrels) if qrels is not None else None
    if qrels is not None and len(srcs) != 1:
        raise EmbedError("--qrels judges one source: pass --source NAME with it")
    check_ready(url)
    spaces = [base, *cands]
    texts: dict[str, L.Labelled | None] = {}
    phases = phases or Phases(say)
    with connect(url) as conn:  # every check before a model loads or anything is written
        for src in srcs:
            for sp in spaces:
                SpaceReader(conn, cfg, src, sp).check(conn, count=False)
            with phases(src.name, "labels", labels):
                qname = qrels.name if qrels else None
                text = _labels(conn, cfg, src, labels, user_set, user_qrels, qname, queries, seed)
            if text is None and queries == 0:
                raise EmbedError(f"nothing to compare for {src.name}: no text queries and --queries 0")
            texts[src.name] = text
    out: dict[str, tuple[dict[str, Any], dict[str, Any], dt.datetime]] = {}
    with ExitStack() as stack:
        loaded: dict[str, Any] = dict(embedders or {})

        def embedder(sp: Space) -> Any:
            if sp.name not in loaded:
                loaded[sp.name] = stack.enter_context(get_embedder(sp, allow_cloud=allow_cloud))
            return loaded[sp.name]

        for src in srcs:
            text = texts[src.name]
            vecs: dict[str, QueryVectors] = {}
            how: dict[str, str] = {}
            run = SourceRun(cfg, src, base, cands, k, phases, sweep_queries)
            with connect(url) as conn:
                # the database's clock, as the backfill runs the freshness gate compares with
                started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                conn.rollback()
                for sp in spaces if text is not None else ():
                    with phases(src.name, "query vectors", f"{sp.name}: {len(text.qids)} {text.kind} queries"):
                        vecs[sp.name], how[sp.name] = query_vectors(conn, cfg, text, sp, embedder)
                conn.rollback()
                if text is not None:
                    text, vecs = _aligned(text, vecs)
                    if not len(text) and queries:  # every labelled query lost its vector: label-free only
                        text, vecs = None, {}
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():  # one snapshot: every space and every search sees the same rows
                    with phases(src.name, "check", ", ".join(s.name for s in spaces)):
                        run.open(conn)
                    result, params = run_source(
                        conn,
                        run,
                        text,
                        vecs,
                        queries=queries,
                        sample_tenants=sample_tenants,
                        seed=seed,
                        n_boot=n_boot,
                        thresholds=thresholds,
                        margin=margin,
                        query_vectors=how,
                    )
            out[src.name] = (result, params, started)
    results: dict[str, SourceShadow] = {}
    for name, (result, params, started) in out.items():
        with phases(name, "persist"), connect(url) as conn:
            params["seconds"] = {p: round(s, 3) for p, s in phases.by_source.get(name, {}).items()}
            run_id = persist(conn, result, params, source=name, started_at=started, base=base, cands=cands)
        if say:
            say(f"shadow {name}: run #{run_id} stored in embed_store.shadow_runs / shadow_metrics")
        results[name] = SourceShadow(
            source=name,
            run_id=run_id,
            labels=result["labels"],
            labelled_queries=result["labelled_queries"],
            queries_needed=result["queries_needed"],
            verdicts={c["candidate"]: c.get("verdict") for c in result["confidence"]},
            result=result,
            filtered=tuple(F.from_dict(d) for d in result.get("filtered_recall", [])),
        )
    return ShadowResult(results)
