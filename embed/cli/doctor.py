"""`embed doctor`: what would go wrong, and how to fix it, before anything runs."""

from __future__ import annotations

import sys

import click

from embed.cli import Env, cli, emit, fail_cleanly


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--space", "spaces", multiple=True, metavar="NAME",
              help="Count texts over this space's token window (repeatable). Default: every declared space.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: the whole diagnosis.")
@click.pass_obj
@fail_cleanly
def doctor(env: Env, sources: tuple[str, ...], spaces: tuple[str, ...], as_json: bool) -> None:
    """Diagnose the sources and the store, read-only: step 0 of the runbook.

    Per source: live, soft-deleted, NULL and blank rows, the duplicate-content share, live rows
    without a vector, texts over each space's token window (by the space's own tokenizer where
    one loads offline, else a stated byte bound), the live column's dims against the legacy
    space, HNSW indexes (state, size). Then what would break a step: views or rules bound to
    the vector column and partitioned tables (the in-place swap renames columns), row-level
    security hiding rows from this role (a backfill would miss them), the privileges each step
    needs and which are missing (with the GRANT), and free disk against what the next steps add.

    Every finding is one line with the command or GRANT that fixes it. Texts are read only to
    count tokens; nothing is written. Exit status: 0 when no finding blocks a step (warnings
    and notes only), 1 when one does (or the diagnosis could not run).

    \b
    Example:
      embed doctor
      embed --gateway honcho doctor --space bge_m3 --json
    """
    from embed.api import doctor as run
    from embed.safety.backup import human_bytes

    cfg = env.config()
    d = run(cfg, env.url(cfg), sources=list(sources) or None, spaces=list(spaces) or None)

    def lines(d) -> list[str]:
        out = [f"doctor: database {d.database} as role {d.role}{' (superuser)' if d.superuser else ''}"]
        for name, s in d.sources.items():
            out.append(f"  {name}: {s.live} live of {s.rows} rows, {s.soft_deleted} soft-deleted, {s.null_text} NULL "
                       f"and {s.blank_text} blank texts, {s.duplicate_share:.1%} duplicate content"
                       + (f", {s.without_vector} without a vector" if s.without_vector is not None else ""))
            out += [f"    {w.space}: {w.over} over {w.max_tokens} tokens ({w.method})" for w in s.windows]
            out += [f"    index {i.relation}: " + (f"{i.name} {'valid' if i.valid else 'INVALID'}, {human_bytes(i.bytes)}"
                                                   if i.name else "no HNSW index") for i in s.indexes]
        out += [f"  {'ok     ' if p.held else 'MISSING'} {p.privilege}" + ("" if p.held else f"  -> {p.fix}")
                for p in d.privileges]
        out += [f"{f.severity.upper():<8} {f.source or '-'}: {f.message}" + (f"  -> {f.fix}" if f.fix else "")
                for f in d.findings]
        n = len(d.blocking)
        out.append(f"doctor: {n} blocking finding(s)" if n else "doctor: nothing blocks a step")
        return out

    emit(d, as_json, lines)
    if d.blocking:
        sys.exit(1)
