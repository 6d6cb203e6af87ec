"""Macros that turn the spaces and sources declared in config.yaml into view blueprints.

Names and fingerprints come from the `embed` package itself, so the views and the Python
writer can never disagree about which table holds which space. The package is imported inside
the functions: SQLMesh serializes a macro's globals, and it must record an import, not our code.
"""

from __future__ import annotations

import typing as t

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator


def _declared(evaluator: MacroEvaluator) -> tuple[dict, dict]:
    from embed.config import parse_source
    from embed.spaces import parse_space

    spaces = {n: parse_space(n, s) for n, s in (evaluator.var("embed_spaces") or {}).items()}
    sources = {n: parse_source(n, s) for n, s in (evaluator.var("embed_sources") or {}).items()}
    return spaces, sources


def _serving(evaluator: MacroEvaluator) -> dict:
    """source -> what this plan gives its views (embed.store.serving.Rendered), from `embed_serving`:
    rendered by embed from embed_store.serving; the before_all guard checks it against the database."""
    from embed.config import Config
    from embed.store import serving

    cfg = Config.from_variables({
        "embed_spaces": evaluator.var("embed_spaces"),
        "embed_sources": evaluator.var("embed_sources"),
        "embed_legacy_space": evaluator.var("embed_legacy_space"),
    })
    return serving.parse(cfg, evaluator.var("embed_serving"))


def _blueprint(source: t.Any, space: t.Any, legacy: str, columns: dict) -> exp.Tuple:
    from embed.store import SCHEMA, table_name

    values = {
        "source": source.name,
        "space": space.name,
        "dims": space.dims,
        "fp": space.fingerprint,
        "store_schema": SCHEMA,
        "store_table": table_name(source, space),
        "src_schema": source.table.split(".")[0] if "." in source.table else "public",
        "src_table": source.table.split(".")[-1],
        "id_col": source.id_column,
        "text_col": source.text_column,
        # after a Honcho in-place cutover the legacy vectors sit in a renamed column
        "vec_col": columns.get(source.name) or "",
        "is_legacy": space.name == legacy,
    }
    return exp.Tuple(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier(k), expression=exp.convert(v)) for k, v in values.items()
        ]
    )


@macro()
def embed_space_blueprints(evaluator: MacroEvaluator, kind: exp.Expression) -> exp.Array:
    """One blueprint per (source, space): kind 'legacy' for the space held in the sources' own
    vector columns, 'store' for every other space (its rows live in embed_store)."""
    spaces, sources = _declared(evaluator)
    legacy = evaluator.var("embed_legacy_space")
    columns = {name: r.legacy_column for name, r in _serving(evaluator).items()}
    want_legacy = kind.name == "legacy"
    return exp.Array(
        expressions=[
            _blueprint(src, sp, legacy, columns)
            for src in sources.values()
            for sp in spaces.values()
            if (sp.name == legacy) == want_legacy and (src.vector_column or not want_legacy)
        ]
    )


@macro()
def embed_active_blueprints(evaluator: MacroEvaluator) -> exp.Array:
    """One blueprint per source: the space its `_active` view serves, from `embed_serving`."""
    spaces, sources = _declared(evaluator)
    legacy = evaluator.var("embed_legacy_space")
    chosen = _serving(evaluator)
    by_fp = {sp.fingerprint: sp for sp in spaces.values()}
    columns = {name: r.legacy_column for name, r in chosen.items()}
    rows = []
    for src in sources.values():
        fp = chosen[src.name].fp
        if fp not in by_fp:
            raise ValueError(f"source {src.name} serves space {fp[:12]}, which config.yaml no longer declares")
        rows.append(_blueprint(src, by_fp[fp], legacy, columns))
    return exp.Array(expressions=rows)


@macro()
def embed_tenant_columns(evaluator: MacroEvaluator, source: exp.Expression, alias: exp.Expression) -> list:
    """The source's tenant columns (the filters its reads use), qualified by `alias`."""
    _, sources = _declared(evaluator)
    return [exp.column(c, table=alias.name) for c in sources[source.name].tenant_columns]


@macro()
def embed_live_filter(evaluator: MacroEvaluator, source: exp.Expression, alias: exp.Expression) -> exp.Expression:
    """The source's live-row predicate (e.g. `deleted_at IS NULL`), its columns qualified by `alias`."""
    import sqlglot

    _, sources = _declared(evaluator)
    cond = sqlglot.parse_one(sources[source.name].live_filter, dialect="postgres")
    for col in cond.find_all(exp.Column):
        col.set("table", exp.to_identifier(alias.name))
    return cond
