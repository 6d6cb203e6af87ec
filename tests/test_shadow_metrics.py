"""Shadow metrics over id lists: labelled metrics pinned to ranx, label-free ones to hand-worked
cases and a loop-by-the-paper reference, bootstrap CIs, recalibration, and the speed target."""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import pytest
from ranx import Qrels, Run, evaluate

from embed.errors import EmbedError
from embed.shadow import (
    ShadowInputError,
    aggregate,
    ann_recall,
    bootstrap_mean_ci,
    latency_summary,
    neighbour_retention,
    neighbour_retention_per_item,
    paired_deltas,
    pairwise_agreement,
    recalibrate_threshold,
    recalibrate_thresholds,
    relevance_metrics,
)


def rankings_of(lists: dict[tuple[str, str], list[str]]) -> pl.DataFrame:
    """{(qid, space): [doc ids best first]} -> the rankings frame."""
    rows = [(q, s, r, d) for (q, s), docs in lists.items() for r, d in enumerate(docs, 1)]
    return pl.DataFrame(
        rows, schema={"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String}, orient="row"
    )


def one(df: pl.DataFrame, qid: str = "q") -> dict:
    return df.filter(pl.col("qid") == qid).row(0, named=True)


# ----------------------------------------------------------------------------- ranx parity


def random_eval_set(seed: int, n_q: int = 300, k_max: int = 15, pool: int = 40):
    rng = np.random.default_rng(seed)
    lists: dict[tuple[str, str], list[str]] = {}
    qrels_rows = []
    for i in range(n_q):
        q = f"q{i:04d}"
        for space in ("base", "cand"):
            n = int(rng.integers(0, k_max + 1))  # 0: the query is missing from this space
            if n:
                lists[(q, space)] = [f"d{x}" for x in rng.choice(pool, n, replace=False)]
        if i % 10 == 9:
            continue  # ranked, but no qrels: ranx (make_comparable) drops it
        n_j = int(rng.integers(1, 8))
        docs = rng.choice(pool, n_j, replace=False)
        rels = rng.integers(0, 4, n_j)
        if i % 10 == 3:
            rels[:] = 0  # judged, but nothing relevant
        qrels_rows += [(q, f"d{d}", int(r)) for d, r in zip(docs, rels, strict=True)]
    qrels_only = [(f"qx{i}", "d1", 2) for i in range(5)]  # in qrels, never ranked by any space
    qrels = pl.DataFrame(
        qrels_rows + qrels_only, schema={"qid": pl.String, "doc_id": pl.String, "relevance": pl.Int64}, orient="row"
    )
    return rankings_of(lists), qrels


def ranx_scores(rankings: pl.DataFrame, qrels: pl.DataFrame, space: str, metrics: list[str]) -> dict[str, dict]:
    qd: dict[str, dict[str, int]] = {}
    for q, d, r in qrels.iter_rows():
        qd.setdefault(q, {})[d] = r
    rd: dict[str, dict[str, float]] = {}
    for q, _, rank, d in rankings.filter(pl.col("space") == space).iter_rows():
        rd.setdefault(q, {})[d] = 1.0 / rank
    qrels_r, run = Qrels(qd), Run(rd)
    run = run.make_comparable(qrels_r)
    evaluate(qrels_r, run, metrics, return_mean=False)
    return {m: dict(run.scores[m]) for m in metrics}


@pytest.mark.parametrize(("k", "rel_lvl"), [(10, 1), (5, 1), (10, 2)])
def test_labelled_metrics_match_ranx(k: int, rel_lvl: int) -> None:
    rankings, qrels = random_eval_set(seed=7 + k + rel_lvl)
    ours = relevance_metrics(rankings, qrels, k, rel_lvl=rel_lvl)
    suffix = f"@{k}" + (f"-l{rel_lvl}" if rel_lvl != 1 else "")
    names = {"ndcg": f"ndcg{suffix}", "recall": f"recall{suffix}", "mrr": f"mrr{suffix}", "hit": f"hit_rate{suffix}"}
    n_qrels_queries = qrels["qid"].n_unique()
    for space in ("base", "cand"):
        ref = ranx_scores(rankings, qrels, space, list(names.values()))
        mine = ours.filter(pl.col("space") == space)
        assert mine.height == n_qrels_queries  # the evaluated set is the qrels' query set
        for col, rname in names.items():
            got = dict(zip(mine["qid"].to_list(), mine[col].to_list(), strict=True))
            assert got.keys() == ref[rname].keys()
            for q, v in ref[rname].items():
                assert got[q] == pytest.approx(v, abs=1e-9), (space, col, q)
            assert float(mine[col].mean()) == pytest.approx(float(np.mean(list(ref[rname].values()))), abs=1e-9)


def test_ndcg_is_ranx_default_linear_gain_not_burges() -> None:
    rankings = rankings_of({("q", "s"): ["x", "a"]})
    qrels = pl.DataFrame({"qid": ["q", "q"], "doc_id": ["a", "b"], "relevance": [3, 1]})
    got = one(relevance_metrics(rankings, qrels, k=2))["ndcg"]
    linear = (3 / math.log2(3)) / (3 / 1 + 1 / math.log2(3))
    assert got == pytest.approx(linear, abs=1e-12)
    ranx = evaluate(Qrels({"q": {"a": 3, "b": 1}}), Run({"q": {"x": 2.0, "a": 1.0}}), "ndcg@2")
    assert got == pytest.approx(ranx, abs=1e-12)


def test_query_without_relevant_docs_scores_zero_and_counts_like_ranx() -> None:
    rankings = rankings_of({("q1", "s"): ["a", "b"], ("q2", "s"): ["c"], ("q3", "s"): ["z"]})
    qrels = pl.DataFrame({"qid": ["q1", "q2"], "doc_id": ["a", "c"], "relevance": [1, 0]})
    out = relevance_metrics(rankings, qrels, k=10)
    assert out["qid"].to_list() == ["q1", "q2"]  # q3 has no qrels: not evaluated
    assert one(out, "q2") == {"qid": "q2", "space": "s", "ndcg": 0.0, "recall": 0.0, "mrr": 0.0, "hit": 0.0}
    assert out["ndcg"].mean() == pytest.approx(0.5)
    ranx = evaluate(
        Qrels({"q1": {"a": 1}, "q2": {"c": 0}}), Run({"q1": {"a": 2.0, "b": 1.0}, "q2": {"c": 1.0}}), "ndcg@10"
    )
    assert ranx == pytest.approx(0.5)


# ----------------------------------------------------------------------------- label-free


def rbo_ext_reference(a: list[str], b: list[str], p: float) -> float:
    """Webber et al. (2010) eq. 32 written out literally, one depth at a time."""
    s_list, l_list = (a, b) if len(a) <= len(b) else (b, a)
    s, ll = len(s_list), len(l_list)

    def x(d: int) -> int:
        return len(set(s_list[: min(d, s)]) & set(l_list[:d]))

    total = sum(x(d) / d * p**d for d in range(1, ll + 1))
    total += sum(x(s) * (d - s) / (s * d) * p**d for d in range(s + 1, ll + 1))
    return (1 - p) / p * total + ((x(ll) - x(s)) / ll + x(s) / s) * p**ll


def test_identical_lists_agree_fully() -> None:
    docs = [f"d{i}" for i in range(10)]
    out = one(pairwise_agreement(rankings_of({("q", "A"): docs, ("q", "B"): docs}), "A", "B", k=10))
    assert out["overlap"] == out["jaccard"] == 1.0
    assert out["rbo"] == pytest.approx(1.0, abs=1e-12)
    assert out["kendall_tau"] == pytest.approx(1.0)
    assert out["n_shared"] == 10


def test_disjoint_lists_agree_not_at_all() -> None:
    out = one(pairwise_agreement(rankings_of({("q", "A"): list("abcde"), ("q", "B"): list("vwxyz")}), "A", "B", k=5))
    assert (out["overlap"], out["jaccard"], out["rbo"]) == (0.0, 0.0, 0.0)
    assert out["kendall_tau"] is None  # < 2 shared ids: undefined, not 0


def test_worked_example() -> None:
    # A = a b c d, B = b a c e; prefix overlaps X_1..X_4 = 0, 2, 3, 3
    out = one(pairwise_agreement(rankings_of({("q", "A"): list("abcd"), ("q", "B"): list("bace")}), "A", "B", k=4))
    p = 0.9
    rbo = (1 - p) / p * (0 / 1 * p + 2 / 2 * p**2 + 3 / 3 * p**3 + 3 / 4 * p**4) + 3 / 4 * p**4
    assert rbo == pytest.approx(0.717750, abs=1e-6)
    assert out["rbo"] == pytest.approx(rbo, abs=1e-12)
    assert out["overlap"] == 0.75
    assert out["jaccard"] == 3 / 5
    # shared a, b, c: (a,b) discordant, (a,c) and (b,c) concordant -> (2 - 1) / 3
    assert out["kendall_tau"] == pytest.approx(1 / 3)


def test_reversed_list_keeps_overlap_loses_order() -> None:
    docs = list("abcdefghij")
    out = one(pairwise_agreement(rankings_of({("q", "A"): docs, ("q", "B"): docs[::-1]}), "A", "B", k=10))
    assert out["overlap"] == 1.0
    assert out["kendall_tau"] == pytest.approx(-1.0)
    assert out["rbo"] == pytest.approx(rbo_ext_reference(docs, docs[::-1], 0.9), abs=1e-12)
    assert out["rbo"] < 0.9


def test_rbo_matches_the_paper_on_random_uneven_lists() -> None:
    import scipy.stats as scipy_stats
    rng = np.random.default_rng(3)
    lists, expect = {}, {}
    for i in range(300):
        na, nb = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        a = [f"d{x}" for x in rng.choice(20, na, replace=False)]
        b = [f"d{x}" for x in rng.choice(20, nb, replace=False)]
        lists[(f"q{i}", "A")], lists[(f"q{i}", "B")] = a, b
        shared = [d for d in a if d in b]
        tau = None
        if len(shared) >= 2:
            tau = scipy_stats.kendalltau([a.index(d) for d in shared], [b.index(d) for d in shared]).statistic
        expect[f"q{i}"] = (rbo_ext_reference(a, b, 0.8), len(shared) / max(na, nb), tau)
    out = pairwise_agreement(rankings_of(lists), "A", "B", k=12, p=0.8)
    for row in out.iter_rows(named=True):
        rbo, ov, tau = expect[row["qid"]]
        assert row["rbo"] == pytest.approx(rbo, abs=1e-12)
        assert row["overlap"] == pytest.approx(ov)
        assert row["kendall_tau"] == (pytest.approx(tau) if tau is not None else None)


def test_query_missing_from_one_space_scores_zero_agreement() -> None:
    r = rankings_of({("q", "A"): list("abc"), ("q", "B"): list("abc"), ("lost", "A"): list("xyz")})
    out = pairwise_agreement(r, "A", "B", k=3)
    assert one(out, "lost")["overlap"] == 0.0 and one(out, "lost")["rbo"] == 0.0
    assert one(out, "q")["rbo"] == pytest.approx(1.0)


def test_rankings_are_cut_at_k() -> None:
    r = rankings_of({("q", "A"): list("abcXYZ"), ("q", "B"): list("abcUVW")})
    assert one(pairwise_agreement(r, "A", "B", k=3))["overlap"] == 1.0


def test_bad_rankings_are_refused_with_a_clear_error() -> None:
    ok = rankings_of({("q", "A"): list("ab"), ("q", "B"): list("ab")})
    with pytest.raises(ShadowInputError, match="repeat a doc_id"):
        pairwise_agreement(rankings_of({("q", "A"): list("aa"), ("q", "B"): list("ab")}), "A", "B", k=2)
    with pytest.raises(ShadowInputError, match=r"not exactly 1\.\.2"):
        pairwise_agreement(ok.with_columns(pl.col("rank") * 2), "A", "B", k=5)
    with pytest.raises(ShadowInputError, match="lacks column"):
        pairwise_agreement(ok.drop("rank"), "A", "B", k=2)
    with pytest.raises(ShadowInputError, match="no rankings for space 'C'"):
        pairwise_agreement(ok, "A", "C", k=2)
    with pytest.raises(ShadowInputError, match="k must be"):
        pairwise_agreement(ok, "A", "B", k=0)
    with pytest.raises(EmbedError, match="null"):  # the CLI's one-line error type
        pairwise_agreement(ok.with_columns(doc_id=pl.lit(None, pl.String)), "A", "B", k=2)


# ----------------------------------------------------------------------------- helpers


def test_neighbour_retention_excludes_the_item_itself() -> None:
    nb = rankings_of(
        {
            ("i1", "A"): ["i1", "a", "b", "c"],
            ("i1", "B"): ["i1", "a", "x", "y"],
            ("i2", "A"): ["i2", "p", "q", "r"],
            ("i2", "B"): ["i2", "q", "p", "r"],
        }
    )
    per = neighbour_retention_per_item(nb, "A", "B", k=3)
    assert dict(per.iter_rows()) == {"i1": pytest.approx(1 / 3), "i2": 1.0}
    assert neighbour_retention(nb, "A", "B", k=3) == pytest.approx(2 / 3)
    assert neighbour_retention(nb, "A", "B", k=3, exclude_self=False) == pytest.approx((2 / 3 + 1) / 2)


def test_ann_recall_against_exact() -> None:
    exact = rankings_of({("q1", "A"): list("abcd"), ("q2", "A"): list("efgh"), ("q3", "A"): list("ijkl")})
    ann = rankings_of({("q1", "A"): list("abdc"), ("q2", "A"): list("efxy")})  # q3 lost by the index
    out = ann_recall(ann, exact, k=4)
    assert out["ann_recall"].to_list() == [1.0, 0.5, 0.0]
    assert ann_recall(ann, exact, k=2)["ann_recall"].to_list() == [1.0, 1.0, 0.0]


def test_latency_summary() -> None:
    s = latency_summary(list(range(1, 101)))
    assert s["n"] == 100 and s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05)
    assert latency_summary([])["p95"] is None


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 500, 5000):
        v = rng.normal(0.6, 0.2, size=(n, 2))
        point, lo, hi, n_def = bootstrap_mean_ci(v, 1000, 0.95, np.random.default_rng(1))
        assert (lo <= point).all() and (point <= hi).all()
        assert np.allclose(point, v.mean(axis=0)) and (n_def == n).all()
        widths.append(float(hi[0] - lo[0]))
        # percentile bootstrap of a mean ≈ the normal interval ± 1.96 σ/√n
        assert widths[-1] == pytest.approx(2 * 1.96 * v[:, 0].std() / math.sqrt(n), rel=0.2)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_is_seeded_and_skips_undefined_values() -> None:
    v = np.array([[1.0, np.nan], [0.0, 1.0], [1.0, np.nan], [0.0, 0.0]])
    a = bootstrap_mean_ci(v, 500, 0.9, np.random.default_rng(5))
    b = bootstrap_mean_ci(v, 500, 0.9, np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0][1] == 0.5 and a[3].tolist() == [4, 2]
    point, lo, hi, n = bootstrap_mean_ci(np.full((3, 1), np.nan), 100)
    assert np.isnan(hi[0])
    assert np.isnan(point[0]) and np.isnan(lo[0]) and n[0] == 0


