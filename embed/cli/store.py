"""`embed spaces`, `embed init`, `embed history`: the declared spaces, embed_store and its event log."""

from __future__ import annotations

import click

from embed.cli import Env, cli, emit, fail_cleanly


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def spaces(env: Env, as_json: bool) -> None:
    """List declared spaces: fingerprint, dims, provider, and state in the database (if reachable).

    Changing any defining field of a spec (provider, model, revision, dims, metric,
    normalize, prefixes, max_tokens) makes a different space with its own tables.

    \b
    Example:
      embed spaces
      embed --gateway honcho --db "$EMBED_DATABASE_URL" spaces
    """
    from embed.api import list_spaces

    rows = list_spaces(env.config(), env.db)
    emit([r.as_dict() for r in rows], as_json, lambda _: [
        f"{r.name:<16} {r.fingerprint[:12]}  {r.dims:>5}d  {r.provider:<22} {r.model:<40} {r.role:<7} {r.state}"
        for r in rows
    ])


@cli.command()
@click.option("--verify-legacy", type=click.IntRange(min=0), default=64, show_default=True, metavar="N",
              help="Check N rows of the legacy column against the declared legacy space first (0: skip).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def init(env: Env, verify_legacy: int, as_json: bool) -> None:
    """Create the embed_store schema and one typed table per (source, space); idempotent.

    Also brings external_models.yaml (the SQLMesh declaration of those tables) in line with
    config.yaml. First it adopts the legacy space: N sampled rows of the legacy column must be
    what the declared legacy space makes of their text (a rollback writes its vectors there);
    a mismatch is refused with the measured cosine and the likely cause (prefix, normalization,
    model), and nothing is created. Done once per database; an embedder that cannot run here
    (a cloud endpoint not allowed) leaves it unchecked, and says so.

    \b
    Example:
      embed init
      embed --gateway honcho init --json
    """
    from embed.api import init_store

    out = init_store(env.config(), env.url(), verify_legacy=verify_legacy)

    def lines(o) -> list[str]:
        got = [f"embed_store ready: {len(o.created_tables)} table(s) created, {len(o.declared_spaces)} space(s) newly "
               "declared" + ("; external_models.yaml updated" if o.external_models_changed else "")]
        if o.legacy is not None and o.legacy.outcome == "adopted":
            got.append(f"legacy space {o.legacy.space} adopted: {o.legacy.checked} rows of its column reproduced, "
                       f"median cosine {o.legacy.median_cosine} (min {o.legacy.min_cosine})")
        elif o.legacy is not None and o.legacy.outcome.startswith("not checked"):
            got.append(f"legacy space {o.legacy.space} {o.legacy.outcome}: check it with "
                       f"`embed verify --space {o.legacy.space} --where live --sample 400` where it can run")
        return got

    emit(out, as_json, lines)


@cli.command()
@click.option("--space", "space_name", help="Only events about this space (including cutovers away from it).")
@click.option("--limit", type=click.IntRange(1), help="Only the most recent N events.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with each event's details).")
@click.pass_obj
@fail_cleanly
def history(env: Env, space_name: str | None, limit: int | None, as_json: bool) -> None:
    """The event log, oldest first: time, actor, kind, space (name + fingerprint), source, outcome, reason.

    Events carry ids, counts and hashes, never memory text.

    \b
    Example:
      embed history --space bge_m3
      embed history --limit 20 --json
    """
    from embed.api import history as run

    cfg = env.config()
    rows = run(cfg, env.url(cfg), space_name, limit)
    emit([r.as_dict() for r in rows], as_json, lambda _: [
        f"{r.at:%Y-%m-%d %H:%M:%S%z}  {r.actor:<24} {r.kind:<13} "
        f"{(r.space or '-') + (' ' + r.space_fp[:12] if r.space_fp else ''):<32} {r.source or '-':<18} "
        f"{r.outcome:<7} {r.reason or ''}".rstrip()
        for r in rows
    ] or ["no events"])
