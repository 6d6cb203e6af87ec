"""`embed gate`, `embed cutover`, `embed rollback`, `embed fill-column`: what production reads,
switched behind gates."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from embed.cli import Env, cli, emit, fail_cleanly

if TYPE_CHECKING:
    from embed.cutover.switch import GateResult, SwitchResult

LOCK_TIMEOUT = click.option("--lock-timeout", default=2.0, show_default=True, metavar="SECONDS",
                            help="honcho-inplace: give up (nothing changed) if Honcho's tables stay locked this long.")
SOURCE = click.option("--source", "sources", multiple=True, metavar="NAME",
                      help="Only this source (repeatable; default: every source in config.yaml).")


WRITERS_STOPPED = click.option("--writers-stopped", is_flag=True,
                               help="honcho-inplace: you stopped Honcho's API and deriver; the swap still refuses "
                                    "if a source table was written to meanwhile.")
ALLOW_LIVE = click.option("--allow-live-writers", is_flag=True,
                          help="honcho-inplace: swap while other sessions write (their rows are caught up in the "
                               "lock or left pending for Honcho's reconciler).")
DRY_RUN = click.option("--dry-run", is_flag=True,
                       help="Print the rows affected, every statement in order with its lock, the estimated time "
                            "and storage, and (cutover) the gates failing now; change nothing, take no lock.")
SETTINGS_OUT = click.option("--settings-out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                            help="honcho-inplace: also write the Honcho .env block to FILE (mode 0600).")


def switch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a cutover and a rollback both take: the writers check, the settings file, the lock
    timeout, the sources, --json; then the Env and the one-line error handling."""
    for option in (fail_cleanly, click.pass_obj, click.option("--json", "as_json", is_flag=True,
                   help="Machine-readable output."), DRY_RUN, SOURCE, LOCK_TIMEOUT, SETTINGS_OUT, ALLOW_LIVE,
                   WRITERS_STOPPED):
        fn = option(fn)
    return fn


def _policy(writers_stopped: bool, allow_live_writers: bool) -> str:
    from embed.cutover import writers

    if writers_stopped and allow_live_writers:
        raise click.UsageError("--writers-stopped and --allow-live-writers contradict each other")
    return writers.STOPPED if writers_stopped else writers.ALLOW if allow_live_writers else writers.CHECK


def _gate_lines(r: GateResult) -> list[str]:
    out = [f"gates for {r.space} ({r.fingerprint[:12]}): {'PASS' if r.passed else 'BLOCKED'}"]
    out += [f"  {g.status:<8} {g.source:<40} {g.gate:<30} {g.measured}" for g in r.gates]
    if r.ahead:
        out.append(f"views: {r.ahead}")
    return out


@cli.command("gate")
@click.option("--space", "space_name", required=True, help="The space to check for becoming active.")
@SOURCE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def gate_cmd(env: Env, space_name: str, sources: tuple[str, ...], as_json: bool) -> None:
    """Run every blocking gate for making SPACE active now; exit 1 if any fails or did not run.

    \b
    Gates, per source (SQL in embed/gates.py, the same the SQLMesh audits and the
    before_all guard run):
      smoke              newest `embed smoke` evidence passed, endpoint class allowed
      coverage           every live row has a current vector (sync lag zero)
      no_orphans         no stored vector of a deleted or soft-deleted row
      shadow_fresh       an `embed shadow` run against the legacy space since the last backfill
      shadow_ndcg        labelled sources: nDCG not worse than the margin (bootstrap CI)
      shadow_ann_recall  HNSW recall vs exact search under tenant filters >= the minimum
      backup             a verified `embed backup` within embed_gates.max_backup_age_hours
      verify             the newest `embed verify` of the space found no vector of another space
      audit ...          dims and single-space audits of the space's views and store tables
    A gate whose input is missing fails; an audit that could not run says NOT RUN, which
    blocks like a failure. The result is recorded as a 'gate' event.

    \b
    Example:
      embed gate --space bge_m3 --json
    """
    from embed.api import gate

    cfg = env.config()
    r = gate(cfg, env.url(cfg), space_name, list(sources) or None)
    emit(r, as_json, _gate_lines)
    sys.exit(0 if r.passed else 1)


