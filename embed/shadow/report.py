"""The shadow-validation result: its shape, its builder, and two renderers (HTML, terminal).

`build_result` runs every DB-free metric over id lists and returns one JSON-safe dict; the
DB-facing `embed shadow` command produces the inputs, persists the dict and renders it.
`render_html` makes a self-contained page (inline CSS + inline SVG, no scripts, no external
resources); `render_table` prints the same numbers for a terminal.

Privacy (invariant 6): the result carries ids, space names, fingerprints, counts and numbers —
never memory text — because no builder input holds text. The renderers add two guards: they
read only the keys documented below (anything else in the dict is never printed) and escape
every string they do print.

Result shape (schema ``embed.shadow.result/1``; lists of flat rows so each maps onto a table)::

    {
      "schema": "embed.shadow.result/1",
      "run": {
        "run_id": str | None, "source": str | None, "created_at": ISO-8601 UTC str,
        "baseline":   {"space": str, "fingerprint": str},
        "candidates": [{"space": str, "fingerprint": str}, ...],
        "k": int, "n_queries": int,            # queries ranked in the baseline or any candidate
        "labelled": bool, "n_labelled_queries": int,
        "slices": [str],                       # query attributes sliced on, e.g. ["lang_pair", "tenant"]
        "n_boot": int, "ci": float, "seed": int, "rbo_p": float, "rel_lvl": int,
      },
      # every "…rows" entry below: value = mean over queries, [ci_low, ci_high] = percentile
      # bootstrap CI, n = queries where the metric is defined; slice "all"/"all" is the total.
      "quality":   [{"space", "slice", "slice_value", "metric", "n", "value", "ci_low", "ci_high"}],
                   # metric in ndcg@k, recall@k, mrr@k, hit@k — per space incl. the baseline
      "deltas":    [{"candidate", "slice", "slice_value", "metric", "n", "value", "ci_low", "ci_high"}],
                   # candidate − baseline per query (paired), same metrics as quality
      "confidence": [{"candidate", "metric", "n", "value", "ci_low", "ci_high", "sd", "wilcoxon_p",
                      "detectable", "margin", "queries_needed", "verdict"}],
                   # how sure the nDCG delta is at the gate's margin (embed.shadow.power); with `margin`
      "agreement": [{"candidate", "slice", "slice_value", "metric", "n", "value", "ci_low", "ci_high"}],
                   # label-free vs the baseline: overlap@k, jaccard@k, rbo@k, kendall_tau@k
      "overlap_hist": [{"candidate", "k", "counts": [int] * (k + 1)}],   # counts[j]: overlap ≈ j/k
      "worst_queries": [{"candidate", "qid", "overlap", "rbo"}],         # lowest RBO first
      "neighbour_retention": [{"candidate", "k", "n", "value", "ci_low", "ci_high"}],
      "ann_recall": [{"space", "k", "n", "value", "ci_low", "ci_high"}],   # served (tenant-filtered) reads
      "ann_recall_global": [...],   # same shape; unfiltered probe, HNSW forced (added by embed.shadow.run)
      "latency_ms": [{"space", "n", "p50", "p95", "mean", "max"}],
      "filtered_recall": [FilteredSweep.as_dict()],   # per space: recall/latency per scan setting
                                                      # (added by embed.shadow.run; embed.shadow.filtered)
      "thresholds": [{"candidate", "name", **Recalibration.to_dict()}],
      "distance_hist": [{"candidate", "edges": [float], "baseline_counts": [int],
                         "candidate_counts": [int]}],
    }

`embed.shadow.run` adds "ann_recall_global", "labels" (provenance | known-item | seeded | file |
None), "labelled_queries", "queries_needed" (the most any candidate needs) and "label_details"
({"source", "excluded": {reason: count}, "query_vectors": {space: how it was formed}}).

Missing inputs leave their list empty (e.g. no qrels → quality/deltas empty, labelled false).
Floats that are undefined (NaN) are stored as None, so ``json.dumps(result, allow_nan=False)`` works.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl

from embed.shadow import filtered as F
from embed.shadow import metrics as M
from embed.shadow import power as P
from embed.shadow.recalibrate import recalibrate_thresholds

SCHEMA = "embed.shadow.result/1"
N_WORST = 10
N_DIST_BINS = 40


class SpaceLike(Protocol):
    name: str

    @property
    def fingerprint(self) -> str: ...


SpaceRef = SpaceLike | Mapping[str, str] | tuple[str, str]


def _space_ref(s: SpaceRef) -> dict[str, str]:
    """Accept an embed Space, a {'space','fingerprint'} mapping or a (name, fingerprint) pair."""
    if isinstance(s, tuple):
        name, fp = s
    elif isinstance(s, Mapping):
        name, fp = s["space"], s["fingerprint"]
    else:
        name, fp = s.name, s.fingerprint
    return {"space": str(name), "fingerprint": str(fp)}


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dicts()]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _label(df: pl.DataFrame, k: int) -> pl.DataFrame:
    return df.with_columns(metric=pl.col("metric") + f"@{k}")


def build_result(
    rankings: pl.DataFrame,
    baseline: SpaceRef,
    candidates: Sequence[SpaceRef],
    k: int,
    *,
    queries: pl.DataFrame | None = None,
    slices: Sequence[str] = (),
    qrels: pl.DataFrame | None = None,
    neighbours: pl.DataFrame | None = None,
    ann: pl.DataFrame | None = None,
    exact: pl.DataFrame | None = None,
    latency_ms: Mapping[str, Sequence[float]] | None = None,
    distances: Mapping[str, pl.DataFrame] | None = None,
    thresholds: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    rbo_p: float = 0.9,
    rel_lvl: int = 1,
    margin: float | None = None,
    run_id: str | None = None,
    source: str | None = None,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Every shadow metric for one baseline vs one or more candidates, as the documented dict.

    rankings/qrels/queries/neighbours/ann/exact: see `embed.shadow.metrics`. `distances` maps a
    candidate space name to paired samples (base_distance, cand_distance[, relevant]);
    `thresholds` names baseline thresholds to map (e.g. {'semantic_dedup': 0.05}). `margin` (the
    gate's max_ndcg_drop) adds how sure the nDCG delta is per candidate (embed.shadow.power).
    """
    M._check_k(k)
    base = _space_ref(baseline)
    cands = [_space_ref(c) for c in candidates]
    if not cands:
        raise M.ShadowInputError("shadow validation needs at least one candidate space")
    names = [base["space"]] + [c["space"] for c in cands]
    if len(set(names)) != len(names):
        raise M.ShadowInputError(f"baseline and candidates must be distinct spaces, got {names}")
    r = M.validate_rankings(rankings, k).filter(pl.col("space").is_in(names))
    agg = {"queries": queries, "slices": tuple(slices), "n_boot": n_boot, "ci": ci, "seed": seed}

    # label-free agreement, per candidate vs the baseline
    per_q = []
    for c in cands:
        a = M.pairwise_agreement(r, base["space"], c["space"], k, rbo_p)
        per_q.append(a.with_columns(candidate=pl.lit(c["space"])))
    agree_q = pl.concat(per_q)
    agreement = _label(M.aggregate(agree_q, M.PER_QUERY_AGREEMENT, by=("candidate",), **agg), k)
    overlap_hist = []
    for c in cands:
        ov = agree_q.filter(pl.col("candidate") == c["space"])["overlap"].to_numpy()
        counts = np.bincount(np.rint(ov * k).astype(np.int64), minlength=k + 1)[: k + 1]
        overlap_hist.append({"candidate": c["space"], "k": k, "counts": [int(x) for x in counts]})
    worst = (
        agree_q.sort(["candidate", "rbo", "overlap", "qid"])
        .group_by("candidate", maintain_order=True)
        .head(N_WORST)
        .select("candidate", "qid", "overlap", "rbo")
    )

    # labelled quality and paired deltas
    quality: list[dict[str, Any]] = []
    deltas: list[dict[str, Any]] = []
    confidence: list[dict[str, Any]] = []
    n_labelled = 0
    if qrels is not None:
        rel_q = M.relevance_metrics(r, qrels, k, rel_lvl)
        n_labelled = rel_q["qid"].n_unique()
        quality = _rows(_label(M.aggregate(rel_q, M.PER_QUERY_RELEVANCE, by=("space",), **agg), k))
        deltas = _rows(
            _label(M.paired_deltas(rel_q, M.PER_QUERY_RELEVANCE, base["space"], [c["space"] for c in cands], **agg), k)
        )
        if margin is not None:
            confidence = _confidence(rel_q, base["space"], [c["space"] for c in cands], deltas, k, margin)

    retention = []
    if neighbours is not None:
        for c in cands:
            per = M.neighbour_retention_per_item(neighbours, base["space"], c["space"], k)
            row = M.aggregate(
                per.with_columns(candidate=pl.lit(c["space"])),
                ["retention"],
                by=("candidate",),
                n_boot=n_boot,
                ci=ci,
                seed=seed,
            ).row(0, named=True)
            retention.append(
                {"candidate": c["space"], "k": k, **{x: _clean(row[x]) for x in ("n", "value", "ci_low", "ci_high")}}
            )

    ann_rows = []
    if ann is not None and exact is not None:
        rec = M.aggregate(M.ann_recall(ann, exact, k), ["ann_recall"], by=("space",), n_boot=n_boot, ci=ci, seed=seed)
        ann_rows = [
            {"space": x["space"], "k": k, **{f: x[f] for f in ("n", "value", "ci_low", "ci_high")}} for x in _rows(rec)
        ]

    lat = [{"space": s, **M.latency_summary(v)} for s, v in (latency_ms or {}).items()]

    thr_rows: list[dict[str, Any]] = []
    hist_rows: list[dict[str, Any]] = []
    for cand_name, pairs in (distances or {}).items():
        if cand_name not in names[1:]:
            raise M.ShadowInputError(f"distance pairs for {cand_name!r}, which is not a candidate")
        M._require(pairs, f"distances[{cand_name!r}]", ("base_distance", "cand_distance"))
        b = pairs["base_distance"].cast(pl.Float64).to_numpy()
        cd = pairs["cand_distance"].cast(pl.Float64).to_numpy()
        labels = pairs["relevant"].to_numpy() if "relevant" in pairs.columns else None
        mapped = recalibrate_thresholds(b, cd, thresholds or {}, labels)
        for name, rc in mapped.items():
            thr_rows.append({"candidate": cand_name, "name": name, **rc.to_dict()})
        marks = [x for rc in mapped.values() for x in (rc.baseline_threshold, rc.candidate_threshold)]
        lo = min(0.0, float(b.min()), float(cd.min()), *marks)
        hi = max(float(b.max()), float(cd.max()), *marks)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, N_DIST_BINS + 1)
        hist_rows.append(
            {
                "candidate": cand_name,
                "edges": [float(x) for x in edges],
                "baseline_counts": [int(x) for x in np.histogram(b, edges)[0]],
                "candidate_counts": [int(x) for x in np.histogram(cd, edges)[0]],
            }
        )

    created = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return {
        "schema": SCHEMA,
        "run": {
            "run_id": run_id,
            "source": source,
            "created_at": created.isoformat(timespec="seconds"),
            "baseline": base,
            "candidates": cands,
            "k": k,
            "n_queries": int(r["qid"].n_unique()),
            "labelled": qrels is not None,
            "n_labelled_queries": int(n_labelled),
            "slices": list(slices),
            "n_boot": n_boot,
            "ci": ci,
            "seed": seed,
            "rbo_p": rbo_p,
            "rel_lvl": rel_lvl,
        },
        "quality": quality,
        "deltas": deltas,
        "confidence": confidence,
        "agreement": _rows(agreement),
        "overlap_hist": overlap_hist,
        "worst_queries": _rows(worst),
        "neighbour_retention": retention,
        "ann_recall": ann_rows,
        "latency_ms": lat,
        "thresholds": thr_rows,
        "distance_hist": hist_rows,
    }


