"""The Honcho settings to change at an in-place cutover, and the recalibrated distance thresholds
of the latest shadow run, for `embed cutover --mode honcho-inplace` to print."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from embed import store
from embed.config import Config
from embed.db.connection import connect
from embed.spaces import Space

if TYPE_CHECKING:  # the shadow package loads polars: only a recommendation needs it, read on demand
    from embed.shadow import filtered as F

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


HONCHO_MAX_INPUT_TOKENS = 8192  # EMBEDDING_MAX_INPUT_TOKENS default: Honcho refuses longer texts (HTTP 422)
API_KEY_PLACEHOLDER = "<the key of this server; keyless servers: any non-empty placeholder>"


@dataclass(frozen=True)
class Setting:
    """One line of Honcho's .env, with the reason it has that value."""

    name: str
    value: str
    why: str


@dataclass(frozen=True)
class ScanAdvice:
    """The pgvector scan setting Honcho's role should read this space with, from the newest
    shadow run per source (embed.shadow.filtered): one setting for every table, the cheapest
    that meets the recall floor in each; `setting` None when no swept setting does."""

    setting: F.ScanSetting | None
    statements: tuple[str, ...]  # ALTER ROLE ... SET, for the role of the URL (or a placeholder)
    evidence: tuple[str, ...]  # per source: the shadow run and the recalls it measured

    def lines(self) -> list[str]:
        if self.setting is None:
            return ["# pgvector scan setting: no swept hnsw.ef_search / hnsw.iterative_scan reaches the recall floor "
                    "on the tenants served through HNSW (embed shadow's filtered-recall table): see the runbook, "
                    "step 6", *(f"#   {e}" for e in self.evidence)]
        if self.setting.is_default:
            return [f"# pgvector scan setting: pgvector's defaults ({self.setting.label}) meet the recall floor on "
                    "the tenants served through HNSW: nothing to apply", *(f"#   {e}" for e in self.evidence)]
        return [f"# pgvector scan setting for Honcho's reads: {self.setting.label} (the cheapest that meets the recall "
                "floor; Honcho sets neither). Not .env: run once in psql as a superuser or the role itself; "
                "new sessions of the role pick it up, then run embed shadow again (its gate reads the session's):",
                *(f"#   {e}" for e in self.evidence),
                *(["#   relaxed_order can return rows slightly out of distance order: Honcho's read does not "
                   "re-sort them"] if self.setting.iterative_scan == "relaxed_order" else []),
                *(f"# {st}" for st in self.statements)]

    def as_dict(self) -> dict[str, Any]:
        return {"setting": asdict(self.setting) if self.setting else None, "statements": list(self.statements),
                "evidence": list(self.evidence)}


@dataclass(frozen=True)
class HonchoSettings:
    """What Honcho's API and deriver must be restarted with for their column to hold `space`."""

    space: str
    fingerprint: str
    settings: tuple[Setting, ...]
    notes: tuple[str, ...]
    thresholds: tuple[dict[str, Any], ...]  # recalibrated distances per shadow run (ids and numbers)
    scan: ScanAdvice | None = None  # hnsw.ef_search / hnsw.iterative_scan for Honcho's role (None: no sweep)

    def env_block(self) -> str:
        """The settings as Honcho takes them: a .env block, a comment line before each variable."""
        lines = [f"# Honcho v{HONCHO_VERSION} settings for embedding space {self.space} ({self.fingerprint[:12]});",
                 "# set them in the .env of Honcho's API and deriver, then restart both."]
        for st in self.settings:
            lines += [f"# {st.why}", f"{st.name}={st.value}"]
        lines += [f"# note: {n}" for n in self.notes]
        lines += self.scan.lines() if self.scan else []
        for run in self.thresholds:
            for name, v in run["values"].items():
                lines.append(f"# threshold {name}: {v['baseline']} in the old space -> {_num(v['value'])} in this one "
                             f"(shadow #{run['run_id']}, {run['source']}): {v['where']}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"space": self.space, "fingerprint": self.fingerprint, "honcho_version": HONCHO_VERSION,
                "env": {st.name: st.value for st in self.settings}, "settings": [asdict(st) for st in self.settings],
                "notes": list(self.notes), "thresholds": list(self.thresholds),
                "scan": self.scan.as_dict() if self.scan else None, "env_block": self.env_block()}


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def honcho_settings(cfg: Config, url: str, space: Space) -> HonchoSettings:
    """The Honcho environment for `space`, the distance thresholds recalibrated by the latest
    shadow run of it (none: no shadow run), and the pgvector scan setting its filtered-recall
    sweeps recommend for Honcho's role (the role of `url`, or a placeholder)."""
    from embed.verify import check_served_by

    settings, notes = _honcho_env(space)
    with connect(url) as conn:
        check_served_by(conn, cfg, space)  # another declared space's server: only a verified compatible_with
        ready = store.is_initialized(conn)
        thresholds = _thresholds(conn, space) if ready else []
        scan = _scan(conn, space, url) if ready else None
    baseline = (cfg.variables.get("embed_gates") or {}).get("thresholds") or {}
    for run in thresholds:
        for name, v in run["values"].items():
            v["baseline"] = baseline.get(name)
            v["where"] = THRESHOLD_WHERE.get(name, "model-specific distance threshold: set wherever it is used")
    return HonchoSettings(space.name, space.fingerprint, tuple(settings), tuple(notes), tuple(thresholds), scan)


