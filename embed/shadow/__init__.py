"""Shadow validation: compare retrieval in two embedding spaces from their ranked id lists only.

DB-free core (docs/design.md, "Shadow validation"): `metrics` (agreement, labelled metrics, bootstrap CIs, index health),
`recalibrate` (distance thresholds mapped by quantile), `report` (result dict + HTML/terminal).
Database side: `inputs` (one reader per space, query sets), `run` (`shadow()`: rank, compare,
persist to embed_store.shadow_runs / shadow_metrics).

The names below are loaded on first use (PEP 562): `from embed.shadow import filtered`, as
`embed cutover` and `embed status` do to read a recorded sweep, then costs no polars or ranx import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {  # public name -> the module that defines it
    "CrossSpaceError": "inputs", "SpaceReader": "inputs",
    **dict.fromkeys((
        "ShadowInputError", "aggregate", "ann_recall", "bootstrap_mean_ci", "latency_summary",
        "neighbour_retention", "neighbour_retention_per_item", "paired_deltas", "pairwise_agreement",
        "relevance_metrics", "validate_qrels", "validate_rankings",
    ), "metrics"),
    **dict.fromkeys(("Recalibration", "recalibrate_threshold", "recalibrate_thresholds"), "recalibrate"),
    **dict.fromkeys(("SCHEMA", "build_result", "render_html", "render_table"), "report"),
    **dict.fromkeys(("ShadowResult", "SourceShadow", "metric_rows", "shadow"), "run"),
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
