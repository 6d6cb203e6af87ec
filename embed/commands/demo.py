"""`embed demo`: the migration end to end on the embedded default."""

from __future__ import annotations

import click

from embed.cli import Env, cli, fail_cleanly


@cli.command()
@click.option("--scale", type=click.Choice(["tiny", "small", "honcho"]), default="small", show_default=True,
              help="Corpus size: 'tiny' (300 rows) is a quick look, 'small' runs in minutes on 2 cores, 'honcho' is ~40k rows.")
@click.pass_obj
@fail_cleanly
def demo(env: Env, scale: str) -> None:
    """Run the whole procedure on the embedded PostgreSQL (or --db), printing one line per step.

    Starts the embedded server, seeds the Honcho-shaped PL/EN corpus with legacy vectors from an
    offline model, creates the store, plans the SQLMesh views behind their audits and runs a
    Honcho-style query through the active view. Re-running it is safe.
    """
    from embed import demo as demo_mod

    cfg = env.config()
    demo_mod.run(cfg, env.db, scale=scale, say=click.echo)
    click.echo("demo finished: `embed spaces` lists the spaces, `embed audit` re-checks every gate")
