"""`embed gate`, `embed cutover`, `embed rollback`: what production reads, switched behind gates."""

from __future__ import annotations

import sys
from typing import Any

import click

from embed.cli import Env, cli, emit, fail_cleanly

LOCK_TIMEOUT = click.option("--lock-timeout", default=2.0, show_default=True, metavar="SECONDS",
                            help="honcho-inplace: give up (nothing changed) if Honcho's tables stay locked this long.")
SOURCE = click.option("--source", "sources", multiple=True, metavar="NAME",
                      help="Only this source (repeatable; default: every source in config.yaml).")


def _gate_lines(r: dict[str, Any]) -> list[str]:
    out = [f"gates for {r['space']} ({r['fingerprint'][:12]}): {'PASS' if r['passed'] else 'BLOCKED'}"]
    out += [f"  {'PASS' if g['passed'] else 'FAIL'}  {g['source']:<40} {g['gate']:<30} {g['measured']}" for g in r["gates"]]
    return out


@cli.command("gate")
@click.option("--space", "space_name", required=True, help="The space to check for becoming active.")
@SOURCE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def gate_cmd(env: Env, space_name: str, sources: tuple[str, ...], as_json: bool) -> None:
    """Run every blocking gate for making SPACE active now; exit 1 if any fails.

    \b
    Gates, per source (SQL in embed/gates.py, the same the SQLMesh audits and the
    before_all guard run):
      smoke              newest `embed smoke` evidence passed, endpoint class allowed
      coverage           every live row has a current vector (sync lag zero)
      shadow_fresh       an `embed shadow` run against the legacy space since the last backfill
      shadow_ndcg        labelled sources: nDCG not worse than the margin (bootstrap CI)
      shadow_ann_recall  HNSW recall vs exact search under tenant filters >= the minimum
      backup             a verified `embed backup` within embed_gates.max_backup_age_hours
      audit ...          dims and single-space audits of the space's views and store tables
    A gate whose input is missing fails. The result is recorded as a 'gate' event.
    """
    from embed.cutover import gate

    cfg = env.config()
    r = gate(cfg, env.url(cfg), space_name, list(sources) or None)
    emit(r, as_json, _gate_lines)
    sys.exit(0 if r["passed"] else 1)


def _switch_lines(r: dict[str, Any]) -> list[str]:
    out = [f"{s}: {v['from']} -> {v['to']}" for s, v in (r.get("switched") or {}).items()]
    if "seconds" in r:
        out.append(f"views switched in {r['seconds']} s ({len(r.get('views_rebuilt') or [])} view(s) rebuilt)")
    swap = r.get("swap")
    if swap:
        out.append(f"in-place swap done: exclusive lock held {swap.get('lock_ms')} ms, "
                   f"{swap.get('rows_caught_up', 0)} row(s) caught up")
    for key, val in (r.get("honcho_settings") or {}).items():
        out.append(f"  set {key}={val}" if not isinstance(val, dict) else f"  {key}: {val}")
    if r.get("staged"):
        out.append(f"staged: {r['staged']}")
    return out


@cli.command()
@click.option("--space", "space_name", required=True, help="The space production should read.")
@click.option("--mode", type=click.Choice(["view", "honcho-inplace"]), default="view", show_default=True,
              help="view: switch embed.<source>_active; honcho-inplace: swap Honcho's own vector columns.")
@click.option("--stage-only", is_flag=True,
              help="honcho-inplace: only stage the shadow columns and their HNSW indexes (ahead of time).")
@LOCK_TIMEOUT
@SOURCE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def cutover(env: Env, space_name: str, mode: str, stage_only: bool, lock_timeout: float,
            sources: tuple[str, ...], as_json: bool) -> None:
    """Make SPACE what production reads, only if every gate passes (see `embed gate`).

    \b
    --mode view            rewrites embed_active in config.yaml and runs `sqlmesh plan`;
                           config.yaml is restored if the plan fails.
    --mode honcho-inplace  for an unmodified Honcho reading documents.embedding: stages
                           SPACE's vectors into shadow columns with HNSW built CONCURRENTLY,
                           then swaps column and index names in one short transaction.
                           Pause Honcho's writers first; afterwards set the printed Honcho
                           settings (dimensions, model, endpoint) and recalibrated thresholds.
    The old vectors stay (retention window) so `embed rollback` is instant. Only one
    cutover/rollback runs at a time per database.
    """
    from embed.cutover import cutover as run

    cfg = env.config()
    r = run(cfg, env.url(cfg), space_name, mode=mode, sources=list(sources) or None,
            lock_timeout_s=lock_timeout, stage_only=stage_only)
    emit(r, as_json, _switch_lines)


@cli.command()
@LOCK_TIMEOUT
@SOURCE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def rollback(env: Env, lock_timeout: float, sources: tuple[str, ...], as_json: bool) -> None:
    """Switch back to the space the last cutover came from, in the mode it used.

    Instant while the old vectors exist (they are kept for the retention window). Rows
    written since the cutover get vectors in the old space before the switch: the legacy
    column is kept current by the application itself; a store-backed space gets one
    `embed sync` pass; a Honcho in-place column is filled by the swap-back.
    """
    from embed.cutover import rollback as run

    cfg = env.config()
    r = run(cfg, env.url(cfg), sources=list(sources) or None, lock_timeout_s=lock_timeout)
    emit(r, as_json, _switch_lines)