def _switch_lines(r: SwitchResult) -> list[str]:
    if r.outcome == "already":
        spaces = sorted({b for _, b in r.switched.values()})
        return [f"already on {', '.join(spaces)}: production reads it and the views serve it; nothing to do"]
    out = [f"{s}: {a} -> {b}" for s, (a, b) in r.switched.items()] if r.outcome == "switched" else [
        f"finished: {', '.join(sorted({b for _, b in r.switched.values()}))} (an interrupted {r.kind} completed)"]
    if r.writers and r.writers.sessions:
        out.append(f"other sessions at the swap: {r.writers.describe()}")
    if r.swap:
        out.append(f"in-place swap done: exclusive lock held {r.swap['lock_ms']} ms, "
                   f"{r.swap['rows_caught_up']} row(s) caught up, {r.swap['rows_marked_pending']} left pending")
        if r.swap["rows_without_vector"]:
            out.append(f"{r.swap['rows_without_vector']} live row(s) have no vector yet: `embed fill-column --space "
                       f"{r.swap['space']}` embeds them now (Honcho's reconciler would, once restarted)")
    for s, n in r.caught_up.items():
        out.append(f"{s}: {n} row(s) written since the cutover embedded before the switch")
    out.append(f"views: {len(r.views_rebuilt)} rebuilt in {r.seconds} s")
    if r.honcho:
        out += ["", "Restart Honcho's API and deriver with these settings:", r.honcho.env_block().rstrip()]
    return out


def _deliver(r: SwitchResult, settings_out: Path | None) -> None:
    if settings_out is not None and r.honcho is not None:
        from embed.db.files import write_atomic

        write_atomic(settings_out, r.honcho.env_block())


@cli.command()
@click.option("--space", "space_name", required=True, help="The space production should read.")
@click.option("--mode", type=click.Choice(["view", "honcho-inplace"]), default="view", show_default=True,
              help="view: switch embed.<source>_active; honcho-inplace: swap Honcho's own vector columns.")
@click.option("--stage-only", is_flag=True,
              help="honcho-inplace: only stage the shadow columns and their HNSW indexes (ahead of time).")
@click.option("--progress", "progress_fmt", type=click.Choice(["auto", "json", "none"]), default="auto",
              show_default=True, help="honcho-inplace staging, per batch on stderr: auto (a bar on a terminal, "
                                      "nothing in a log), json (one JSON object per line), none.")
@switch_options
def cutover(env: Env, space_name: str, mode: str, stage_only: bool, progress_fmt: str, writers_stopped: bool,
            allow_live_writers: bool, settings_out: Path | None, lock_timeout: float, sources: tuple[str, ...],
            dry_run: bool, as_json: bool) -> None:
    """Make SPACE what production reads, only if every gate passes (see `embed gate`).

    \b
    --mode view            one `sqlmesh plan` points embed.<source>_active at SPACE.
    --mode honcho-inplace  for an unmodified Honcho reading documents.embedding: stages
                           SPACE's vectors into shadow columns with HNSW built CONCURRENTLY,
                           then swaps column and index names in one short transaction that
                           also records the switch. Staged ahead (--stage-only), it goes
                           straight to the swap, which catches up only the rows written since.
                           Stop Honcho's API and deriver first (--writers-stopped), restart
                           them with the printed settings.
    The views' plan is built before anything changes. Run twice, it finishes what a crash
    left (views, settings) or says `already on SPACE`. The old vectors stay (retention
    window) so `embed rollback` is instant. One cutover/rollback at a time per database.

    \b
    Example:
      embed cutover --space bge_m3 --mode honcho-inplace --dry-run
      embed cutover --space bge_m3 --mode honcho-inplace --writers-stopped --settings-out honcho.env
    """
    from embed.api import cutover as run

    cfg = env.config()
    if dry_run:
        from embed.api import switch_preview

        p = switch_preview(cfg, env.url(cfg), "cutover", space_name, mode=mode, sources=list(sources) or None)
        emit(p, as_json, lambda o: o.lines())
        return
    policy = _policy(writers_stopped, allow_live_writers)
    r = _run_switch(lambda: run(cfg, env.url(cfg), space_name, mode=mode, sources=list(sources) or None,
                                lock_timeout_s=lock_timeout, stage_only=stage_only, writers_policy=policy,
                                progress=progress_fmt if progress_fmt != "auto" or sys.stderr.isatty() else "none"),
                    # a log keeps only the result, unless it asks for JSON events
                    settings_out)
    if stage_only:
        emit(r, as_json, lambda o: [line for n, s in o.sources.items() for line in (
            f"staged {n}: {s.rows_staged} row(s) in {s.column}, {s.rows_missing} missing, index {s.index.name}",
            f"  {s.size_line()}")])
        return
    _deliver(r, settings_out)
    emit(r, as_json, _switch_lines)


