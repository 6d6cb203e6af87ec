"""Vector and hashing expressions per SQL dialect: pgvector on Postgres, native types on DuckDB
(SQLMesh's unit-test engine), so the same view logic is tested on both."""

from __future__ import annotations

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator


def _engine(evaluator: MacroEvaluator) -> str:
    """The dialect of the engine that will run the SQL (DuckDB under `sqlmesh test`)."""
    if evaluator.runtime_stage == "loading":
        return evaluator.dialect
    return evaluator.engine_adapter.dialect


@macro()
def embed_content_hash(evaluator: MacroEvaluator, text: exp.Expression) -> exp.Expression:
    """sha256 of the UTF-8 text as bytes: what the writer stores in content_sha256."""
    if _engine(evaluator) == "duckdb":
        return exp.func("unhex", exp.func("sha256", text))
    return exp.func("sha256", exp.func("convert_to", text, exp.Literal.string("UTF8")))


@macro()
def embed_dims_of(evaluator: MacroEvaluator, vector: exp.Expression) -> exp.Expression:
    """The number of dimensions of a vector value."""
    if _engine(evaluator) == "duckdb":
        return exp.func("len", vector)
    return exp.func("vector_dims", vector)
