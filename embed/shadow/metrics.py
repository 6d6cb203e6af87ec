"""Shadow-validation metrics over ranked id lists (docs/design.md, "Shadow validation"), computed with Polars + numpy.

Every function here takes *id lists only*: a space's retrieval result is a ranking, never a
vector, so two spaces are compared without their vectors ever meeting (invariant 2).

Input shapes
------------
rankings  Polars DataFrame ``(qid: str, space: str, rank: int, doc_id: str)``; per (qid, space)
          the ranks are exactly 1..n (n may be < k when a tenant has few documents). Ids may be
          ints in the source; they are cast to str. Extra columns are dropped.
qrels     ``(qid: str, doc_id: str, relevance: int)``; one row per judged pair.
queries   ``(qid: str, <attribute>...)``, e.g. ``lang_pair`` ('pl->en') or ``tenant``: the
          slice attributes used by :func:`aggregate`.

Label-free agreement (per query, baseline vs candidate, both cut at k)
----------------------------------------------------------------------
overlap      |A∩B| / max(|A|, |B|). With full lists this is the usual |A∩B|/k; the max() keeps
             a tenant with only 3 documents from scoring 0.3 for identical lists.
jaccard      |A∩B| / |A∪B|.
rbo          extrapolated rank-biased overlap RBO_ext of Webber, Moffat & Zobel (2010), eq. 32
             (the variant for lists of uneven length s <= l; eq. 30 when s == l), persistence p
             (default 0.9: ~86% of the weight on the top 10). Identical lists -> 1, disjoint -> 0.
             A query missing from one space scores 0.
kendall_tau  Kendall's tau between the two rankings restricted to the shared ids (no ties, so
             tau-a == tau-b); null when fewer than 2 ids are shared. Orders only what both agree
             is relevant: read it next to overlap, never alone.

Labelled metrics (per query and space) — conventions matched to ranx 0.3.21
----------------------------------------------------------------------------
ndcg    ranx ``ndcg@k`` = Järvelin & Kekäläinen: *linear* gain rel_i / log2(i + 1) (ranx's
        ``ndcg_burges`` is the 2^rel - 1 variant, not used). IDCG from the qrels sorted by
        relevance, cut at k.
recall  relevant retrieved in top k / all relevant judged for the query.
mrr     1 / rank of the first relevant id within the top k (ranx ``mrr@k``), else 0.
hit     1 if any relevant id is in the top k (ranx ``hit_rate@k``), else 0.
A document is relevant when relevance >= rel_lvl (ranx default 1). The evaluated query set is the
qrels' query set (ranx ``make_comparable``): ranked queries without qrels are dropped; a qrels
query missing from a space's rankings scores 0 there; a query whose judgments are all below
rel_lvl scores 0 on every metric and *counts* in the mean, exactly as ranx does.

Aggregation: mean per group (space, candidate…) and per slice value with percentile-bootstrap
CIs over queries (seeded, vectorised as a resample-count matrix times the value matrix).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from embed.errors import EmbedError

PER_QUERY_AGREEMENT = ("overlap", "jaccard", "rbo", "kendall_tau")
PER_QUERY_RELEVANCE = ("ndcg", "recall", "mrr", "hit")
ALL_SLICE = "all"
UNSET_SLICE = "(unset)"
_MAX_CELLS = 4_000_000  # cap on dense temporaries (bootstrap counts, tau sign cubes)


class ShadowInputError(EmbedError, ValueError):
    """Malformed rankings/qrels/queries: a clear message, nothing computed."""


# ----------------------------------------------------------------------------- validation


def _require(df: pl.DataFrame, name: str, cols: Sequence[str]) -> None:
    if not isinstance(df, pl.DataFrame):
        raise ShadowInputError(f"{name} must be a polars DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ShadowInputError(f"{name} lacks column(s) {missing}; has {df.columns}")
    for c in cols:
        if df[c].null_count():
            raise ShadowInputError(f"{name}.{c} has {df[c].null_count()} null value(s)")


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ShadowInputError(f"k must be a positive int, got {k!r}")


def validate_rankings(rankings: pl.DataFrame, k: int | None = None) -> pl.DataFrame:
    """Checked, typed copy of `rankings` cut at k: bad rankings must fail loudly, not skew metrics."""
    _require(rankings, "rankings", ("qid", "space", "rank", "doc_id"))
    try:
        r = rankings.select(
            pl.col("qid").cast(pl.String),
            pl.col("space").cast(pl.String),
            pl.col("rank").cast(pl.Int64, strict=True),
            pl.col("doc_id").cast(pl.String),
        )
    except pl.exceptions.PolarsError as exc:
        raise ShadowInputError(f"rankings has a column of the wrong type: {exc}") from None
    if r.height and r["rank"].min() < 1:  # type: ignore[operator]
        raise ShadowInputError("rankings.rank must be >= 1")
    g = r.group_by("qid", "space").agg(
        n=pl.len(),
        max_rank=pl.col("rank").max(),
        n_rank=pl.col("rank").n_unique(),
        n_doc=pl.col("doc_id").n_unique(),
    )
    bad = g.filter(pl.col("n_doc") != pl.col("n"))
    if bad.height:
        q = bad.row(0, named=True)
        raise ShadowInputError(f"rankings repeat a doc_id within (qid={q['qid']!r}, space={q['space']!r})")
    bad = g.filter((pl.col("n_rank") != pl.col("n")) | (pl.col("max_rank") != pl.col("n")))
    if bad.height:
        q = bad.row(0, named=True)
        raise ShadowInputError(
            f"ranks of (qid={q['qid']!r}, space={q['space']!r}) are not exactly 1..{q['n']} (repeated or gapped)"
        )
    if k is not None:
        _check_k(k)
        r = r.filter(pl.col("rank") <= k)
    return r


def validate_qrels(qrels: pl.DataFrame) -> pl.DataFrame:
    """Checked, typed copy of `qrels` (qid, doc_id, relevance)."""
    _require(qrels, "qrels", ("qid", "doc_id", "relevance"))
    try:
        q = qrels.select(
            pl.col("qid").cast(pl.String),
            pl.col("doc_id").cast(pl.String),
            pl.col("relevance").cast(pl.Int64, strict=True),
        )
    except pl.exceptions.PolarsError as exc:
        raise ShadowInputError(f"qrels has a column of the wrong type: {exc}") from None
    if q.select(pl.struct("qid", "doc_id").is_duplicated().any()).item():
        raise ShadowInputError("qrels judge the same (qid, doc_id) twice")
    return q


def _space(r: pl.DataFrame, space: str) -> pl.DataFrame:
    out = r.filter(pl.col("space") == space)
    if not out.height:
        have = sorted(r["space"].unique().to_list())
        raise ShadowInputError(f"no rankings for space {space!r}; have {have}")
    return out


# ----------------------------------------------------------------------------- label-free


def _agreement(a: pl.DataFrame, b: pl.DataFrame, k: int, p: float, with_tau: bool) -> pl.DataFrame:
    """Core of the label-free metrics: a and b are (qid, rank, doc_id), both already cut at k.

    X_d (overlap of the depth-d prefixes) is built without a loop: a shared id enters X_d at
    d = max(rank_a, rank_b), so X = cumsum of a per-depth count.
    """
    qids = pl.concat([a.select("qid"), b.select("qid")]).unique().sort("qid").with_row_index("qi")
    nq = qids.height
    la = np.zeros(nq, np.int64)
    lb = np.zeros(nq, np.int64)
    for arr, side in ((la, a), (lb, b)):
        cnt = side.group_by("qid").agg(n=pl.len()).join(qids, on="qid")
        arr[cnt["qi"].to_numpy()] = cnt["n"].to_numpy()
    shared = (
        a.select("qid", "doc_id", ra="rank")
        .join(b.select("qid", "doc_id", rb="rank"), on=["qid", "doc_id"])
        .join(qids, on="qid")
        .sort("qi", "ra")
    )
    qi = shared["qi"].to_numpy().astype(np.int64)
    ra = shared["ra"].to_numpy()
    rb = shared["rb"].to_numpy()
    depth = np.zeros((nq, k), np.float64)
    np.add.at(depth, (qi, np.maximum(ra, rb) - 1), 1.0)
    x = np.cumsum(depth, axis=1)  # x[:, d-1] = X_d
    n_shared = x[:, -1].astype(np.int64)

    s = np.minimum(la, lb)
    longest = np.maximum(la, lb)
    d = np.arange(1, k + 1, dtype=np.float64)
    pd_ = p**d
    rows = np.arange(nq)
    with np.errstate(divide="ignore", invalid="ignore"):
        in_l = d[None, :] <= longest[:, None]
        term1 = np.where(in_l, x / d * pd_, 0.0).sum(axis=1)
        x_s = np.where(s > 0, x[rows, np.maximum(s, 1) - 1], 0.0)
        x_l = x[rows, np.maximum(longest, 1) - 1]
        tail = in_l & (d[None, :] > s[:, None])
        term2 = x_s * np.where(tail, (d - s[:, None]) / (s[:, None] * d) * pd_, 0.0).sum(axis=1)
        term3 = ((x_l - x_s) / longest + np.where(s > 0, x_s / s, 0.0)) * p ** longest.astype(np.float64)
        rbo = np.where(s > 0, (1 - p) / p * (term1 + term2) + term3, 0.0)
        overlap = n_shared / longest
        jaccard = n_shared / (la + lb - n_shared)

    out = {
        "qid": qids["qid"],
        "n_baseline": la,
        "n_candidate": lb,
        "n_shared": n_shared,
        "overlap": overlap,
        "jaccard": jaccard,
        "rbo": np.clip(rbo, 0.0, 1.0),  # only float dust can leave [0, 1]
    }
    if with_tau:
        out["kendall_tau"] = _kendall_shared(qi, rb, nq, k, n_shared)
    return pl.DataFrame(out).with_columns(pl.col(pl.Float64).fill_nan(None))


def _kendall_shared(qi: np.ndarray, rb: np.ndarray, nq: int, k: int, n_shared: np.ndarray) -> np.ndarray:
    """Kendall tau per query: rows sorted by (qi, rank_a), so tau is the mean sign of rb[j]-rb[i], i<j."""
    if not len(qi):
        return np.full(nq, np.nan)
    starts = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(qi, minlength=nq), out=starts[1:])
    pos = np.arange(len(qi)) - starts[qi]
    mat = np.full((nq, k), np.nan)
    mat[qi, pos] = rb
    upper = np.triu(np.ones((k, k), bool), 1)
    net = np.zeros(nq)
    step = max(1, _MAX_CELLS // (k * k))
    for lo in range(0, nq, step):  # chunks over queries, only to bound memory
        m = mat[lo : lo + step]
        sign = np.nan_to_num(np.sign(m[:, None, :] - m[:, :, None]))
        net[lo : lo + step] = (sign * upper).sum(axis=(1, 2))
    pairs = n_shared * (n_shared - 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_shared >= 2, net / pairs, np.nan)


def pairwise_agreement(rankings: pl.DataFrame, baseline: str, candidate: str, k: int, p: float = 0.9) -> pl.DataFrame:
    """Per-query label-free agreement of two spaces' top-k lists (see module docstring).

    Returns (qid, n_baseline, n_candidate, n_shared, overlap, jaccard, rbo, kendall_tau) over the
    union of the two spaces' queries.
    """
    if not 0.0 < p < 1.0:
        raise ShadowInputError(f"RBO persistence p must be in (0, 1), got {p!r}")
    r = validate_rankings(rankings, k)
    return _agreement(_space(r, baseline), _space(r, candidate), k, p, with_tau=True)


def neighbour_retention_per_item(
    neighbours: pl.DataFrame, baseline: str, candidate: str, k: int, exclude_self: bool = True
) -> pl.DataFrame:
    """Per stored item (qid = item id): overlap of its top-k neighbours in the two spaces.

    With stored vectors as queries each item is its own nearest neighbour at distance 0 in every
    space; `exclude_self` drops it (then re-ranks) so retention is not inflated by 1/k for free.
    """
    r = validate_rankings(neighbours)
    _check_k(k)
    if exclude_self:
        r = r.filter(pl.col("doc_id") != pl.col("qid")).with_columns(
            pl.col("rank").rank("ordinal").over("qid", "space").cast(pl.Int64)
        )
    r = r.filter(pl.col("rank") <= k)
    agree = _agreement(_space(r, baseline), _space(r, candidate), k, 0.9, with_tau=False)
    return agree.select("qid", retention="overlap")


def neighbour_retention(
    neighbours: pl.DataFrame, baseline: str, candidate: str, k: int, exclude_self: bool = True
) -> float:
    """Mean neighbour overlap: how much of each item's neighbourhood survives the space change."""
    per = neighbour_retention_per_item(neighbours, baseline, candidate, k, exclude_self)
    return float(per["retention"].mean())  # type: ignore[arg-type]