def _confidence(
    rel_q: pl.DataFrame, base: str, cands: Sequence[str], deltas: Sequence[Mapping[str, Any]], k: int, margin: float
) -> list[dict[str, Any]]:
    """Per candidate, how sure its overall nDCG delta is (paired test, power, verdict at `margin`)."""
    b = rel_q.filter(pl.col("space") == base).select("qid", b="ndcg")
    out = []
    for c in cands:
        d = rel_q.filter(pl.col("space") == c).select("qid", c="ndcg").join(b, on="qid")
        ci = next(r for r in deltas if r["candidate"] == c and r["slice"] == "all" and r["metric"] == f"ndcg@{k}")
        row = P.confidence(c, f"ndcg@{k}", (d["c"] - d["b"]).to_numpy(), ci, margin)
        out.append({key: _clean(v) for key, v in row.to_dict().items()})
    return out


# ----------------------------------------------------------------------------- formatting

BASE_COLOUR = "#8c8c8c"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{float(x):.{digits}f}"


def _ci(row: Mapping[str, Any], digits: int = 3) -> str:
    if row.get("ci_low") is None:
        return _f(row.get("value"), digits)
    return f"{_f(row.get('value'), digits)} [{_f(row.get('ci_low'), digits)}, {_f(row.get('ci_high'), digits)}]"


