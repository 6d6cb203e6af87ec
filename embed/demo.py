"""`embed demo`: the whole procedure on the embedded default, one line per step with its key number.

Safe to re-run: every step is idempotent (the corpus is seeded once, init and plan converge).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from psycopg import sql

from embed import api, mesh
from embed.config import Config
from embed.database import connect, mask
from embed.localdb import LocalServer


def _step(say: Callable[[str], None], name: str, fn: Callable[[], str]) -> None:
    t0 = time.monotonic()
    line = fn()
    say(f"[{name:<6}] {line}  ({time.monotonic() - t0:.1f}s)")


def run(cfg: Config, db: str | None, *, scale: str, say: Callable[[str], None]) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def database() -> str:
        if db:
            state["url"] = db
            return f"using {mask(db)}"
        state["url"] = LocalServer.default(cfg.project).up()
        return f"embedded PostgreSQL + pgvector at {state['url']}"

    def seed() -> str:
        with connect(state["url"]) as conn:
            exists = conn.execute("SELECT to_regclass('public.documents') IS NOT NULL").fetchone()[0]
            n = conn.execute("SELECT count(*) FROM public.documents").fetchone()[0] if exists else 0
        if n > 0:
            return f"corpus already seeded ({n} documents), kept"
        out = api.seed_honcho(cfg, state["url"], scale=scale)
        c = out["counts"]
        return (
            f"seeded {c.get('documents', 0)} documents + {c.get('message_embeddings', 0)} message embeddings, "
            f"legacy vectors from {out['legacy_space']} ({out['dims']}d)"
        )

    def init() -> str:
        out = api.init_store(cfg, state["url"])
        return f"embed_store: {len(out['created_tables'])} table(s) created, {len(cfg.spaces)} spaces declared"

    def plan() -> str:
        out = mesh.plan(cfg, state["url"])
        return f"sqlmesh plan applied: {len(out['new_snapshots'])} view(s) built; audits passed"

    def query() -> str:
        return _honcho_style_query(cfg, state["url"])

    for name, fn in (("db", database), ("seed", seed), ("init", init), ("plan", plan), ("query", query)):
        _step(say, name, fn)
    return state


def _honcho_style_query(cfg: Config, url: str) -> str:
    """Run Honcho's read (tenant filters, ORDER BY distance LIMIT k) through `embed.documents_active`."""
    from embed.embedders import get_embedder

    space = cfg.active_space("documents")
    with connect(url) as conn:
        row = conn.execute(
            "SELECT text, workspace_name, observer, observed FROM embed_eval.queries ORDER BY qid LIMIT 1"
        ).fetchone()
        embedder = get_embedder(space)
        try:
            qvec = embedder.embed([row[0]], "query").vectors[0]
        finally:
            embedder.close()
        t0 = time.perf_counter()
        ids = conn.execute(
            sql.SQL(
                "SELECT source_id FROM embed.documents_active "
                "WHERE workspace_name = %s AND observer = %s AND observed = %s "
                "ORDER BY embedding OPERATOR(public.<=>) %s LIMIT 10"
            ),
            (row[1], row[2], row[3], qvec),
        ).fetchall()
        ms = (time.perf_counter() - t0) * 1000
    return f"Honcho-style top-10 through embed.documents_active ({space.name}): {len(ids)} ids in {ms:.1f} ms"
