"""The shadow result dict and its renderers: JSON-safe, well-formed, self-contained, ids only."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from embed.shadow import SCHEMA, ShadowInputError, build_result, render_html, render_table

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
# "memory text" that exists beside the ids in the fixture, and must never reach a report
SECRETS = ["Kasia likes pierogi", "password hunter2", "Ala ma kota"]
HOSTILE_QID = '<script>alert("q")</script>'


class StrictParser(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> StrictParser:
    p = StrictParser()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed: {p.stack}"
    return p


@pytest.fixture(scope="module")
def inputs() -> dict:
    rng = np.random.default_rng(42)
    n_q, k, pool = 120, 10, 400
    texts = {f"doc{i}": SECRETS[i % len(SECRETS)] + f" #{i}" for i in range(pool)}  # never passed to the builder
    rows, qrels, nb = [], [], []
    qids = [f"q{i}" for i in range(n_q - 1)] + [HOSTILE_QID]
    for q in qids:
        base = rng.choice(pool, 15, replace=False)
        cand = np.concatenate([rng.permutation(base[:8]), rng.choice(pool, 7, replace=False)])
        cand = list(dict.fromkeys(cand.tolist()))[:k]
        rows += [(q, "oai_small", r, f"doc{d}") for r, d in enumerate(base[:k], 1)]
        rows += [(q, "bge_m3", r, f"doc{d}") for r, d in enumerate(cand, 1)]
        rows += [(q, "qwen3_06b", r, f"doc{d}") for r, d in enumerate(rng.permutation(base)[:k], 1)]
        qrels += [(q, f"doc{base[0]}", 2), (q, f"doc{base[3]}", 1)]
    for i in range(50):
        item = f"doc{i}"
        for space in ("oai_small", "bge_m3", "qwen3_06b"):
            neigh = [item] + [f"doc{x}" for x in rng.choice(range(50, pool), k, replace=False)]
            nb += [(item, space, r, d) for r, d in enumerate(neigh, 1)]
    schema = {"qid": pl.String, "space": pl.String, "rank": pl.Int64, "doc_id": pl.String}
    rankings = pl.DataFrame(rows, schema=schema, orient="row")
    exact = rankings.filter(pl.col("space") == "bge_m3")
    ann = exact.filter(pl.col("rank") != 3).with_columns(pl.col("rank").rank("ordinal").over("qid").cast(pl.Int64))
    d = rng.beta(2, 5, 3000) * 0.9 + 0.01
    return {
        "texts": texts,
        "kwargs": {
            "rankings": rankings,
            "baseline": ("oai_small", "f" * 64),
            "candidates": [("bge_m3", "a" * 64), {"space": "qwen3_06b", "fingerprint": "b" * 64}],
            "k": k,
            "queries": pl.DataFrame(
                {
                    "qid": qids,
                    "lang_pair": rng.choice(["pl->en", "en->pl", "pl->pl"], n_q),
                    "tenant": rng.choice(["ws_a", "ws_b"], n_q),
                }
            ),
            "slices": ["lang_pair", "tenant"],
            "qrels": pl.DataFrame(
                qrels, schema={"qid": pl.String, "doc_id": pl.String, "relevance": pl.Int64}, orient="row"
            ),
            "neighbours": pl.DataFrame(nb, schema=schema, orient="row"),
            "ann": ann,
            "exact": exact,
            "latency_ms": {"oai_small": rng.gamma(2, 4, 500), "bge_m3": rng.gamma(2, 3, 500)},
            "distances": {
                "bge_m3": pl.DataFrame({"base_distance": d, "cand_distance": 1.6 * d, "relevant": d < 0.15}),
                "qwen3_06b": pl.DataFrame({"base_distance": d, "cand_distance": np.sqrt(d)}),
            },
            "thresholds": {"semantic_dedup": 0.05, "search_max_distance": 0.4},
            "n_boot": 300,
            "run_id": "run-1",
            "source": "documents",
        },
    }


@pytest.fixture(scope="module")
def result(inputs: dict) -> dict:
    return build_result(**inputs["kwargs"])


def test_result_shape_and_metadata(result: dict) -> None:
    assert result["schema"] == SCHEMA
    run = result["run"]
    assert run["baseline"] == {"space": "oai_small", "fingerprint": "f" * 64}
    assert [c["space"] for c in run["candidates"]] == ["bge_m3", "qwen3_06b"]
    assert (run["k"], run["n_queries"], run["n_labelled_queries"], run["labelled"]) == (10, 120, 120, True)
    assert run["slices"] == ["lang_pair", "tenant"] and run["n_boot"] == 300
    for key in ("quality", "deltas", "agreement"):
        for row in result[key]:
            assert {"slice", "slice_value", "metric", "n", "value", "ci_low", "ci_high"} <= row.keys()
            if row["value"] is not None and row["n"] > 1:
                assert row["ci_low"] <= row["value"] <= row["ci_high"]
    metrics = {r["metric"] for r in result["quality"]}
    assert metrics == {"ndcg@10", "recall@10", "mrr@10", "hit@10"}
    assert {r["metric"] for r in result["agreement"]} == {"overlap@10", "jaccard@10", "rbo@10", "kendall_tau@10"}
    spaces = {r["space"] for r in result["quality"]}
    assert spaces == {"oai_small", "bge_m3", "qwen3_06b"}
    assert {r["slice_value"] for r in result["quality"] if r["slice"] == "lang_pair"} == {"pl->en", "en->pl", "pl->pl"}
    bge_hist = next(h for h in result["overlap_hist"] if h["candidate"] == "bge_m3")
    assert sum(bge_hist["counts"][:8]) == 0  # bge_m3 keeps >= 8 of the baseline's top 10 by construction
    # qwen3 shuffles the baseline's top 15: most ids stay, yet nDCG drops (CI below 0)
    d = next(
        r for r in result["deltas"] if (r["candidate"], r["slice"], r["metric"]) == ("qwen3_06b", "all", "ndcg@10")
    )
    assert d["ci_high"] < 0
    assert [sum(h["counts"]) for h in result["overlap_hist"]] == [120, 120]
    assert len(result["worst_queries"]) == 20
    ann = result["ann_recall"][0]
    assert ann["space"] == "bge_m3" and ann["value"] == pytest.approx(0.9)
    assert [r["candidate"] for r in result["neighbour_retention"]] == ["bge_m3", "qwen3_06b"]
    thr = {(r["candidate"], r["name"]): r for r in result["thresholds"]}
    assert thr[("bge_m3", "search_max_distance")]["candidate_threshold"] == pytest.approx(0.64)
    assert thr[("qwen3_06b", "search_max_distance")]["candidate_threshold"] == pytest.approx(np.sqrt(0.4), abs=0.01)
    assert thr[("bge_m3", "search_max_distance")]["base_precision"] is not None
    assert thr[("qwen3_06b", "semantic_dedup")]["base_precision"] is None  # no labels given for qwen3
    assert [len(h["edges"]) - 1 for h in result["distance_hist"]] == [40, 40]
    assert result["latency_ms"][0]["p95"] > result["latency_ms"][0]["p50"]


def test_result_is_plain_json_and_carries_no_text(inputs: dict, result: dict) -> None:
    blob = json.dumps(result, allow_nan=False)
    assert json.loads(blob) == result
    for secret in SECRETS:
        assert secret not in blob


def test_result_is_reproducible(inputs: dict, result: dict) -> None:
    again = build_result(**inputs["kwargs"])
    assert {k: v for k, v in again.items() if k != "run"} == {k: v for k, v in result.items() if k != "run"}


def test_html_is_well_formed_self_contained_and_plots_everything(result: dict) -> None:
    page = render_html(result)
    p = parse(page)
    n_dims = 1 + len(result["run"]["slices"])
    n_quality = 4 * n_dims  # one chart per labelled metric per slice dimension
    n_agreement = 2 * (n_dims + 1)  # per candidate: one per dimension + the overlap histogram
    n_distance = 2 * 2  # per candidate: a distance histogram per space (baseline, candidate)
    assert p.tags.count("svg") == n_quality + n_agreement + n_distance
    assert page.count("<svg") == p.tags.count("svg")
    # no external resources, no scripts at all
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags
    assert not [v for k, v in p.attrs if k in ("src", "href")]
    assert "url(" not in page and "@import" not in page and "http" not in page
    # every candidate and both thresholds show up
    for name in ("oai_small", "bge_m3", "qwen3_06b", "semantic_dedup", "search_max_distance"):
        assert name in page
    assert "f" * 64 in page  # full fingerprints in the header table


def test_html_escapes_ids_and_prints_only_documented_keys(result: dict) -> None:
    hostile = dict(result)
    hostile["worst_queries"] = [
        *result["worst_queries"],
        {"candidate": "bge_m3", "qid": HOSTILE_QID, "overlap": 0.0, "rbo": 0.0},
    ]
    hostile["memory_text"] = SECRETS  # a key no renderer knows: must never be printed
    hostile["run"] = {**result["run"], "source": "<b>documents</b>", "notes": SECRETS[0]}
    page = render_html(hostile)
    p = parse(page)
    assert "script" not in p.tags
    assert HOSTILE_QID not in page and html_escaped(HOSTILE_QID) in page
    assert HOSTILE_QID in "".join(p.text)  # shown, as text
    assert "<b>documents</b>" not in page
    table = render_table(hostile)
    for secret in SECRETS:
        assert secret not in page and secret not in table


def html_escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def test_label_free_only_report(inputs: dict) -> None:
    kw = {k: v for k, v in inputs["kwargs"].items() if k not in ("qrels", "distances", "neighbours", "ann", "exact")}
    res = build_result(**kw)
    assert res["quality"] == [] and res["deltas"] == [] and not res["run"]["labelled"]
    page = render_html(res)
    parse(page)
    assert page.count("<svg") == 2 * (3 + 1)
    assert "label-free only" in page


def test_terminal_table(result: dict) -> None:
    out = render_table(result)
    assert "oai_small (ffffffff) -> bge_m3 (aaaaaaaa), qwen3_06b (bbbbbbbb)" in out
    assert "ndcg@10" in out and "rbo@10" in out and "semantic_dedup" in out and "ann_recall@10" in out
    row = next(
        r for r in result["quality"] if r["slice"] == "all" and r["space"] == "bge_m3" and r["metric"] == "ndcg@10"
    )
    assert f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in out


def test_builder_refuses_bad_setups(inputs: dict) -> None:
    kw = inputs["kwargs"]
    with pytest.raises(ShadowInputError, match="distinct"):
        build_result(kw["rankings"], kw["baseline"], [kw["baseline"]], 10)
    with pytest.raises(ShadowInputError, match="at least one candidate"):
        build_result(kw["rankings"], kw["baseline"], [], 10)
    with pytest.raises(ShadowInputError, match="not a candidate"):
        build_result(
            kw["rankings"], kw["baseline"], kw["candidates"], 10, distances={"nope": kw["distances"]["bge_m3"]}
        )
    with pytest.raises(ShadowInputError, match="shadow result"):
        render_html({"no": "run"})