def ann_recall(ann: pl.DataFrame, exact: pl.DataFrame, k: int) -> pl.DataFrame:
    """Index health per (space, qid): |ANN top-k ∩ exact top-k| / |exact top-k|.

    Both are rankings in the same space (HNSW vs a sequential scan). A query the ANN side lost
    scores 0; a query with an empty exact list is not in the output.
    """
    a = validate_rankings(ann, k)
    e = validate_rankings(exact, k)
    n_exact = e.group_by("space", "qid").agg(n=pl.len())
    hits = a.join(e, on=["space", "qid", "doc_id"]).group_by("space", "qid").agg(h=pl.len())
    return (
        n_exact.join(hits, on=["space", "qid"], how="left")
        .select("space", "qid", ann_recall=pl.col("h").fill_null(0) / pl.col("n"))
        .sort("space", "qid")
    )


def latency_summary(ms: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """p50/p95 (numpy's linear interpolation), mean and max of per-query latencies in ms."""
    x = np.asarray(ms, dtype=np.float64).ravel()
    if x.size and not np.isfinite(x).all():
        raise ShadowInputError("latencies must be finite numbers of milliseconds")
    if not x.size:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    p50, p95 = np.percentile(x, [50, 95])
    return {"n": int(x.size), "p50": float(p50), "p95": float(p95), "mean": float(x.mean()), "max": float(x.max())}


# ----------------------------------------------------------------------------- labelled


def relevance_metrics(rankings: pl.DataFrame, qrels: pl.DataFrame, k: int, rel_lvl: int = 1) -> pl.DataFrame:
    """Per (qid, space): ndcg, recall, mrr, hit at k, matching ranx (see module docstring)."""
    r = validate_rankings(rankings, k)
    q = validate_qrels(qrels)
    rel = q.filter(pl.col("relevance") >= rel_lvl)
    grid = q.select("qid").unique().join(r.select("space").unique(), how="cross")
    found = (
        r.join(rel, on=["qid", "doc_id"])
        .group_by("qid", "space")
        .agg(
            dcg=(pl.col("relevance") / (pl.col("rank") + 1).log(2)).sum(),
            n_hit=pl.len(),
            first=pl.col("rank").min(),
        )
    )
    ideal = (
        rel.sort(["qid", "relevance"], descending=[False, True])
        .with_columns(pos=pl.int_range(1, pl.len() + 1).over("qid"))
        .group_by("qid")
        .agg(
            idcg=(pl.col("relevance") / (pl.col("pos") + 1).log(2)).filter(pl.col("pos") <= k).sum(),
            n_rel=pl.len(),
        )
    )
    out = grid.join(found, on=["qid", "space"], how="left").join(ideal, on="qid", how="left")
    return out.select(
        "qid",
        "space",
        ndcg=pl.when(pl.col("idcg") > 0).then(pl.col("dcg").fill_null(0) / pl.col("idcg")).otherwise(0.0),
        recall=pl.when(pl.col("n_rel") > 0).then(pl.col("n_hit").fill_null(0) / pl.col("n_rel")).otherwise(0.0),
        mrr=(1.0 / pl.col("first")).fill_null(0.0),
        hit=(pl.col("n_hit").fill_null(0) > 0).cast(pl.Float64),
    ).sort("space", "qid")


# ----------------------------------------------------------------------------- aggregation


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = 1000, ci: float = 0.95, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column means of an (n_queries, n_metrics) matrix (NaN = undefined) with percentile CIs.

    Resamples queries (rows) with replacement; all metrics share the same resamples. Each
    resample is a row of counts, so means = counts @ values — one BLAS call per chunk, no loop
    per sample. Returns (mean, ci_low, ci_high, n_defined) per column; NaN where undefined.
    """
    if not 0.0 < ci < 1.0:
        raise ShadowInputError(f"ci must be in (0, 1), got {ci!r}")
    if n_boot < 1:
        raise ShadowInputError(f"n_boot must be >= 1, got {n_boot!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    rng = rng if rng is not None else np.random.default_rng(0)
    n, m = v.shape
    defined = ~np.isnan(v)
    n_def = defined.sum(axis=0)
    v0 = np.where(defined, v, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = v0.sum(axis=0) / n_def
    if n == 0:
        nan = np.full(m, np.nan)
        return nan, nan.copy(), nan.copy(), n_def
    means = np.empty((n_boot, m))
    step = max(1, _MAX_CELLS // n)
    d0 = defined.astype(np.float64)
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        counts = counts.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            means[lo : lo + b] = (counts @ v0) / (counts @ d0)
    alpha = (1.0 - ci) / 2.0
    lo_hi = np.full((2, m), np.nan)
    ok = n_def > 0
    if ok.any():
        lo_hi[:, ok] = np.nanpercentile(means[:, ok], [100 * alpha, 100 * (1 - alpha)], axis=0)
    # A constant metric must give [v, v], not an interval that misses v by summation-order dust.
    dust = 1e-12 * np.maximum(1.0, np.abs(np.nan_to_num(point)))
    lo_hi[0] = np.where(np.abs(lo_hi[0] - point) <= dust, np.minimum(lo_hi[0], point), lo_hi[0])
    lo_hi[1] = np.where(np.abs(lo_hi[1] - point) <= dust, np.maximum(lo_hi[1], point), lo_hi[1])
    return point, lo_hi[0], lo_hi[1], n_def


def _group_seed(seed: int, key: tuple[Any, ...]) -> np.random.Generator:
    """A generator per group, so one group's CI does not change when other slices are added."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def aggregate(
    per_query: pl.DataFrame,
    metrics: Sequence[str],
    *,
    by: Sequence[str] = ("space",),
    queries: pl.DataFrame | None = None,
    slices: Sequence[str] = (),
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Mean ± percentile-bootstrap CI of each metric per group, overall and per slice value.

    Returns long rows (*by, slice, slice_value, metric, n, value, ci_low, ci_high): slice 'all'
    (slice_value 'all') plus one block per attribute in `slices` (from `queries`, joined on qid;
    a query without the attribute lands in '(unset)'). Nulls (e.g. tau with < 2 shared ids) are
    left out of that metric's mean and n.
    """
    by = list(by)
    _require(per_query, "per_query", ["qid", *by])
    missing = [m for m in metrics if m not in per_query.columns]
    if missing:
        raise ShadowInputError(f"per-query frame lacks metric column(s) {missing}")
    pq = per_query.select(
        pl.col("qid").cast(pl.String), *by, *(pl.col(m).cast(pl.Float64).fill_nan(None) for m in metrics)
    )
    frames = [pq.with_columns(slice=pl.lit(ALL_SLICE), slice_value=pl.lit(ALL_SLICE))]
    if slices:
        if queries is None:
            raise ShadowInputError("slices given without a queries frame")
        _require(queries, "queries", ["qid"])
        absent = [s for s in slices if s not in queries.columns]
        if absent:
            raise ShadowInputError(f"queries lacks slice column(s) {absent}")
        qa = queries.select(pl.col("qid").cast(pl.String), *(pl.col(s).cast(pl.String) for s in slices))
        if qa["qid"].is_duplicated().any():
            raise ShadowInputError("queries lists a qid twice")
        joined = pq.join(qa, on="qid", how="left")
        for s in slices:
            frames.append(
                joined.select(pq.columns).with_columns(slice=pl.lit(s), slice_value=joined[s].fill_null(UNSET_SLICE))
            )
    long = pl.concat(frames)
    keys = [*by, "slice", "slice_value"]
    rows: list[dict[str, Any]] = []
    for key, part in long.group_by(keys, maintain_order=True):
        vals = part.select(metrics).to_numpy().astype(np.float64)
        point, lo, hi, n_def = bootstrap_mean_ci(vals, n_boot, ci, _group_seed(seed, tuple(key)))
        for j, metric in enumerate(metrics):
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "metric": metric,
                    "n": int(n_def[j]),
                    "value": _num(point[j]),
                    "ci_low": _num(lo[j]),
                    "ci_high": _num(hi[j]),
                }
            )
    schema = {
        **{c: per_query.schema[c] for c in by},
        "slice": pl.String,
        "slice_value": pl.String,
        "metric": pl.String,
        "n": pl.Int64,
        "value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
    order = [pl.col("slice") != ALL_SLICE, "slice", "slice_value", *by]
    return pl.DataFrame(rows, schema=schema, orient="row").sort(order, maintain_order=True)


def paired_deltas(
    per_query: pl.DataFrame,
    metrics: Sequence[str],
    baseline: str,
    candidates: Sequence[str],
    **aggregate_kwargs: Any,
) -> pl.DataFrame:
    """candidate − baseline per query, aggregated with CIs (a paired bootstrap over queries).

    This is the number a quality gate wants: a CI entirely below 0 means the candidate is worse
    on these queries, whatever their absolute difficulty. Returns aggregate() rows keyed by
    'candidate' instead of 'space'.
    """
    _require(per_query, "per_query", ["qid", "space", *metrics])
    base = per_query.filter(pl.col("space") == baseline).select("qid", *(pl.col(m).alias(f"_b_{m}") for m in metrics))
    if not base.height:
        raise ShadowInputError(f"no per-query metrics for baseline space {baseline!r}")
    parts = []
    for cand in candidates:
        c = per_query.filter(pl.col("space") == cand)
        if not c.height:
            raise ShadowInputError(f"no per-query metrics for candidate space {cand!r}")
        parts.append(
            c.join(base, on="qid").select(
                "qid", candidate=pl.lit(cand), **{m: pl.col(m) - pl.col(f"_b_{m}") for m in metrics}
            )
        )
    return aggregate(pl.concat(parts), metrics, by=("candidate",), **aggregate_kwargs)


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
