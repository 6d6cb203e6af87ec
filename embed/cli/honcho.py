"""`embed honcho ...`: the Honcho-shaped source (schema + synthetic PL/EN corpus) for demos and tests."""

from __future__ import annotations

import click

from embed.cli import Env, cli, emit, fail_cleanly


@cli.group()
def honcho() -> None:
    """Honcho-shaped source tables: create them and fill them with a synthetic PL/EN corpus.

    \b
    Example:
      embed honcho seed --scale tiny
    """


@honcho.command("seed")
@click.option("--scale", type=click.Choice(["tiny", "small", "honcho"]), default="small", show_default=True,
              help="'tiny' is 300 rows, 'small' a few thousand; 'honcho' is ~26k documents + ~14k message embeddings.")
@click.option("--seed", "seed_value", type=int, default=7, show_default=True,
              help="Corpus RNG seed: the same seed gives the same rows, byte for byte.")
@click.option("--dims", type=click.IntRange(1, 2000), default=None,
              help="Dimension of the legacy `embedding` columns (default: the legacy space's dims).")
@click.option("--vectors/--no-vectors", default=True, show_default=True,
              help="Fill the legacy columns by embedding the corpus with the gateway's legacy space.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def seed(env: Env, scale: str, seed_value: int, dims: int | None, vectors: bool, as_json: bool) -> None:
    """Create Honcho's tables (documents, message_embeddings, ...) and load a seeded corpus.

    Refuses a database whose documents table already has rows. The labelled query set (PL and
    EN queries with known relevant documents, cross-lingual pairs included) goes to schema
    embed_eval.

    \b
    Example:
      embed honcho seed --scale tiny
      embed honcho seed --scale honcho --seed 7 --no-vectors
    """
    from embed.api import seed_honcho
    from embed.honcho.synthetic.seed import EVAL_SCHEMA

    cfg = env.config()
    out = seed_honcho(cfg, env.url(cfg), scale=scale, seed=seed_value, dims=dims, vectors=vectors)
    emit(out, as_json, lambda o: [
        f"seeded {o.counts.get('documents', 0)} documents, {o.counts.get('message_embeddings', 0)} "
        f"message embeddings, {o.counts.get(f'{EVAL_SCHEMA}.queries', 0)} labelled queries "
        f"(legacy vectors: {o.legacy_space or 'none'}, {o.dims}d) in {o.seconds}s"
    ])