def _colours(run: Mapping[str, Any]) -> dict[str, str]:
    out = {run["baseline"]["space"]: BASE_COLOUR}
    for i, c in enumerate(run["candidates"]):
        out[c["space"]] = PALETTE[i % len(PALETTE)]
    return out


def _short(s: str, n: int = 14) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------- SVG


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg class="plot" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>"
    )


def _nice_step(span: float, max_ticks: int = 6) -> float:
    """A 1-2-2.5-5 step giving at most `max_ticks` intervals: axis labels people can read."""
    raw = max(span, 1e-12) / max_ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _nice_ceil(v: float) -> float:
    step = _nice_step(v)
    return math.ceil(v / step - 1e-9) * step


def _ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    step = _nice_step(hi - lo, max_ticks)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 10) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def _tick_label(v: float) -> str:
    return f"{round(v, 6):g}"


def _axis_y(x0: float, x1: float, lo: float, hi: float, y: Callable[[float], float]) -> list[str]:
    out = []
    for v in _ticks(lo, hi, 5):
        yy = y(v)
        out.append(f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x1:.1f}" y2="{yy:.1f}" class="grid"></line>')
        out.append(f'<text x="{x0 - 4:.1f}" y="{yy + 3:.1f}" class="tick" text-anchor="end">{_tick_label(v)}</text>')
    return out


def _bar_chart(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, str]],
    cells: Mapping[tuple[str, str], Mapping[str, Any]],
    y_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """Grouped bars (group = slice value, bar = series) with CI whiskers and hover titles."""
    lo, hi = y_range
    bar_w, gap, left, top, bottom_pad = 16.0, 18.0, 44.0, 34.0, 38.0
    group_w = bar_w * len(series) + gap
    width = max(300.0, left + 12 + group_w * len(groups))
    height = 230.0
    bottom = height - bottom_pad

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    body = [f'<text x="8" y="16" class="title">{_e(title)}</text>']
    lx = left
    for name, colour in series:
        body.append(f'<rect x="{lx:.1f}" y="22" width="9" height="9" fill="{_e(colour)}"></rect>')
        body.append(f'<text x="{lx + 12:.1f}" y="30" class="legend">{_e(_short(name, 22))}</text>')
        lx += 18 + 6.5 * min(len(name), 22)
    body += _axis_y(left, width - 6, lo, hi, y)
    zero = y(0.0) if lo < 0 < hi else bottom
    for gi, g in enumerate(groups):
        gx = left + 8 + gi * group_w
        for si, (name, colour) in enumerate(series):
            row = cells.get((g, name))
            if not row or row.get("value") is None:
                continue
            v = float(row["value"])
            x = gx + si * bar_w
            y0, y1 = sorted((y(v), zero))
            tip = f"{name} · {g}: {_ci(row)} n={row.get('n')}"
            body.append(
                f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bar_w - 2:.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                f'fill="{_e(colour)}"><title>{_e(tip)}</title></rect>'
            )
            if row.get("ci_low") is not None and row.get("ci_high") is not None:
                cx = x + (bar_w - 2) / 2
                ya, yb = y(float(row["ci_low"])), y(float(row["ci_high"]))
                body.append(
                    f'<path d="M{cx - 3:.1f},{ya:.1f}H{cx + 3:.1f}M{cx:.1f},{ya:.1f}V{yb:.1f}'
                    f'M{cx - 3:.1f},{yb:.1f}H{cx + 3:.1f}" class="whisker"></path>'
                )
        label_x = gx + (group_w - gap) / 2
        body.append(
            f'<text x="{label_x:.1f}" y="{bottom + 14:.1f}" class="tick" text-anchor="middle">'
            f"<title>{_e(g)}</title>{_e(_short(g))}</text>"
        )
    return _svg(width, height, body, title)


