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

    \b
    Starts the embedded server (and a private redis-server when the machine has one), seeds
    the Honcho-shaped PL/EN corpus with legacy vectors from the English-only MiniLM, then:
      backup -> smoke -> backfill e5-small -> sync under a live writer -> shadow (HTML)
      -> gate (blocked by the writer's lag, then passing) -> cutover dry run -> cutover
      -> Honcho-style query
      -> rollback -> cutover -> retire dry-run -> evidence bundle.
    BGE-M3 joins as a second candidate when $EMBED_BGE_M3_PATH holds its weights. The demo
    works on a copy of the project (<home>/demo/project), so your config.yaml is untouched.
    Re-running it is safe: it rolls back first and replays the procedure. The demo stops its
    redis-server at the end; its last line says what is still running (the embedded
    PostgreSQL: `embed db down` stops it).

    \b
    Example:
      embed demo --scale tiny
      embed demo
    """
    from embed import demo as demo_mod

    cfg = env.config()
    demo_mod.run(cfg, env.db, scale=scale, say=click.echo)