def test_aggregate_per_space_and_slice() -> None:
    per_q = pl.DataFrame(
        {
            "qid": ["a", "b", "c", "a", "b", "c"],
            "space": ["S"] * 3 + ["T"] * 3,
            "m": [1.0, 0.0, 1.0, 0.0, 0.0, None],
        }
    )
    queries = pl.DataFrame({"qid": ["a", "b", "c"], "lang_pair": ["pl->en", "pl->en", None]})
    out = aggregate(per_q, ["m"], queries=queries, slices=["lang_pair"], n_boot=200)
    got = {(r["space"], r["slice_value"]): (r["value"], r["n"]) for r in out.iter_rows(named=True)}
    assert got == {
        ("S", "all"): (pytest.approx(2 / 3), 3),
        ("T", "all"): (0.0, 2),
        ("S", "pl->en"): (0.5, 2),
        ("T", "pl->en"): (0.0, 2),
        ("S", "(unset)"): (1.0, 1),
        ("T", "(unset)"): (None, 0),
    }
    assert out["slice"].to_list()[:2] == ["all", "all"]
    again = aggregate(per_q, ["m"], queries=queries, slices=["lang_pair"], n_boot=200)
    assert out.equals(again)
    # one group's CI does not depend on which other slices are computed
    alone = aggregate(per_q, ["m"], n_boot=200)
    assert alone.filter(pl.col("space") == "S").row(0) == out.filter(pl.col("space") == "S").row(0)
    with pytest.raises(ShadowInputError, match="slice column"):
        aggregate(per_q, ["m"], queries=queries, slices=["tenant"])


