"""Macros that put the cutover gates of `embed.gates` into SQLMesh: one audit per gate and the
`before_all` guard. The SQL itself lives in the package, so audits, guard and `embed gate` agree.
"""

from __future__ import annotations

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator


def _config(evaluator: MacroEvaluator):  # -> embed.config.Config
    from embed.config import Config

    # Literal names: SQLMesh finds a macro's variables by reading its source.
    variables = {
        "embed_spaces": evaluator.var("embed_spaces"),
        "embed_sources": evaluator.var("embed_sources"),
        "embed_legacy_space": evaluator.var("embed_legacy_space"),
        "embed_gates": evaluator.var("embed_gates"),
    }
    return Config.from_variables({k: v for k, v in variables.items() if v is not None})


def _parse(composed) -> exp.Expression:  # psycopg Composed -> sqlglot
    import sqlglot

    return sqlglot.parse_one(composed.as_string(None), dialect="postgres")


@macro()
def embed_gate(evaluator: MacroEvaluator, gate: exp.Expression, source: exp.Expression, space_fp: exp.Expression) -> exp.Expression:
    """One gate's one-row query `(gate, passed, measured)` for (source, space)."""
    from embed import gates

    cfg = _config(evaluator)
    return _parse(gates.gate_query(cfg, gate.name, source.name, cfg.space_by_fp(space_fp.name)))


@macro()
def embed_gate_guard(evaluator: MacroEvaluator) -> exp.Expression:
    """`before_all`: fails the plan when its rendering of `embed_serving` is not what the
    database says the views must serve, or when it switches a source to a space that fails a gate.

    It runs before SQLMesh changes anything, on every plan, so a version SQLMesh would promote
    without auditing it again (re-promotion) is gated too.
    """
    from embed import gates
    from embed.store import serving

    if evaluator.runtime_stage == "loading":
        return exp.select("1")
    cfg = _config(evaluator)
    rendered = serving.parse(cfg, evaluator.var("embed_serving"))
    failure = gates.guard_failure(cfg, rendered, lambda q: list(evaluator.engine_adapter.fetchall(q)),
                                  evaluator.locals.get("this_env", gates.PROD))
    if failure is None:
        return exp.select("1")
    # An impossible cast is the portable way to make a plain SELECT fail with a readable message.
    return exp.select(exp.cast(exp.Literal.string(failure), exp.DataType.Type.INT).as_("embed_gate_guard"))
