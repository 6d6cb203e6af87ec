"""The cutover gates: what must hold before a space may serve a source's reads (invariant 3).

Each gate is one SQL query that returns exactly one row `(gate, passed, measured)`, so a gate
whose input is missing (no smoke run, no shadow run, no backup) is a row with passed = false,
never an absent row. The same SQL is used three ways, so the gates cannot drift apart:

- as SQLMesh audits on `embed.<source>_active` (audits/embed_<gate>.sql, via macros/embed_gates.py);
- as the project's `before_all` guard, which runs at the start of *every* `sqlmesh plan` —
  including one that re-promotes a version SQLMesh built and audited earlier and would
  therefore not audit again (docs/design.md, "Production stays off the new model");
- directly by `embed gate`, which prints the measured values.

Gates judge a switch. While a space is what production reads for the source (or what a
rollback in flight goes back to; embed_store.serving), its time-dependent gates are judged as
of the switch that made it active (a backup fresh at cutover does not expire the active space
a day later) and coverage and orphans are not judged again (rows Honcho writes after the switch
are `embed sync`'s business, not a reason to refuse the next plan); otherwise, as of now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from embed.config import Config
from embed.embedders.endpoint import IN_PROCESS, LOOPBACK, PRIVATE
from embed.errors import EmbedError
from embed.spaces import Space
from embed.store import SCHEMA, serving
from embed.store.target import Target

BLOCKED = "embed gate blocked the plan: "
PROD = "prod"  # the SQLMesh environment whose views production reads
Fetch = Callable[[str], list[tuple[Any, ...]]]
GATES = ("smoke", "coverage", "no_orphans", "shadow_fresh", "shadow_ndcg", "shadow_ann_recall", "backup", "verify")
DEFAULT_ENDPOINT_CLASSES = (IN_PROCESS, LOOPBACK, PRIVATE)


@dataclass(frozen=True)
class GateConfig:
    """`embed_gates` from config.yaml, with defaults; validated once."""

    max_ndcg_drop: float = 0.02
    min_ann_recall: float = 0.95
    k: int = 10
    labelled_sources: tuple[str, ...] = ("documents",)
    endpoint_classes: tuple[str, ...] = DEFAULT_ENDPOINT_CLASSES
    max_backup_age_hours: float = 24.0

    @classmethod
    def from_variables(cls, variables: Mapping[str, Any]) -> GateConfig:
        raw = variables.get("embed_gates") or {}
        try:
            out = cls(
                max_ndcg_drop=float(raw.get("max_ndcg_drop", cls.max_ndcg_drop)),
                min_ann_recall=float(raw.get("min_ann_recall", cls.min_ann_recall)),
                k=int(raw.get("k", cls.k)),
                labelled_sources=tuple(raw.get("labelled_sources", cls.labelled_sources) or ()),
                endpoint_classes=tuple(raw.get("endpoint_classes", cls.endpoint_classes) or ()),
                max_backup_age_hours=float(raw.get("max_backup_age_hours", cls.max_backup_age_hours)),
            )
        except (TypeError, ValueError) as e:
            raise EmbedError(f"config.yaml embed_gates: {e}") from None
        if not (0 <= out.max_ndcg_drop <= 1 and 0 <= out.min_ann_recall <= 1 and out.k > 0
                and out.max_backup_age_hours > 0):
            raise EmbedError("config.yaml embed_gates: max_ndcg_drop and min_ann_recall must be in [0, 1], "
                             "k and max_backup_age_hours positive")
        return out


def _ref(name: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, name)


# The moment a gate is judged at (see the module docstring), as a one-row derived table `a`;
# a.serving: the space is what production reads for the source, or what a rollback in flight
# goes back to (embed_store.serving): gated at its switch, it is not gated again.
_ANCHOR = """(SELECT CASE WHEN s.source IS NULL THEN now() ELSE coalesce((
    SELECT e.at FROM {events} AS e WHERE e.kind IN ('cutover', 'rollback') AND e.outcome = 'ok'
      AND e.source = {source} AND e.details ->> 'to_fp' = {fp} ORDER BY e.at DESC, e.id DESC LIMIT 1), now()) END AS at,
    s.source IS NOT NULL AS serving
  FROM (SELECT 1) AS one LEFT JOIN {serving} AS s ON {anchored} AND s.source = {source}
    AND (s.space_fp = {fp} OR (s.target_fp = {fp} AND s.from_fp = {fp}))) AS a"""

# The shadow run a gate reads: the newest one of this source against the legacy space with the
# space among its candidates, started no later than the anchor.
_SHADOW = """LEFT JOIN {runs} AS sh ON sh.id = (
    SELECT r.id FROM {runs} AS r WHERE r.source = {source} AND r.baseline_fp = {legacy_fp}
      AND {fp} = ANY(r.candidate_fps) AND r.at <= a.at ORDER BY r.started_at DESC, r.id DESC LIMIT 1)"""

_METRIC = """LEFT JOIN {metrics} AS m ON m.run_id = sh.id AND m.space_fp = {fp}
    AND m.slice = 'all' AND m.slice_value = 'all' AND m.metric = {metric}"""

_SQL = {
    "smoke": """SELECT 'smoke' AS gate,
      coalesce(s.passed AND s.endpoint_class = ANY({classes}), false) AS passed,
      CASE WHEN s.id IS NULL THEN 'no smoke run for this fingerprint'
           ELSE 'smoke #' || s.id || ' ' || CASE WHEN s.passed THEN 'passed' ELSE 'FAILED' END
                || ', endpoint ' || s.endpoint_class END AS measured
    FROM {anchor} LEFT JOIN {smoke} AS s ON s.id = (
      SELECT r.id FROM {smoke} AS r WHERE r.space_fp = {fp} AND r.at <= a.at ORDER BY r.at DESC, r.id DESC LIMIT 1)""",
    "coverage": """SELECT 'coverage' AS gate, a.serving OR p.n = 0 AS passed,
      CASE WHEN a.serving THEN 'serving since ' || to_char(a.at, 'YYYY-MM-DD HH24:MI:SS') || ': gated at the switch'
           WHEN p.n = 0 THEN 'every live row has a current vector'
           ELSE p.n || ' live row(s) lack a current vector: run embed sync' END AS measured
    FROM {anchor} CROSS JOIN ({pending}) AS p(n, first_id)""",
    "no_orphans": """SELECT 'no_orphans' AS gate, a.serving OR o.n = 0 AS passed,
      CASE WHEN a.serving THEN 'serving since ' || to_char(a.at, 'YYYY-MM-DD HH24:MI:SS') || ': gated at the switch'
           WHEN o.n = 0 THEN 'no stored vector of a deleted or soft-deleted row'
           ELSE o.n || ' stored vector(s) of rows no longer live: run embed sync' END AS measured
    FROM {anchor} CROSS JOIN ({orphans}) AS o(n)""",
    "shadow_fresh": """SELECT 'shadow_fresh' AS gate,
      sh.id IS NOT NULL AND (b.at IS NULL OR sh.started_at > b.at) AS passed,
      CASE WHEN sh.id IS NULL THEN 'no shadow run against the legacy space'
           ELSE 'shadow #' || sh.id || ' started ' || to_char(sh.started_at, 'YYYY-MM-DD HH24:MI:SS')
                || coalesce(', last backfill ' || to_char(b.at, 'YYYY-MM-DD HH24:MI:SS'), '') END AS measured
    FROM {anchor} {shadow} LEFT JOIN LATERAL (
      SELECT max(x.finished_at) AS at FROM {runs_} AS x WHERE x.kind = 'backfill' AND x.status = 'ok'
        AND x.space_fp = {fp} AND x.source = {source} AND x.finished_at <= a.at) AS b ON true""",
    "shadow_ndcg": """SELECT 'shadow_ndcg' AS gate,
      NOT {labelled} OR coalesce(m.ci_low >= -{max_drop}, false) AS passed,
      CASE WHEN NOT {labelled} THEN 'not required for this source (embed_gates.labelled_sources)'
           WHEN sh.id IS NULL THEN 'no shadow run against the legacy space'
           WHEN m.run_id IS NULL THEN 'shadow #' || sh.id || ' has no labelled queries'
           ELSE CASE WHEN m.ci_low >= -{max_drop} THEN 'PASS: '
                     WHEN m.ci_high >= -{max_drop} AND q.value > m.n THEN 'INCONCLUSIVE (too few queries to decide): '
                     ELSE 'FAIL: ' END
                || 'delta nDCG ' || round(m.value::numeric, 3) || ' [' || round(m.ci_low::numeric, 3) || ', '
                || round(m.ci_high::numeric, 3) || '], floor -' || {max_drop}
                || coalesce('; needs ~' || q.value::bigint || ' labelled queries, has ' || m.n, '') END AS measured
    FROM {anchor} {shadow} {metric_join}
    LEFT JOIN {metrics} AS q ON q.run_id = sh.id AND q.space_fp = {fp}
      AND q.slice = 'all' AND q.slice_value = 'all' AND q.metric = {needed}""",
    "shadow_ann_recall": """SELECT 'shadow_ann_recall' AS gate, coalesce(m.value >= {min_recall}, false) AS passed,
      CASE WHEN sh.id IS NULL THEN 'no shadow run against the legacy space'
           WHEN m.run_id IS NULL THEN 'shadow #' || sh.id || ' has no ANN recall for this space'
           ELSE 'ANN recall ' || round(m.value::numeric, 3) || ', minimum ' || {min_recall} END AS measured
    FROM {anchor} {shadow} {metric_join}""",
    "backup": """SELECT 'backup' AS gate, b.id IS NOT NULL AS passed,
      CASE WHEN b.id IS NULL THEN 'no verified backup in the ' || {hours} || ' h before'
           ELSE 'backup #' || b.id || ' verified, taken ' || to_char(b.at, 'YYYY-MM-DD HH24:MI:SS') END AS measured
    FROM {anchor} LEFT JOIN {backups} AS b ON b.id = (
      SELECT x.id FROM {backups} AS x WHERE x.verified AND x.at <= a.at
        AND x.at >= a.at - {hours} * INTERVAL '1 hour' ORDER BY x.at DESC, x.id DESC LIMIT 1)""",
    # `embed verify` (embed.verify), two conditions. (1) The endpoint consumers call after the switch
    # (`endpoint`: the space's serve_endpoint or its own, or 'in-process') reproduced the space's
    # vectors: the newest `embed verify --where endpoint` of it for the source, after the space's
    # last backfill and no later than the anchor, passed. Never run: failed (invariant 3). (2) The
    # newest check or repair of the source, judged now even while the space serves, found no
    # offender: a Honcho writing another model's vectors after the switch turns it red.
    "verify": """SELECT 'verify' AS gate,
      coalesce(ep.outcome = 'ok', false) AND coalesce(e.outcome <> 'failed', true) AS passed,
      CASE WHEN ep.outcome <> 'ok' THEN 'verify #' || ep.id || ': endpoint ' || {endpoint} || ' '
                || coalesce(ep.reason, 'failed') || ': fix the server (or serve_endpoint), then embed verify --space '
                || {space} || ' --source ' || {source} || ' --where endpoint'
           WHEN e.outcome = 'failed' THEN 'verify #' || e.id || ': ' || coalesce(e.reason, 'failed')
                || ' at ' || coalesce(e.details ->> 'location', '?') || ': embed verify --repair, or roll back'
           WHEN ep.id IS NULL THEN 'no embed verify of the endpoint ' || {endpoint}
                || coalesce(' since the last backfill (' || to_char(b.at, 'YYYY-MM-DD HH24:MI:SS') || ')', '')
                || ': run embed verify --space ' || {space} || ' --source ' || {source} || ' --where endpoint --sample 200'
           ELSE 'endpoint ' || {endpoint} || ' verified #' || ep.id || ' ('
                || coalesce(ep.details ->> 'checked', '0') || ' checked, min cosine '
                || coalesce(ep.details ->> 'min_cosine', '-') || ')'
                || CASE WHEN e.id > ep.id THEN '; newest check #' || e.id || ' clean' ELSE '' END END AS measured
    FROM {anchor} LEFT JOIN LATERAL (
      SELECT max(x.finished_at) AS at FROM {runs_} AS x WHERE x.kind = 'backfill' AND x.status = 'ok'
        AND x.space_fp = {fp} AND x.source = {source} AND x.finished_at <= a.at) AS b ON true
    LEFT JOIN {events} AS ep ON ep.id = (
      SELECT x.id FROM {events} AS x WHERE x.kind = 'verify' AND x.space_fp = {fp} AND x.source = {source}
        AND x.details ->> 'kind' = 'endpoint' AND x.details ->> 'location' = {endpoint}
        AND x.at <= a.at AND (b.at IS NULL OR x.at > b.at) ORDER BY x.id DESC LIMIT 1)
    LEFT JOIN {events} AS e ON e.id = (
      SELECT x.id FROM {events} AS x WHERE x.kind IN ('verify', 'verify_repair') AND x.space_fp = {fp}
        AND x.source = {source} ORDER BY x.id DESC LIMIT 1)""",
}


def gate_query(cfg: Config, gate: str, source: str, space: Space, *, anchored: bool = True) -> sql.Composed:
    """The one-row query `(gate, passed, measured)` of one gate for (source, space)."""
    if gate not in _SQL:
        raise EmbedError(f"unknown gate {gate!r} (gates: {', '.join(GATES)})")
    gc = GateConfig.from_variables(cfg.variables)
    src = cfg.source(source)
    fp, source_lit = sql.Literal(space.fingerprint), sql.Literal(src.name)
    common = {"fp": fp, "source": source_lit, "runs": _ref("shadow_runs")}
    metric = {"shadow_ndcg": f"delta_ndcg@{gc.k}", "shadow_ann_recall": f"ann_recall@{gc.k}"}.get(gate, "")
    parts: dict[str, sql.Composable] = {
        **common,
        "anchor": sql.SQL(_ANCHOR).format(anchored=sql.Literal(anchored), events=_ref("events"),
                                          serving=_ref("serving"), **common),
        "shadow": sql.SQL(_SHADOW).format(legacy_fp=sql.Literal(cfg.legacy_space.fingerprint), **common),
        "metric_join": sql.SQL(_METRIC).format(metrics=_ref("shadow_metrics"), metric=sql.Literal(metric), fp=fp),
        "smoke": _ref("smoke_runs"),
        "backups": _ref("backups"),
        "events": _ref("events"),
        "runs_": _ref("runs"),
        "classes": sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, gc.endpoint_classes))),
        "labelled": sql.Literal(src.name in gc.labelled_sources),
        "metrics": _ref("shadow_metrics"),
        "needed": sql.Literal(f"queries_needed_ndcg@{gc.k}"),
        "max_drop": sql.Literal(gc.max_ndcg_drop),
        "min_recall": sql.Literal(gc.min_ann_recall),
        "hours": sql.Literal(gc.max_backup_age_hours),
        "space": sql.Literal(space.name),
    }
    if gate == "verify":
        from embed.verify import endpoint_location

        parts["endpoint"] = sql.Literal(endpoint_location(space))
    if gate == "coverage":
        parts["pending"] = Target(src, space).pending_query(count=True)
    if gate == "no_orphans":
        t = Target(src, space)
        parts["orphans"] = sql.SQL(
            "SELECT count(*) FROM {store} AS v WHERE NOT EXISTS (SELECT 1 FROM ({rows}) AS s WHERE s.id = v.source_id)"
        ).format(store=t.store, rows=t.live_rows())
    return sql.SQL(_SQL[gate]).format(**{k: v for k, v in parts.items() if "{" + k + "}" in _SQL[gate]})


def guard_failure(cfg: Config, rendered: Mapping[str, serving.Rendered], fetch: Fetch,
                  environment: str = PROD) -> str | None:
    """What the `before_all` guard stops the plan with (None: nothing), judged now: the plan's
    rendering of `embed_serving` differs from what the database says the views must serve (a
    plain `sqlmesh plan` can never switch production), or it switches a source forward to a
    space whose gates do not all pass. Going back (rollback's target, or the legacy space) is
    not gated. `fetch` runs plain SQL on the target database. The gates run here, as one query,
    and the guard hands SQLMesh only the one-line failure: a statement of every gate's SQL
    would cost SQLMesh a parse, a copy and a table walk of the whole union on every cutover.

    A plan for another `environment` than prod (the views a cutover will promote, built ahead
    by `embed gate`: embed.mesh.prebuild) changes nothing production reads: its views may serve
    another space than production, behind the same gates; the legacy column must still match."""
    exists = fetch(serving.EXISTS_SQL)[0][0]
    states = serving.from_rows(cfg, fetch(serving.READ_SQL)) if exists else {}
    checked = rendered if environment == PROD else {
        n: replace(r, fp=states[n].views_expected) if n in states else r for n, r in rendered.items()}
    wrong = serving.mismatch(cfg, checked, fetch)
    if wrong:
        return f"{BLOCKED}{wrong}"
    legacy = cfg.legacy_space.fingerprint
    rows = []
    for name, st in states.items():
        fp = rendered[name].fp
        if fp in (legacy, st.views_fp, st.from_fp):
            continue
        sp = cfg.space_by_fp(fp)
        rows += [sql.SQL("SELECT {} AS source, g.* FROM ({}) AS g").format(sql.Literal(name),
                                                                           gate_query(cfg, gate, name, sp))
                 for gate in GATES]
    if not rows:
        return None
    failed = fetch(sql.SQL(
        "SELECT string_agg(f.source || '.' || f.gate || ' (' || f.measured || ')', '; ') FROM ({}) AS f"
        " WHERE NOT f.passed HAVING count(*) > 0").format(sql.SQL(" UNION ALL ").join(rows)).as_string(None))
    return f"{BLOCKED}{failed[0][0]}" if failed else None


def evaluate(conn: psycopg.Connection, cfg: Config, space: Space, sources: list[str] | None = None,
             *, anchored: bool = False) -> list[dict[str, Any]]:
    """Every gate of `space` for each source, judged now: one dict per (source, gate)."""
    out = []
    for name in sources or list(cfg.sources):
        for gate in GATES:
            row = conn.execute(gate_query(cfg, gate, name, space, anchored=anchored)).fetchone()
            out.append({"source": name, "gate": row[0], "passed": bool(row[1]), "measured": row[2]})
    return out