def test_paired_deltas() -> None:
    per_q = pl.DataFrame({"qid": ["a", "b", "a", "b"], "space": ["B", "B", "C", "C"], "ndcg": [0.5, 1.0, 0.7, 0.6]})
    out = paired_deltas(per_q, ["ndcg"], "B", ["C"], n_boot=100)
    row = out.row(0, named=True)
    assert row["candidate"] == "C" and row["value"] == pytest.approx(((0.7 - 0.5) + (0.6 - 1.0)) / 2)


# ----------------------------------------------------------------------------- recalibration


def test_recalibration_of_a_scaled_space_doubles_the_threshold() -> None:
    base = np.random.default_rng(0).uniform(0.02, 0.9, 5000)
    for t in (0.05, 0.3, 0.6):
        rc = recalibrate_threshold(base, 2 * base, t)
        assert rc.candidate_threshold == pytest.approx(2 * t, rel=1e-12)
        assert rc.extrapolated is None
        assert rc.quantile == pytest.approx((base <= t).mean(), abs=1e-3)
        assert rc.cand_fraction_within == pytest.approx(rc.base_fraction_within, abs=1e-3)


def test_recalibration_follows_any_monotone_map() -> None:
    base = np.random.default_rng(1).uniform(0.0, 1.0, 20000)
    cand = np.random.default_rng(2).permutation(np.sqrt(base))  # same marginal as sqrt(base), pairing shuffled
    rc = recalibrate_threshold(base, cand, 0.25)
    assert rc.candidate_threshold == pytest.approx(0.5, abs=0.01)