def _overlap_hist(title: str, k: int, counts: Sequence[int], colour: str) -> str:
    left, top, width, height = 44.0, 30.0, 360.0, 200.0
    bottom = height - 30
    total = max(sum(counts), 1)
    hi = _nice_ceil(max(max(counts, default=0) / total, 0.05))
    bw = (width - left - 10) / (k + 1)
    body = [f'<text x="8" y="16" class="title">{_e(title)}</text>']
    body += _axis_y(left, width - 6, 0.0, hi, lambda v: bottom - v / hi * (bottom - top))
    for j, c in enumerate(counts):
        frac = c / total
        h = frac / hi * (bottom - top)
        x = left + 4 + j * bw
        tip = f"overlap {j}/{k}: {c} queries ({100 * frac:.1f}%)"
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bw - 2:.1f}" height="{max(h, 0.5):.1f}" '
            f'fill="{_e(colour)}"><title>{_e(tip)}</title></rect>'
        )
        if k <= 20 or j % max(1, k // 10) == 0:
            body.append(
                f'<text x="{x + (bw - 2) / 2:.1f}" y="{bottom + 13:.1f}" class="tick" '
                f'text-anchor="middle">{j / k:.1f}</text>'
            )
    body.append(
        f'<text x="{width / 2:.1f}" y="{height - 2:.1f}" class="tick" text-anchor="middle">'
        f"overlap@{k} (share of queries)</text>"
    )
    return _svg(width, height, body, title)


def _distance_chart(
    title: str,
    edges: Sequence[float],
    counts: Sequence[int],
    colour: str,
    marks: Sequence[Mapping[str, Any]],
) -> str:
    """One space's distance distribution (share of pairs per bin) with every threshold marked: the
    baseline's (dashed) and its quantile-mapped candidate equivalent (solid). On the candidate's panel
    the dashed line shows where reusing the old number unchanged would cut its distribution."""
    edges = [float(v) for v in edges]
    left, top, width, height = 44.0, 34.0, 560.0, 230.0
    bottom = height - 32
    lo, hi = edges[0], edges[-1]

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - 10)

    tot = max(sum(counts), 1)
    ymax = _nice_ceil(max(max((c / tot for c in counts), default=0.0), 0.01))
    body = [f'<text x="8" y="16" class="title">{_e(title)}</text>']
    body += _axis_y(left, width - 6, 0.0, ymax, lambda v: bottom - v / ymax * (bottom - top))
    pts = [f"{x(edges[0]):.1f},{bottom:.1f}"]
    for i, c in enumerate(counts):
        yy = bottom - (c / tot) / ymax * (bottom - top)
        pts += [f"{x(edges[i]):.1f},{yy:.1f}", f"{x(edges[i + 1]):.1f},{yy:.1f}"]
    pts.append(f"{x(edges[-1]):.1f},{bottom:.1f}")
    body.append(
        f'<polygon points="{" ".join(pts)}" fill="{_e(colour)}" fill-opacity="0.25" stroke="{_e(colour)}" '
        f'stroke-width="1.2"><title>{_e(title)}</title></polygon>'
    )
    for v in _ticks(lo, hi, 6):
        body.append(
            f'<text x="{x(v):.1f}" y="{bottom + 13:.1f}" class="tick" text-anchor="middle">{_tick_label(v)}</text>'
        )
    body.append(
        f'<text x="{width / 2:.1f}" y="{height - 2:.1f}" class="tick" text-anchor="middle">'
        "distance (y: share of sampled pairs per bin)</text>"
    )
    for i, m in enumerate(marks):
        for key, which, dash in (("baseline_threshold", "old", "4,3"), ("candidate_threshold", "new", "")):
            v = m.get(key)
            if v is None:
                continue
            xx = x(float(v))
            tip = f"{m.get('name')}: {which} threshold {_f(v, 4)}"
            body.append(
                f'<line x1="{xx:.1f}" y1="{top - 2:.1f}" x2="{xx:.1f}" y2="{bottom:.1f}" stroke="#333" '
                f'stroke-width="1.6" stroke-dasharray="{dash}"><title>{_e(tip)}</title></line>'
            )
        xx = x(float(m.get("candidate_threshold") or 0.0))
        body.append(
            f'<text x="{xx + 3:.1f}" y="{top + 10 + 11 * i:.1f}" class="tick">{_e(_short(str(m.get("name")), 20))}</text>'
        )
    return _svg(width, height, body, title)


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#777}.grid-plots{display:flex;flex-wrap:wrap;gap:12px}
.plot{background:#fff;border:1px solid #e3e3e3;border-radius:4px}
.plot .title{font-size:13px;font-weight:600}.plot .tick{font-size:10px;fill:#555}.plot .legend{font-size:11px}
.plot .grid{stroke:#eee}.plot .whisker{stroke:#222;stroke-width:1.2;fill:none}
table{border-collapse:collapse;background:#fff;margin:6px 0}td,th{border:1px solid #e3e3e3;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.good{background:#e6f4e6}.bad{background:#fbe3e3}.warn{background:#fff4d6}code{font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #e3e3e3;border-radius:4px;padding:8px 12px}
.card b{font-size:18px}.verdict{font-size:16px;font-weight:600;padding:6px 10px;border-radius:4px;margin:6px 0}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None) -> str:
    """rows hold already-escaped cell HTML strings; numbers are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(classes[i])}"' if classes and classes[i] else ""
        tds = "".join(f'<td class="num">{c}</td>' if _looks_num(c) else f"<td>{c}</td>" for c in row)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _looks_num(c: str) -> bool:
    return bool(c) and (c[0].isdigit() or c[0] in "-−—" or c.startswith("+"))


def _delta_class(row: Mapping[str, Any]) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None:
        return ""
    return "good" if lo > 0 else "bad" if hi < 0 else ""


def _floor_lo(rows: Sequence[Mapping[str, Any]]) -> float:
    """Axis floor: 0 unless a value/CI (Kendall tau) dips below, then the next nice step down."""
    low = min((float(r[f]) for r in rows for f in ("value", "ci_low") if r.get(f) is not None), default=0.0)
    return 0.0 if low >= 0 else max(-1.0, -_nice_ceil(-low))


def _slice_groups(rows: Sequence[Mapping[str, Any]], slice_name: str) -> list[str]:
    """'all' first, then this slice's values in first-seen order."""
    vals = ["all"]
    for r in rows:
        if r["slice"] == slice_name and r["slice_value"] not in vals:
            vals.append(r["slice_value"])
    return vals


def _slice_cells(rows: Sequence[Mapping[str, Any]], slice_name: str, key: str) -> dict[tuple[str, str], Mapping]:
    return {(r["slice_value"], r[key]): r for r in rows if r["slice"] in ("all", slice_name)}


VERDICT_CLASS = {P.PASS: "good", P.FAIL: "bad", P.INCONCLUSIVE: "warn"}


def verdict_lines(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One line per candidate with the numbers that decided it, and its CSS class."""
    run = result["run"]
    labels = result.get("labels")
    if not result.get("confidence"):
        why = "no labelled queries" if not labels else "no gate margin"
        return [(f"NO VERDICT: {why}; label-free agreement only (overlap detects change, not quality)", "warn")]
    out = []
    for c in result["confidence"]:
        v = c.get("verdict") or "NO VERDICT"
        sample = (
            f"needs ~{c['queries_needed']} queries, has {c['n']}"
            if v == P.INCONCLUSIVE
            else f"{c['n']} queries (80 % power at this floor: ~{c['queries_needed']})"
        )
        line = (
            f"{v}: {c['candidate']} vs {run['baseline']['space']}, Δ {c['metric']} {_f(c['value'])} "
            f"[{_f(c['ci_low'])}, {_f(c['ci_high'])}], floor −{_f(c['margin'])}; {labels} labels, {sample}; "
            f"Wilcoxon p {_p(c.get('wilcoxon_p'))}; detects a true Δ of ±{_f(c.get('detectable'))}"
        )
        out.append((line, VERDICT_CLASS.get(v, "warn")))
    return out


def labels_line(result: Mapping[str, Any]) -> str | None:
    """What judged quality, how each space's query vectors were formed, and what the guards left
    out and why (None for a label-free run with nothing left out)."""
    details = result.get("label_details") or {}
    if not (result.get("labels") or details.get("excluded")):
        return None
    how = "; ".join(f"{sp}: {w}" for sp, w in (details.get("query_vectors") or {}).items())
    left = ", ".join(f"{why} {n}" for why, n in (details.get("excluded") or {}).items()) or "none"
    return f"labels: {result.get('labels') or 'none'} · query vectors: {how or '—'} · left out: {left}"


def _p(x: Any) -> str:
    return "—" if x is None else f"{float(x):.2g}"


def _lang_pair_rows(result: Mapping[str, Any], base: str, cands: Sequence[str], k: int) -> list[tuple[list[str], str]]:
    """Rows of the per-language-pair table: queries, each space's nDCG, each candidate's Δ."""
    metric = f"ndcg@{k}"
    q = {
        (r["space"], r["slice_value"]): r
        for r in result.get("quality", [])
        if r["slice"] == "lang_pair" and r["metric"] == metric
    }
    d = {
        (r["candidate"], r["slice_value"]): r
        for r in result.get("deltas", [])
        if r["slice"] == "lang_pair" and r["metric"] == metric
    }
    out = []
    for pair in dict.fromkeys(v for _, v in q):
        b = q.get((base, pair))
        if b is None:
            continue
        deltas = [d.get((c, pair)) for c in cands]
        row = [
            _e(pair),
            _e(b["n"]),
            _e(_f(b["value"])),
            *(_e(_f((q.get((c, pair)) or {}).get("value"))) for c in cands),
            *(_e(_ci(x)) if x else "—" for x in deltas),
        ]
        worst = min((_delta_class(x) for x in deltas if x), default="", key=lambda c: {"bad": 0, "good": 2}.get(c, 1))
        out.append((row, worst))
    return out


def render_html(result: Mapping[str, Any]) -> str:
    """A self-contained HTML page for an operator: charts first, every number in tables below."""
    if not isinstance(result, Mapping) or "run" not in result:
        raise M.ShadowInputError("render_html needs a shadow result dict (see embed.shadow.report)")
    run = result["run"]
    k = run["k"]
    base = run["baseline"]["space"]
    cand_names = [c["space"] for c in run["candidates"]]
    colours = _colours(run)
    slice_dims = list(run.get("slices") or [])
    dims = ["all", *slice_dims]
    parts: list[str] = []
    add = parts.append

    title = f"Shadow validation: {base} → {', '.join(cand_names)}"
    add(f"<h1>{_e(title)}</h1>")
    for line, cls in verdict_lines(result):
        add(f'<p class="verdict {cls}">{_e(line)}</p>')
    meta = [
        ("run", run.get("run_id") or "—"),
        ("source", run.get("source") or "—"),
        ("created", run.get("created_at")),
        ("k", k),
        ("queries", run.get("n_queries")),
        (
            "labelled queries",
            f"{run.get('n_labelled_queries')} ({result.get('labels') or 'given'})"
            if run.get("labelled")
            else "none (label-free only)",
        ),
        (
            "bootstrap",
            f"{run.get('n_boot')} resamples, {100 * float(run.get('ci', 0.95)):.0f}% CI, seed {run.get('seed')}",
        ),
        ("RBO p", run.get("rbo_p")),
    ]
    add('<p class="muted">' + " · ".join(f"{_e(a)}: <b>{_e(b)}</b>" for a, b in meta) + "</p>")
    add(
        _table(
            ["role", "space", "fingerprint"],
            [["baseline", _e(base), f"<code>{_e(run['baseline']['fingerprint'])}</code>"]]
            + [["candidate", _e(c["space"]), f"<code>{_e(c['fingerprint'])}</code>"] for c in run["candidates"]],
        )
    )

    pairs = _lang_pair_rows(result, base, cand_names, k)
    if pairs:
        add(f"<h2>nDCG@{_e(k)} per language pair (query → relevant rows)</h2>")
        add(
            _table(
                [
                    "language pair",
                    "queries",
                    f"{base} nDCG",
                    *(f"{c} nDCG" for c in cand_names),
                    *(f"Δ {c} [CI]" for c in cand_names),
                ],
                [row for row, _ in pairs],
                [cls for _, cls in pairs],
            )
        )

    line = labels_line(result)
    if line:
        add(f'<p class="muted">{_e(line)}</p>')

    # headline cards: one per candidate
    cards = []
    for c in cand_names:
        items = []
        for r in result.get("deltas", []):
            if r["candidate"] == c and r["slice"] == "all" and r["metric"] == f"ndcg@{k}":
                items.append(
                    f"Δ nDCG@{k} <b>{_e(_f(r['value']))}</b> <span class='muted'>[{_e(_f(r['ci_low']))}, "
                    f"{_e(_f(r['ci_high']))}]</span>"
                )
        for r in result.get("agreement", []):
            if r["candidate"] == c and r["slice"] == "all" and r["metric"] in (f"overlap@{k}", f"rbo@{k}"):
                items.append(f"{_e(r['metric'])} <b>{_e(_f(r['value']))}</b>")
        for r in result.get("neighbour_retention", []):
            if r["candidate"] == c:
                items.append(f"neighbour retention <b>{_e(_f(r['value']))}</b>")
        for r in result.get("thresholds", []):
            if r["candidate"] == c:
                items.append(
                    f"{_e(r['name'])} {_e(_f(r['baseline_threshold'], 4))} → <b>{_e(_f(r['candidate_threshold'], 4))}</b>"
                    + (
                        f" <span class='muted'>(extrapolated {_e(r['extrapolated'])})</span>"
                        if r.get("extrapolated")
                        else ""
                    )
                )
        cards.append(
            f'<div class="card"><div class="muted">{_e(c)} vs {_e(base)}</div>' + "<br>".join(items) + "</div>"
        )
    add('<div class="cards">' + "".join(cards) + "</div>")

    quality = result.get("quality", [])
    if quality:
        add(f"<h2>Retrieval quality (labelled, {_e(run.get('n_labelled_queries'))} queries)</h2>")
        series = [(s, colours.get(s, BASE_COLOUR)) for s in [base, *cand_names]]
        for dim in dims:
            plots = []
            for metric in dict.fromkeys(r["metric"] for r in quality):
                rows = [r for r in quality if r["metric"] == metric]
                groups = _slice_groups(rows, dim)
                cells = _slice_cells(rows, dim, "space")
                label = metric if dim == "all" else f"{metric} by {dim}"
                plots.append(_bar_chart(label, groups, series, cells))
            add('<div class="grid-plots">' + "".join(plots) + "</div>")
        deltas = result.get("deltas", [])
        if deltas:
            add("<h3>Candidate − baseline (paired over queries; green: CI above 0, red: CI below 0)</h3>")
            add(
                _table(
                    ["candidate", "slice", "slice value", "metric", "Δ [CI]", "n"],
                    [
                        [
                            _e(r["candidate"]),
                            _e(r["slice"]),
                            _e(r["slice_value"]),
                            _e(r["metric"]),
                            _e(_ci(r)),
                            _e(r["n"]),
                        ]
                        for r in deltas
                    ],
                    [_delta_class(r) for r in deltas],
                )
            )

    agreement = result.get("agreement", [])
    if agreement:
        add(f"<h2>Agreement with the baseline (label-free, top {_e(k)})</h2>")
        add('<p class="muted">Overlap detects change, not quality: read it next to the labelled metrics.</p>')
        for c in cand_names:
            rows = [r for r in agreement if r["candidate"] == c]
            metrics = list(dict.fromkeys(r["metric"] for r in rows))
            palette = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(metrics)}
            plots = []
            for dim in dims:
                cells = _slice_cells(rows, dim, "metric")
                label = f"{c} vs {base}" + ("" if dim == "all" else f" by {dim}")
                plots.append(
                    _bar_chart(
                        label,
                        _slice_groups(rows, dim),
                        [(m, palette[m]) for m in metrics],
                        cells,
                        (_floor_lo(rows), 1.0),
                    )
                )
            for h in result.get("overlap_hist", []):
                if h["candidate"] == c:
                    plots.append(
                        _overlap_hist(
                            f"overlap@{h['k']} distribution, {c}", int(h["k"]), h["counts"], colours.get(c, PALETTE[0])
                        )
                    )
            add('<div class="grid-plots">' + "".join(plots) + "</div>")

    thresholds = result.get("thresholds", [])
    hists = result.get("distance_hist", [])
    if thresholds or hists:
        add("<h2>Distance thresholds, recalibrated by quantile</h2>")
        add(
            '<p class="muted">One histogram per space. Dashed line: the baseline (old) threshold; solid: its '
            "candidate-space equivalent (new, same share of sampled pairs). Extrapolated values lie outside "
            "the sample: verify them.</p>"
        )
        if thresholds:
            add(
                _table(
                    [
                        "candidate",
                        "threshold",
                        "baseline t",
                        "candidate t'",
                        "quantile",
                        "pairs",
                        "within t / t'",
                        "precision base → cand",
                        "recall base → cand",
                        "note",
                    ],
                    [
                        [
                            _e(r["candidate"]),
                            _e(r["name"]),
                            _e(_f(r["baseline_threshold"], 4)),
                            _e(_f(r["candidate_threshold"], 4)),
                            _e(_f(r["quantile"], 4)),
                            _e(r["n_pairs"]),
                            _e(f"{_f(r['base_fraction_within'])} / {_f(r['cand_fraction_within'])}"),
                            _e(f"{_f(r.get('base_precision'))} → {_f(r.get('cand_precision'))}"),
                            _e(f"{_f(r.get('base_recall'))} → {_f(r.get('cand_recall'))}"),
                            _e(f"extrapolated {r['extrapolated']}" if r.get("extrapolated") else ""),
                        ]
                        for r in thresholds
                    ],
                    ["warn" if r.get("extrapolated") else "" for r in thresholds],
                )
            )
        plots = []
        for h in hists:
            c = h["candidate"]
            marks = [r for r in thresholds if r["candidate"] == c]
            for space, counts in ((base, h["baseline_counts"]), (c, h["candidate_counts"])):
                plots.append(_distance_chart(f"{space} distances (vs {c})" if space == base else f"{space} distances",
                                             h["edges"], counts, colours[space], marks))
        add('<div class="grid-plots">' + "".join(plots) + "</div>")

    health = []
    for r in result.get("neighbour_retention", []):
        health.append([_e(f"neighbour retention@{r['k']}"), _e(f"{base} → {r['candidate']}"), _e(_ci(r)), _e(r["n"])])
    for r in result.get("ann_recall", []):
        health.append([_e(f"ANN recall@{r['k']} (vs exact)"), _e(r["space"]), _e(_ci(r)), _e(r["n"])])
    for r in result.get("ann_recall_global", []):
        health.append([_e(f"HNSW recall@{r['k']}, unfiltered, index forced"), _e(r["space"]), _e(_ci(r)), _e(r["n"])])
    lat = result.get("latency_ms", [])
    if health or lat:
        add("<h2>Index health and latency</h2>")
        if health:
            add(_table(["metric", "space", "value [CI]", "n"], health))
        if lat:
            add(
                _table(
                    ["space", "queries", "p50 ms", "p95 ms", "mean ms", "max ms"],
                    [
                        [
                            _e(r["space"]),
                            _e(r["n"]),
                            _e(_f(r["p50"], 2)),
                            _e(_f(r["p95"], 2)),
                            _e(_f(r["mean"], 2)),
                            _e(_f(r["max"], 2)),
                        ]
                        for r in lat
                    ],
                )
            )

    if result.get("filtered_recall"):
        add("<h2>Filtered recall as Honcho sees it</h2>")
        add("<p>Stored rows on the tenants the planner serves through the HNSW index, read at each pgvector "
            "scan setting (EXPLAIN per tenant and setting: <em>via HNSW</em>); recall@k against the exact "
            "per-tenant ranking; <em>short</em>: fewer rows than the tenant holds; <em>unordered</em>: rows out "
            "of distance order. * this session's setting (what the gate reads), &gt; recommended.</p>")
        add(_table(list(FILTERED_HEADERS), [[_e(c) for c in row] for row in _filtered_cells(result)]))
        add("<pre>" + _e("\n".join(line for sw in result["filtered_recall"] for line in F.advice(F.from_dict(sw))))
            + "</pre>")

    worst = result.get("worst_queries", [])
    if worst:
        add(f"<h2>Queries that changed most (lowest RBO, up to {N_WORST} per candidate)</h2>")
        add(
            _table(
                ["candidate", "qid", f"overlap@{k}", f"rbo@{k}"],
                [
                    [_e(r["candidate"]), f"<code>{_e(r['qid'])}</code>", _e(_f(r["overlap"])), _e(_f(r["rbo"]))]
                    for r in worst
                ],
            )
        )

    add("<h2>All numbers</h2>")
    for key, who in (("quality", "space"), ("agreement", "candidate"), ("deltas", "candidate")):
        rows = result.get(key, [])
        if rows:
            add(f"<details><summary>{_e(key)} ({len(rows)} rows)</summary>")
            add(
                _table(
                    [who, "slice", "slice value", "metric", "n", "mean", "ci_low", "ci_high"],
                    [
                        [
                            _e(r[who]),
                            _e(r["slice"]),
                            _e(r["slice_value"]),
                            _e(r["metric"]),
                            _e(r["n"]),
                            _e(_f(r["value"], 4)),
                            _e(_f(r["ci_low"], 4)),
                            _e(_f(r["ci_high"], 4)),
                        ]
                        for r in rows
                    ],
                )
            )
            add("</details>")

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    )


def _filtered_cells(result: Mapping[str, Any]) -> list[list[str]]:
    """One row per (space, scan setting) of the filtered-recall sweep, marked * (session) / > (recommended)."""
    out = []
    for sw in result.get("filtered_recall", []):
        rec = sw.get("recommended")
        for r in sw["rows"]:
            mark = ("*" if r["session"] else "") + (
                ">" if rec and (rec["ef_search"], rec["iterative_scan"]) == (r["ef_search"], r["iterative_scan"]) else ""
            )
            out.append([
                str(r["space"]), f"{r['ef_search']} {r['iterative_scan']}{' ' + mark if mark else ''}",
                str(r["queries"]), str(r["index_queries"]), _f(r["recall"]), str(r["short"]), str(r["unordered"]),
                _f(r["p50_ms"], 2), _f(r["p95_ms"], 2),
            ])
    return out


FILTERED_HEADERS = ("space", "ef_search iterative_scan", "queries", "via HNSW", "recall", "short", "unordered",
                    "p50 ms", "p95 ms")


# ----------------------------------------------------------------------------- terminal


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.rjust(w) if _looks_num(c) else c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(out)


def render_table(result: Mapping[str, Any]) -> str:
    """The result's numbers as plain-text tables (only documented keys are printed)."""
    run = result["run"]
    base = run["baseline"]["space"]
    cands = ", ".join(f"{c['space']} ({c['fingerprint'][:8]})" for c in run["candidates"])
    out = [
        *(line for line, _ in verdict_lines(result)),
        *filter(None, [labels_line(result)]),
        f"shadow: {base} ({run['baseline']['fingerprint'][:8]}) -> {cands}",
        f"k={run['k']} queries={run['n_queries']} labelled={run.get('n_labelled_queries', 0)} "
        f"bootstrap={run['n_boot']}x {100 * float(run['ci']):.0f}% CI seed={run['seed']}",
    ]
    for key, who, title in (
        ("quality", "space", "quality (labelled)"),
        ("deltas", "candidate", "candidate - baseline (paired)"),
        ("agreement", "candidate", "agreement with baseline (label-free)"),
    ):
        rows = result.get(key, [])
        if rows:
            out += ["", title]
            out.append(
                _text_table(
                    [who, "slice", "metric", "n", "value [CI]"],
                    [
                        [
                            str(r[who]),
                            f"{r['slice']}={r['slice_value']}" if r["slice"] != "all" else "all",
                            str(r["metric"]),
                            str(r["n"]),
                            _ci(r),
                        ]
                        for r in rows
                    ],
                )
            )
    health = [
        [f"retention@{r['k']}", f"{base}->{r['candidate']}", str(r["n"]), _ci(r)]
        for r in result.get("neighbour_retention", [])
    ]
    health += [[f"ann_recall@{r['k']}", str(r["space"]), str(r["n"]), _ci(r)] for r in result.get("ann_recall", [])]
    health += [
        [f"ann_recall_global@{r['k']}", str(r["space"]), str(r["n"]), _ci(r)]
        for r in result.get("ann_recall_global", [])
    ]
    if health:
        out += ["", "index health", _text_table(["metric", "space", "n", "value [CI]"], health)]
    if result.get("latency_ms"):
        out += [
            "",
            "latency (ms)",
            _text_table(
                ["space", "n", "p50", "p95", "max"],
                [
                    [str(r["space"]), str(r["n"]), _f(r["p50"], 2), _f(r["p95"], 2), _f(r["max"], 2)]
                    for r in result["latency_ms"]
                ],
            ),
        ]
    if result.get("filtered_recall"):
        out += ["", "filtered recall on tenants served through HNSW (* this session's setting, the gate's; "
                "> recommended)", _text_table(FILTERED_HEADERS, _filtered_cells(result))]
        out += [line for sw in result["filtered_recall"] for line in F.advice(F.from_dict(sw))]
    if result.get("thresholds"):
        out += [
            "",
            "thresholds (quantile-mapped)",
            _text_table(
                ["candidate", "name", "baseline", "candidate", "quantile", "pairs", "note"],
                [
                    [
                        str(r["candidate"]),
                        str(r["name"]),
                        _f(r["baseline_threshold"], 4),
                        _f(r["candidate_threshold"], 4),
                        _f(r["quantile"], 4),
                        str(r["n_pairs"]),
                        f"extrapolated {r['extrapolated']}" if r.get("extrapolated") else "",
                    ]
                    for r in result["thresholds"]
                ],
            ),
        ]
    return "\n".join(out) + "\n"
