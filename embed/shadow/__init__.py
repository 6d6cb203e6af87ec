"""Shadow validation: compare retrieval in two embedding spaces from their ranked id lists only.

DB-free core (docs/design.md, "Shadow validation"): `metrics` (agreement, labelled metrics, bootstrap CIs, index health),
`recalibrate` (distance thresholds mapped by quantile), `report` (result dict + HTML/terminal).
Database side: `inputs` (one reader per space, query sets), `run` (`shadow()`: rank, compare,
persist to embed_store.shadow_runs / shadow_metrics).
"""

from embed.shadow.inputs import CrossSpaceError, SpaceReader
from embed.shadow.metrics import (
    ShadowInputError,
    aggregate,
    ann_recall,
    bootstrap_mean_ci,
    latency_summary,
    neighbour_retention,
    neighbour_retention_per_item,
    paired_deltas,
    pairwise_agreement,
    relevance_metrics,
    validate_qrels,
    validate_rankings,
)
from embed.shadow.recalibrate import Recalibration, recalibrate_threshold, recalibrate_thresholds
from embed.shadow.report import SCHEMA, build_result, render_html, render_table
from embed.shadow.run import ShadowResult, SourceShadow, metric_rows, shadow

__all__ = [
    "SCHEMA",
    "CrossSpaceError",
    "Recalibration",
    "ShadowInputError",
    "ShadowResult",
    "SourceShadow",
    "SpaceReader",
    "aggregate",
    "ann_recall",
    "bootstrap_mean_ci",
    "build_result",
    "latency_summary",
    "metric_rows",
    "neighbour_retention",
    "neighbour_retention_per_item",
    "paired_deltas",
    "pairwise_agreement",
    "recalibrate_threshold",
    "recalibrate_thresholds",
    "relevance_metrics",
    "render_html",
    "render_table",
    "shadow",
    "validate_qrels",
    "validate_rankings",
]
