"""Map a distance threshold from the baseline space to a candidate space by quantile.

Thresholds such as Honcho's semantic-dedup distance (0.05) or a `search_max_distance` are
properties of one embedding model: 0.05 in text-embedding-3-small is not 0.05 in BGE-M3. Given
paired samples — the distance of the same (query, doc) pair in each space — keep the *fraction*
of pairs a threshold admits: q = F_base(t), t' = F_cand^{-1}(q).

Both CDFs are the piecewise-linear interpolation of the sorted samples at Hazen plotting positions
(i - 0.5)/n, so for equal sample sizes the map is the straight line through consecutive order
statistics (base_(i), cand_(i)): a candidate that is exactly 2 × base maps t to exactly 2t.

Outside the sampled range the quantile carries no information. There the map is extrapolated
proportionally from the nearest order statistic (t' = t · cand_(1)/base_(1) below, resp. with the
largest pair above) — below the range that is the line to (0, 0), the distance of identical
vectors in every space. Such answers are flagged `extrapolated = 'below' | 'above'`: sample
pairs that reach the threshold (for dedup: near-duplicates) before trusting them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from embed.shadow.metrics import ShadowInputError

Extrapolated = Literal["below", "above"] | None


@dataclass(frozen=True)
class Recalibration:
    """One mapped threshold, with the evidence to judge it (all JSON-safe numbers)."""

    baseline_threshold: float
    candidate_threshold: float
    quantile: float  # q = F_base(t) on the interpolated CDF (0 or 1 when extrapolated)
    n_pairs: int
    extrapolated: Extrapolated
    base_fraction_within: float  # share of pairs with base distance <= t
    cand_fraction_within: float  # share of pairs with cand distance <= t' (≈ the line above)
    base_precision: float | None = None  # at t, pairs predicted "same/relevant" when distance <= t
    base_recall: float | None = None
    cand_precision: float | None = None  # at t' in the candidate space
    cand_recall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_distances(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if not a.size:
        raise ShadowInputError(f"{name}: no distance samples")
    if not np.isfinite(a).all():
        raise ShadowInputError(f"{name}: distances must be finite")
    return a


def _positions(n: int) -> np.ndarray:
    return (np.arange(1, n + 1) - 0.5) / n


def _precision_recall(dist: np.ndarray, labels: np.ndarray, t: float) -> tuple[float | None, float | None]:
    pred = dist <= t
    tp = int((pred & labels).sum())
    n_pred = int(pred.sum())
    n_pos = int(labels.sum())
    return (tp / n_pred if n_pred else None, tp / n_pos if n_pos else None)


def recalibrate_threshold(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    threshold: float,
    labels: Sequence[bool] | np.ndarray | None = None,
) -> Recalibration:
    """Map `threshold` (a baseline-space distance) to the candidate space by quantile.

    `base[i]` and `cand[i]` are the distances of the same pair in the two spaces; `labels[i]`
    (optional) says whether that pair is truly relevant/duplicate, which adds precision/recall
    at t (baseline) and at t' (candidate) — the check that the mapped threshold behaves alike.
    """
    b = _as_distances(base, "baseline distances")
    c = _as_distances(cand, "candidate distances")
    if b.size != c.size:
        raise ShadowInputError(f"paired samples differ in length: {b.size} baseline vs {c.size} candidate")
    t = float(threshold)
    if not np.isfinite(t):
        raise ShadowInputError(f"threshold must be a finite number, got {threshold!r}")
    bs, cs = np.sort(b), np.sort(c)
    pos = _positions(b.size)
    extrapolated: Extrapolated = None
    if t < bs[0]:
        extrapolated, q = "below", 0.0
        t_new = t * cs[0] / bs[0] if t >= 0 and bs[0] > 0 and cs[0] >= 0 else float(cs[0])
    elif t > bs[-1]:
        extrapolated, q = "above", 1.0
        t_new = t * cs[-1] / bs[-1] if bs[-1] > 0 and cs[-1] > 0 else float(cs[-1])
    else:
        q = float(np.interp(t, bs, pos))
        t_new = float(np.interp(q, pos, cs))
        if bs[0] == bs[-1]:  # all baseline samples equal t: nothing to interpolate between
            q, t_new = 0.5, float(np.median(cs))
    out: dict[str, Any] = {
        "baseline_threshold": t,
        "candidate_threshold": float(t_new),
        "quantile": float(q),
        "n_pairs": int(b.size),
        "extrapolated": extrapolated,
        "base_fraction_within": float((b <= t).mean()),
        "cand_fraction_within": float((c <= t_new).mean()),
    }
    if labels is not None:
        lab = np.asarray(labels).ravel()
        if lab.size != b.size:
            raise ShadowInputError(f"labels: {lab.size} given for {b.size} pairs")
        if lab.dtype != bool:
            if not np.isin(lab, (0, 1)).all():
                raise ShadowInputError("labels must be booleans (or 0/1)")
            lab = lab.astype(bool)
        out["base_precision"], out["base_recall"] = _precision_recall(b, lab, t)
        out["cand_precision"], out["cand_recall"] = _precision_recall(c, lab, t_new)
    return Recalibration(**out)


def recalibrate_thresholds(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    thresholds: Mapping[str, float],
    labels: Sequence[bool] | np.ndarray | None = None,
) -> dict[str, Recalibration]:
    """Several named thresholds (e.g. {'semantic_dedup': 0.05}) over the same paired sample."""
    return {name: recalibrate_threshold(base, cand, t, labels) for name, t in thresholds.items()}
