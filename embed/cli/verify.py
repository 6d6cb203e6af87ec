"""`embed verify`: what a vector column really holds, measured against the space (embed.verify)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from embed.cli import Env, cli, emit, fail_cleanly
from embed.errors import Blocked

if TYPE_CHECKING:
    from embed.verify import Verified


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def _lines(v: Verified) -> list[str]:
    out = []
    for c in v.locations:
        cos = (f"cosine min {c.min_cosine:.4f} / p1 {c.p1_cosine:.4f} / median {c.median_cosine:.4f}"
               if c.min_cosine is not None else "nothing to compare")
        head = "OK " if c.passed else "BAD"
        out.append(f"{head} {c.source} {c.kind} {c.location}: {c.checked} checked ({c.from_store} against the store, "
                   f"{c.embedded} embedded), {cos}; {c.offenders} below {c.tolerance}, contaminated <= "
                   f"{_pct(c.contaminated_upper_95)} (95 %)"
                   + (f"; {c.without_vector} without a vector" if c.without_vector else "")
                   + (f"; {c.repaired} repaired" if c.repaired else ""))
        if c.offender_ids:
            shown = ", ".join(c.offender_ids[:20])
            out.append(f"    offending ids: {shown}" + (f" (+{len(c.offender_ids) - 20} more)" if len(c.offender_ids) > 20 else ""))
    if not v.locations:
        out.append(f"verify {v.space}: nothing to check")
    if v.rollback and not all(c.repaired >= c.offenders for c in v.locations):
        out.append(f"production reads these vectors: repair them (embed verify --space {v.space} --repair) "
                   f"or go back: {v.rollback}")
    return out


def _prometheus(v: Verified, path: Path) -> None:
    """A node_exporter textfile: offenders per (space, source, location kind), written atomically."""
    from embed.db.files import write_atomic

    lines = ["# HELP embed_verify_offenders vectors below the space's verify tolerance after the last check "
             "(and its repair)", "# TYPE embed_verify_offenders gauge"]
    lines += [f'embed_verify_offenders{{space="{v.space}",source="{c.source}",kind="{c.kind}"}} '
              f'{max(0, c.offenders - c.repaired)}' for c in v.locations]
    write_atomic(path, "\n".join(lines) + "\n")


@cli.command()
@click.option("--space", "space_name", required=True, metavar="NAME", help="The space the vectors must belong to.")
@click.option("--source", default=None, metavar="NAME", help="One source (default: every source).")
@click.option("--where", default=None, metavar="WHERE",
              help="store | live | column=NAME | endpoint=URL (default: where the space lives now).")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Check N random rows per source (default: every row).")
@click.option("--watch", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Every SECONDS, check the rows written since the last pass in the column the space lives in.")
@click.option("--repair", is_flag=True, help="Replace offending vectors with the space's own (short batches).")
@click.option("--compare", "other", default=None, metavar="OTHER",
              help="Instead: per-text cosine of SPACE vs the declared space OTHER (sentinels + --sample rows, "
                   "documents and queries), recorded: what `compatible_with: [OTHER]` on SPACE rests on.")
@click.option("--prometheus", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Also write a Prometheus textfile (node_exporter) with the offender counts.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one line per pass with --watch).")
@click.pass_obj
@fail_cleanly
def verify(env: Env, space_name: str, source: str | None, where: str | None, sample: int | None,
           watch: float | None, repair: bool, other: str | None, prometheus: Path | None, as_json: bool) -> None:
    """Prove that vectors claimed to be SPACE's really are: compare each row's vector with the
    space's own vector for the row's current content (the store's, no model call, where the
    content was stored; else a fresh embedding). Rows below the space's `verify_tolerance`
    (default 0.999) are offenders: their ids are printed (never text) with min / p1 / median
    cosine and a 95 % upper bound on the contaminated share; exit status 1 on any.

    \b
    Where to run it:
      at adoption       embed verify --space LEGACY --where live --sample 400
      before the swap   embed verify --space S --where endpoint=http://server/v1 --sample 200
      after the swap    embed verify --space S --watch 60 --json   (in a timer, or in `embed sync`)
      after a rollback  embed verify --space LEGACY --sample 400
      two providers     embed verify --space bge_m3 --compare bge_m3_ollama
    A violation in the live column is recorded as an event, turns `embed status` and
    `embed gate` red, and prints the rollback command; `--repair` replaces the offenders.
    """
    from embed import api

    cfg = env.config()
    url = env.url(cfg)
    if other is not None:
        cmp = api.verify_compare(cfg, url, space_name, other, sample=sample or 64)
        emit(cmp, as_json, lambda c: [
            f"{'OK ' if c.passed else 'BAD'} {c.space} vs {c.other}: {c.checked} text x kind checked, cosine min "
            f"{c.min_cosine:.4f} / p1 {c.p1_cosine:.4f} / median {c.median_cosine:.4f}; {c.offenders} below "
            f"{c.tolerance} (event #{c.event})",
            f"  {c.other} may serve {c.space} (declare compatible_with: [{c.other}] on {c.space})" if c.passed else
            f"  {c.other} does not reproduce {c.space}: its queries are refused against {c.space}"])
        if not cmp.passed:
            raise Blocked(f"{cmp.other} does not reproduce {cmp.space}: {cmp.offenders} of {cmp.checked} below "
                          f"{cmp.tolerance} (min cosine {cmp.min_cosine})")
        return
    if watch is not None:
        from embed.cli.fill import _stop_on_signals

        def on_pass(v: Verified, passes: int) -> None:
            if as_json:
                click.echo(json.dumps({**v.as_dict(), "passes": passes}, default=str))
            else:
                for line in _lines(v):
                    click.echo(line)
            if prometheus:
                _prometheus(v, prometheus)
            if not v.passed:
                stop.set()  # a violation ends the watch with exit status 1, for its supervisor to see

        with _stop_on_signals() as stop:
            last, _ = api.verify_watch(cfg, url, space_name, watch, source=source, stop=stop, on_pass=on_pass)
        _fail(last)
        return
    res = api.verify(cfg, url, space_name, source=source, where=where, sample=sample, repair=repair)
    emit(res, as_json, _lines)
    if prometheus:
        _prometheus(res, prometheus)
    if not (repair and all(c.repaired >= c.offenders for c in res.locations)):
        _fail(res)


def _fail(v: Verified) -> None:
    """Exit 1 with one `embed: error:` line when any location holds offenders."""
    if not v.passed:
        raise Blocked(f"{v.offenders} vector(s) at {len([c for c in v.locations if c.offenders])} location(s) are "
                      f"not space {v.space}'s (ids above)" + (f"; or go back: {v.rollback}" if v.rollback else ""))