def _run_switch(fn: Callable[[], Any], settings_out: Path | None) -> Any:
    """Run a switch; when it failed after production was switched, print the settings Honcho
    needs now (and write them) before the one-line error."""
    from embed.errors import SwitchIncomplete

    try:
        return fn()
    except SwitchIncomplete as e:
        if e.honcho is not None:
            if settings_out is not None:
                from embed.db.files import write_atomic

                write_atomic(settings_out, e.honcho.env_block())
            click.echo(e.honcho.env_block().rstrip())
        raise


@cli.command()
@switch_options
def rollback(env: Env, writers_stopped: bool, allow_live_writers: bool, settings_out: Path | None,
             lock_timeout: float, sources: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Switch back to what production read before the last cutover, in the mode it used.

    Instant while the old vectors exist (they are kept for the retention window). Rows
    written since the cutover get vectors in the old space before the switch: the legacy
    column is kept current by the application itself; a store-backed space gets one
    `embed sync` pass; a Honcho in-place column is filled by the swap-back. Idempotent:
    run again, it says `already on X` (or finishes what a crash left). Going forward again
    is `embed cutover`, with its gates.

    \b
    Example:
      embed rollback --dry-run
      embed rollback --writers-stopped --settings-out honcho.env
    """
    from embed.api import rollback as run

    cfg = env.config()
    if dry_run:
        from embed.api import switch_preview

        emit(switch_preview(cfg, env.url(cfg), "rollback", sources=list(sources) or None), as_json, lambda o: o.lines())
        return
    policy = _policy(writers_stopped, allow_live_writers)
    r = _run_switch(lambda: run(cfg, env.url(cfg), sources=list(sources) or None, lock_timeout_s=lock_timeout,
                                writers_policy=policy), settings_out)
    _deliver(r, settings_out)
    emit(r, as_json, _switch_lines)


@cli.command("fill-column")
@click.option("--space", "space_name", required=True, help="The space whose in-place column to fill.")
@SOURCE
@click.option("--no-embed", is_flag=True, help="Only copy vectors the space's store already holds (no model call).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def fill_column(env: Env, space_name: str, sources: tuple[str, ...], no_embed: bool, as_json: bool) -> None:
    """Give the live rows of Honcho's columns their vector in SPACE where it is missing or stale.

    For the live column (the space Honcho reads now): rows whose vector is NULL (written
    between a swap's fill and its lock, left 'pending') get the store's vector for their
    current text and become 'synced'; vectors Honcho wrote are never overwritten. For a
    tagged column (a staged or kept space): stale values are replaced or cleared. First one
    `embed sync` pass of SPACE embeds, with SPACE's own model, what its store lacks. Safe to
    run twice: a second run fills nothing.

    \b
    Example:
      embed fill-column --space openai_3_small
    """
    from embed.api import fill_column as run

    cfg = env.config()
    r = run(cfg, env.url(cfg), space_name, sources=list(sources) or None, embed_missing=not no_embed)
    emit(r, as_json, lambda o: [f"{n}: {s.rows_filled} filled, {s.rows_cleared} cleared in {s.column}; "
                                f"{s.rows_without_vector} live row(s) still without a vector"
                                for n, s in o.sources.items()])