def _honcho_env(space: Space) -> tuple[list[Setting], list[str]]:
    """(the .env lines, notes) from the space spec: only values both the space and Honcho accept."""
    from embed.embedders import HTTP_PROVIDERS
    from embed.verify import served_at

    notes: list[str] = []
    model = str(space.option("served_model") or space.model)
    base_url = served_at(space)  # the one endpoint `embed verify --where endpoint` and the gate check
    if space.provider not in HTTP_PROVIDERS:
        notes.append(
            f"provider {space.provider} runs in-process here; Honcho needs an OpenAI-compatible /v1/embeddings "
            f"server with the same weights (revision {space.revision})"
            + ("" if base_url else ": set serve_endpoint (and served_model) on the space"))
    if space.query_prefix or space.passage_prefix:
        notes.append(f"space {space.name} adds query/passage prefixes; Honcho sends raw text, so its writes and "
                     "queries are in this space only if the embedding server adds the same prefixes")
    out = [
        Setting("EMBEDDING_VECTOR_DIMENSIONS", str(space.dims),
                "the column type after the switch: Honcho's startup check compares it with both tables"),
        Setting("EMBEDDING_MODEL_CONFIG__TRANSPORT", "openai", "an OpenAI-compatible /v1/embeddings endpoint"),
        Setting("EMBEDDING_MODEL_CONFIG__MODEL", model, f"the model name the server serves for space {space.name}"),
    ]
    if base_url:
        out.append(Setting("EMBEDDING_MODEL_CONFIG__OVERRIDES__BASE_URL", str(base_url),
                           "the server that makes this space's vectors (queries and writes alike)"))
    key_env = space.option("api_key_env")
    out.append(Setting(
        "EMBEDDING_MODEL_CONFIG__OVERRIDES__API_KEY",
        f"<the value of ${key_env}>" if key_env else API_KEY_PLACEHOLDER,
        "Honcho's OpenAI transport will not start without a key, and without this override it would send "
        "its global OpenAI key to this server (never printed here: fill it in)"))
    openai_dims = space.model.startswith("text-embedding-3")
    out.append(Setting(
        "EMBEDDING_MODEL_CONFIG__DIMENSIONS_MODE", "auto" if openai_dims else "never",
        "OpenAI's text-embedding-3 models take `dimensions=`" if openai_dims else
        "self-hosted servers reject a `dimensions=` parameter; the model returns its own dims, which Honcho checks"))
    if space.max_tokens < HONCHO_MAX_INPUT_TOKENS:
        notes.append(
            f"EMBEDDING_MAX_INPUT_TOKENS stays at Honcho's default ({HONCHO_MAX_INPUT_TOKENS}): the space cuts "
            f"texts at {space.max_tokens} tokens itself, and a lower limit would make Honcho refuse longer texts "
            "(HTTP 422)")
    return out, notes


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


def _scan(conn: psycopg.Connection, space: Space, url: str) -> ScanAdvice | None:
    """The scan setting the newest shadow run per source with a sweep of this space recommends,
    its statements for the role `url` logs in as."""
    rows = conn.execute(
        sql.SQL(
            """SELECT DISTINCT ON (r.source) r.id, r.source, s.sweep FROM {schema}.shadow_runs AS r
               CROSS JOIN LATERAL jsonb_array_elements(coalesce(r.result -> 'filtered_recall', '[]')) AS s(sweep)
               WHERE s.sweep ->> 'space_fp' = %(fp)s ORDER BY r.source, r.at DESC, r.id DESC"""
        ).format(schema=sql.Identifier(store.SCHEMA)),
        {"fp": space.fingerprint},
    ).fetchall()
    if not rows:
        return None
    from embed.shadow import filtered as F

    sweeps = [(rid, source, F.from_dict(d)) for rid, source, d in rows]
    if not any(sw.rows for _, _, sw in sweeps):
        return None
    setting = F.combine([sw for _, _, sw in sweeps])
    evidence = []
    for rid, source, sw in sweeps:
        at, now = (sw.at(setting) if setting else None), sw.at(sw.session)
        evidence.append(
            f"{source} (shadow #{rid}, {at.queries if at else 0} queries on HNSW-served tenants): "
            + (f"recall {F.fmt(at.recall)} at it; " if at else "")
            + (f"{F.fmt(now.recall)} at the session's {sw.session.label}" if now else "no tenant served through HNSW")
        )
    statements = tuple(setting.statements(F.role_of(url))) if setting and not setting.is_default else ()
    return ScanAdvice(setting, statements, tuple(evidence))