def test_recalibration_outside_the_sample_is_extrapolated_and_flagged() -> None:
    base = np.linspace(0.2, 0.8, 101)
    below = recalibrate_threshold(base, 2 * base, 0.05)
    assert below.extrapolated == "below" and below.quantile == 0.0
    assert below.candidate_threshold == pytest.approx(0.1)  # anchored at distance 0 <-> 0
    above = recalibrate_threshold(base, 2 * base, 1.0)
    assert above.extrapolated == "above" and above.quantile == 1.0
    assert above.candidate_threshold == pytest.approx(2.0)
    edge = recalibrate_threshold(base, 2 * base, 0.2)
    assert edge.extrapolated is None and edge.candidate_threshold == pytest.approx(0.4)


def test_recalibration_reports_precision_recall_with_labels() -> None:
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([True, True, False, True, False, False])
    rc = recalibrate_threshold(base, base * 3, 0.35, labels)
    # base: predicted {0.1, 0.2, 0.3}: 2 of 3 relevant, 2 of 3 relevant found
    assert (rc.base_precision, rc.base_recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert rc.candidate_threshold == pytest.approx(1.05)
    assert (rc.cand_precision, rc.cand_recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    none = recalibrate_threshold(base, base, 0.01, labels)
    assert none.base_precision is None and none.base_recall == 0.0
    multi = recalibrate_thresholds(base, base * 3, {"dedup": 0.1, "max": 0.5})
    assert set(multi) == {"dedup", "max"} and multi["max"].candidate_threshold == pytest.approx(1.5)


def test_recalibration_refuses_bad_input() -> None:
    with pytest.raises(ShadowInputError, match="paired"):
        recalibrate_threshold([0.1, 0.2], [0.1], 0.1)
    with pytest.raises(ShadowInputError, match="no distance"):
        recalibrate_threshold([], [], 0.1)
    with pytest.raises(ShadowInputError, match="finite"):
        recalibrate_threshold([0.1, float("nan")], [0.1, 0.2], 0.1)
    with pytest.raises(ShadowInputError, match="labels"):
        recalibrate_threshold([0.1, 0.2], [0.1, 0.2], 0.1, [True])


# ----------------------------------------------------------------------------- speed


def test_thousand_queries_two_spaces_with_bootstrap_is_fast() -> None:
    rng = np.random.default_rng(11)
    n_q, k, pool = 1000, 10, 5000
    lists = {}
    for i in range(n_q):
        a = rng.choice(pool, 14, replace=False)
        lists[(f"q{i}", "base")] = [f"d{x}" for x in a[:k]]
        lists[(f"q{i}", "cand")] = [f"d{x}" for x in rng.permutation(a)[:k]]
    rankings = rankings_of(lists)
    qrels = pl.DataFrame(
        {
            "qid": [f"q{i}" for i in range(n_q)],
            "doc_id": [lists[(f"q{i}", "base")][0] for i in range(n_q)],
            "relevance": [1] * n_q,
        }
    )
    relevance_metrics(rankings.head(20), qrels.head(5), k)  # warm-up (imports, first-call paths)
    t0 = time.perf_counter()
    agree = pairwise_agreement(rankings, "base", "cand", k)
    rel = relevance_metrics(rankings, qrels, k)
    aggregate(agree.with_columns(space=pl.lit("cand")), ["overlap", "jaccard", "rbo", "kendall_tau"], n_boot=1000)
    aggregate(rel, ["ndcg", "recall", "mrr", "hit"], n_boot=1000)
    paired_deltas(rel, ["ndcg", "recall", "mrr", "hit"], "base", ["cand"], n_boot=1000)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"{elapsed:.2f}s"
