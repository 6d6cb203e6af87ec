"""`embed retire`, `embed pin`, `embed unpin`: delayed deletion of a space's vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from embed.cli import Env, cli, emit, fail_cleanly
from embed.errors import Blocked

if TYPE_CHECKING:
    from embed.safety.retire import RetirePlan


def _size(n: int) -> str:
    from embed.safety.backup import human_bytes

    return human_bytes(n)


def _plan_lines(p: RetirePlan) -> list[str]:
    out = [f"retire {p.space} ({p.fingerprint[:12]}), state {p.state or '-'}: inactive since "
           f"{p.inactive_since or '-'} ({p.inactive_since_what}), retention {p.retention_days} day(s)"]
    for i, t in enumerate(p.targets, 1):  # in the order retire runs them, as every --dry-run prints them
        extra = f" (+{_size(t.bytes_after_rewrite)} of column data at the next table rewrite)" if t.kind == "column" else ""
        out.append(f"  {i}. [{t.lock}] once: {t.statement().as_string(None)}; frees {_size(t.bytes)}{extra}")
    if not p.targets:
        out.append("  nothing to drop")
    out.append(f"  total: {_size(p.bytes)} freed now"
               + (f", {_size(p.bytes_after_rewrite)} after a rewrite" if p.bytes_after_rewrite else ""))
    if p.backup:
        out.append(f"  backup: #{p.backup.id} at {p.backup.at} in {p.backup.path}")
    out += [f"  blocked: {b}" for b in p.blockers]
    return out


@cli.command()
@click.option("--space", "space_name", required=True, help="Space to retire (name, or <name>_<fp8> for an old spec).")
@click.option("--dry-run", is_flag=True, help="Show what would be dropped and the space freed; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def retire(env: Env, space_name: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Drop a space's store tables (and a Honcho in-place cutover's old vector column).

    Allowed only when the space serves no source, is not the legacy space still held in the
    sources' own columns, its retention window (embed_retention.days, default 14) has passed
    since it stopped being active, it is not pinned, and a verified backup taken after that
    holds every table touched. One DROP per object, each logged as a 'retire' event.

    \b
    Example:
      embed retire --space openai_3_small --dry-run
      embed retire --space openai_3_small
    """
    from embed.api import retire as run
    from embed.api import retire_plan

    cfg = env.config()
    url = env.url(cfg)
    if dry_run:
        plan = retire_plan(cfg, url, space_name)
        emit(plan, as_json, _plan_lines)
        if plan.blockers:
            raise Blocked(f"cannot retire {plan.space}: {plan.blockers[0]}")
        return

    def confirm(plan: RetirePlan) -> bool:
        if yes:
            return True
        for line in _plan_lines(plan):
            click.echo(line, err=as_json)
        return click.confirm(f"Drop {len(plan.targets)} object(s) of space {plan.space} for good?", err=as_json)

    res = run(cfg, url, space_name, confirm=confirm)
    emit(res, as_json, lambda r: [f"retired {r.plan.space} ({r.plan.fingerprint[:12]}): dropped "
                                  f"{len(r.dropped)} object(s), {_size(r.plan.bytes)} freed"])


@cli.command()
@click.option("--space", "space_name", required=True, help="Space whose vectors must be kept.")
@click.option("--reason", required=True, help="Why (shown in every refusal and in `embed history`).")
@click.pass_obj
@fail_cleanly
def pin(env: Env, space_name: str, reason: str) -> None:
    """Keep a space's vectors past retention: `embed retire` refuses a pinned space.

    \b
    Example:
      embed pin --space openai_3_small --reason "keep until the Q3 review"
    """
    from embed.api import pin as run

    cfg = env.config()
    r = run(cfg, env.url(cfg), space_name, reason)
    click.echo(f"pinned {r.space} ({r.fingerprint[:12]}): {r.reason}")


@cli.command()
@click.option("--space", "space_name", required=True, help="Space to release.")
@click.pass_obj
@fail_cleanly
def unpin(env: Env, space_name: str) -> None:
    """Release a pin (retire's other conditions still apply).

    \b
    Example:
      embed unpin --space openai_3_small
    """
    from embed.api import unpin as run

    cfg = env.config()
    r = run(cfg, env.url(cfg), space_name)
    click.echo(f"unpinned {r.space} ({r.fingerprint[:12]})")
