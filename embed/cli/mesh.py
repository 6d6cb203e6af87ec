"""`embed plan`, `embed audit`: SQLMesh's views, rendered from what production reads, and their audits."""

from __future__ import annotations

import sys

import click

from embed.cli import Env, cli, emit, fail_cleanly


@cli.command()
@click.pass_obj
@fail_cleanly
def plan(env: Env) -> None:
    """Audit the store tables, then `sqlmesh plan --auto-apply` the views on prod.

    The views are rendered from what the database says production reads (embed_store.serving),
    so a plan never switches production; it also finishes the views of an in-place switch
    that stopped after its swap. A failing blocking audit stops the plan before any change.

    \b
    Example:
      embed --gateway honcho plan
    """
    from embed.api import plan as run

    cfg = env.config()
    out = run(cfg, env.url(cfg))
    click.echo(f"plan applied: {len(out.new_snapshots)} view(s) (re)built")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def audit(env: Env, as_json: bool) -> None:
    """Run every audit now (views and store tables); exit 1 unless every one ran and passed.

    An audit of a version no plan has built yet prints NOT RUN, which is not a pass: run
    `embed plan` first.

    \b
    Example:
      embed audit --json
    """
    from dataclasses import asdict

    from embed.api import audit as run

    cfg = env.config()
    results = run(cfg, env.url(cfg))
    emit([asdict(r) for r in results], as_json, lambda rs: [
        f"{r['status']:<8} {r['audit']:<20} {r['model']}"
        + (f"  ({r['count']} row(s))" if r["count"] else "") + (f"  {r['error']}" if r["error"] else "")
        for r in rs
    ])
    if not results or any(not r.passed for r in results):
        sys.exit(1)
