"""The Honcho settings to change at an in-place cutover, and the recalibrated distance thresholds
of the latest shadow run, for `embed cutover --mode honcho-inplace` to print."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config
from embed.database import connect
from embed.spaces import Space

# Verified against plastic-labs/honcho v3.0.12: src/config.py (EmbeddingSettings: env_prefix
# EMBEDDING_, env_nested_delimiter "__", MODEL_CONFIG = ConfiguredEmbeddingModelSettings with
# transport "openai"|"gemini", model, overrides.base_url, dimensions_mode; VECTOR_DIMENSIONS;
# MAX_INPUT_TOKENS), src/startup/embedding_validator.py (the typmod check of both tables),
# src/embedding_client.py (no query/passage prefixes; an OpenAI transport needs an API key) and
# src/crud/document.py (semantic dedup: max_distance=0.05 hard-coded).
HONCHO_VERSION = "3.0.12"
THRESHOLD_WHERE = {
    "semantic_dedup": "not a setting in Honcho v3.0.12: max_distance=0.05 is hard-coded in the semantic dedup of "
                      "src/crud/document.py (patch it, or accept the mismatch)",
    "search_max_distance": "not a setting: semantic_search_max_distance is a per-request parameter of Honcho's "
                           "search calls (change the callers)",
}


def honcho_settings(cfg: Config, url: str, space_name: str) -> dict[str, Any]:
    """The Honcho environment settings to change at cutover to `space_name`, and the distance
    thresholds recalibrated by the latest shadow run (or 'no shadow run')."""
    space = cfg.space(space_name)
    settings, also, notes = _honcho_env(space)
    with connect(url) as conn:
        thresholds = _thresholds(conn, space) if store.is_initialized(conn) else []
    baseline = (cfg.variables.get("embed_gates") or {}).get("thresholds") or {}
    for run in thresholds:
        for name, v in run["values"].items():
            v["baseline"] = baseline.get(name)
            v["where"] = THRESHOLD_WHERE.get(name, "model-specific distance threshold: set wherever it is used")
    env = [f"{k}={v}" for k, v in {**settings, **also}.items() if v is not None]
    return {
        "space": space.name, "fingerprint": space.fingerprint, "honcho_version": HONCHO_VERSION,
        "settings": settings, "recommended": also, "env": env, "notes": notes,
        "thresholds": thresholds or "no shadow run",
    }


def _honcho_env(space: Space) -> tuple[dict[str, str | None], dict[str, str], list[str]]:
    """(the four settings, recommended extras, notes) from the space spec."""
    notes: list[str] = []
    endpoint = space.option("endpoint")
    model = str(space.option("served_model") or space.model)
    if space.provider == "openai":
        base_url = endpoint
    elif space.provider == "ollama":
        base = str(endpoint or "").rstrip("/")
        base_url = base if base.endswith("/v1") else base + "/v1"  # Honcho speaks OpenAI: Ollama's /v1
    else:
        base_url = space.option("serve_endpoint")
        notes.append(
            f"provider {space.provider} runs in-process here; Honcho needs an OpenAI-compatible /v1/embeddings "
            f"server with the same weights (revision {space.revision}): "
            + ("serve_endpoint is set on the space" if base_url else
               "set serve_endpoint (and served_model) on the space, and smoke-test that endpoint as a space")
        )
    if space.query_prefix or space.passage_prefix:
        notes.append(
            f"space {space.name} adds query/passage prefixes; Honcho sends raw text, so its writes and queries "
            "are in this space only if the embedding server adds the same prefixes"
        )
    settings: dict[str, str | None] = {
        "EMBEDDING_VECTOR_DIMENSIONS": str(space.dims),
        "EMBEDDING_MODEL_CONFIG__TRANSPORT": "openai",  # Honcho's transports: openai | gemini
        "EMBEDDING_MODEL_CONFIG__MODEL": model,
        "EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL": str(base_url) if base_url else None,
    }
    openai_dims_param = space.model.startswith("text-embedding-3")
    also = {
        # With VECTOR_DIMENSIONS set, dimensions_mode 'auto' sends `dimensions=`; most
        # self-hosted servers reject it, OpenAI's text-embedding-3 models accept it.
        "EMBEDDING_MODEL_CONFIG__DIMENSIONS_MODE": "auto" if openai_dims_param else "never",
        "EMBEDDING_MAX_INPUT_TOKENS": str(space.max_tokens),
    }
    key_env = space.option("api_key_env")
    notes.append(
        "Honcho's OpenAI transport refuses to start without an API key: "
        + (f"set EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY_ENV={key_env} (the variable that holds it)" if key_env
           else "for a keyless server set EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY to any placeholder")
    )
    notes.append("restart Honcho's API and deriver with these settings right after the swap (its startup check "
                 "compares EMBEDDING_VECTOR_DIMENSIONS with both tables' column type)")
    return settings, also, notes


def _thresholds(conn: psycopg.Connection, space: Space) -> list[dict[str, Any]]:
    """The newest shadow run per source with recalibrated thresholds for this space."""
    rows = conn.execute(
        sql.SQL(
            """WITH latest AS (
                 SELECT DISTINCT ON (r.source) r.id, r.at, r.source, r.baseline_fp FROM {schema}.shadow_runs AS r
                 WHERE EXISTS (SELECT 1 FROM {schema}.shadow_metrics AS m WHERE m.run_id = r.id
                               AND m.space_fp = %(fp)s AND m.slice = 'all' AND m.metric LIKE 'threshold:%%')
                 ORDER BY r.source, r.at DESC, r.id DESC)
               SELECT l.id, l.at, l.source, l.baseline_fp, m.metric, m.n, m.value, m.ci_low, m.ci_high
               FROM latest AS l JOIN {schema}.shadow_metrics AS m ON m.run_id = l.id AND m.space_fp = %(fp)s
                 AND m.slice = 'all' AND m.metric LIKE 'threshold:%%'
               ORDER BY l.at DESC, l.id DESC, m.metric, m.slice_value"""
        ).format(schema=sql.Identifier(store.SCHEMA)),
        {"fp": space.fingerprint},
    ).fetchall()
    runs: dict[int, dict[str, Any]] = {}
    for rid, at, source, base_fp, metric, n, value, lo, hi in rows:
        run = runs.setdefault(rid, {"run_id": rid, "at": at.isoformat(), "source": source, "baseline_fp": base_fp,
                                    "values": {}})
        run["values"][metric.split(":", 1)[1]] = {"value": value, "ci_low": lo, "ci_high": hi, "n": n}
    return sorted(runs.values(), key=lambda r: r["at"], reverse=True)
