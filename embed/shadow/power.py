"""How sure a quality verdict is: the paired test, the smallest detectable effect, the sample needed.

The nDCG gate is a non-inferiority test: it passes when the lower end of the 95 % CI of the paired
per-query delta (candidate − baseline) lies above −margin. With per-query deltas of standard
deviation sd, that lower end sits about z(0.975)·sd/√n below the mean, so a candidate truly as
good as the baseline (true delta 0) passes with probability `power` once

    n ≥ ((z(0.975) + z(power)) · sd / margin)²          ("needs ~N, has M")

The same normal approximation gives the smallest true delta a two-sided test at α = 0.05 detects
with that power: (z(0.975) + z(power)) · sd / √n. Beside the bootstrap CI, the Wilcoxon
signed-rank test (scipy; zero deltas dropped, as Wilcoxon's own method does) gives a p-value
that does not lean on normality: nDCG deltas are mostly 0 with a few large jumps.

Verdicts: PASS when the CI's lower end clears −margin; FAIL when even its upper end is below
−margin, or when the sample already has the queries needed and still cannot clear it;
INCONCLUSIVE otherwise (the sample is too small to decide). Only PASS passes the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
POWER = 0.8
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def _z() -> float:
    from scipy import stats  # imported on use: it costs the CLI's start half a second

    return float(stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER))


def queries_needed(sd: float, margin: float) -> int:
    """Queries for `POWER` to pass the non-inferiority gate at `margin` when the true delta is 0."""
    if margin <= 0:
        raise ValueError(f"the margin must be positive, got {margin!r}")
    return max(2, math.ceil((_z() * sd / margin) ** 2))


def detectable(sd: float, n: int) -> float | None:
    """The smallest true delta a two-sided test at ALPHA detects with POWER on n paired queries."""
    return _z() * sd / math.sqrt(n) if n >= 2 else None


def wilcoxon_p(deltas: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired deltas; 1.0 when every delta is 0."""
    d = np.asarray(deltas, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return None
    if not np.any(d != 0):
        return 1.0
    from scipy import stats

    return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def verdict(ci_low: float | None, ci_high: float | None, n: int, needed: int, margin: float) -> str | None:
    """PASS / FAIL / INCONCLUSIVE for a non-inferiority margin (see the module docstring)."""
    if ci_low is None or ci_high is None or n < 2:
        return None
    if ci_low >= -margin:
        return PASS
    if ci_high < -margin or n >= needed:
        return FAIL
    return INCONCLUSIVE


@dataclass(frozen=True)
class Confidence:
    """How sure one candidate's paired delta is, as one result row."""

    candidate: str
    metric: str
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    sd: float
    wilcoxon_p: float | None
    detectable: float | None
    margin: float
    queries_needed: int
    verdict: str | None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def confidence(candidate: str, metric: str, deltas: np.ndarray, ci: dict[str, Any], margin: float) -> Confidence:
    """The Confidence row of one candidate from its per-query deltas and their bootstrap CI row."""
    d = np.asarray(deltas, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    sd = float(d.std(ddof=1)) if n >= 2 else 0.0
    needed = queries_needed(sd, margin)
    return Confidence(
        candidate=candidate,
        metric=metric,
        n=n,
        value=ci.get("value"),
        ci_low=ci.get("ci_low"),
        ci_high=ci.get("ci_high"),
        sd=sd,
        wilcoxon_p=wilcoxon_p(d),
        detectable=detectable(sd, n),
        margin=margin,
        queries_needed=needed,
        verdict=verdict(ci.get("ci_low"), ci.get("ci_high"), n, needed, margin),
    )
