"""`embed backfill`, `embed sync`, `embed status`: thin wrappers over embed.fill.backfill/sync/status."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from embed.cli import Env, cli, emit, fail_cleanly
from embed.errors import Blocked

if TYPE_CHECKING:
    from embed.fill.backfill import PassResult
    from embed.fill.status import Status


PROGRESS = click.option(
    "--progress", "progress_fmt", type=click.Choice(["auto", "json", "none"]), default="auto", show_default=True,
    help="On stderr, per batch: auto (a bar with rows/s and ETA on a terminal, else a plain line at once and "
         "every 10 s), json (one JSON object per line: start, one per batch, end), none.")


def _progress(fmt: str, no_progress: bool) -> str:
    return "none" if no_progress else fmt


def _sources(value: str) -> list[str] | None:
    return None if value == "all" else [value]


def _summary_lines(out: PassResult) -> list[str]:
    lines = []
    for name, s in out.sources.items():
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items())) or "none"
        state = "complete" if s["complete"] else "interrupted" if s["interrupted"] else (
            "limited" if s["limited"] else "in progress elsewhere")
        idx = s.get("index") or {}
        lines.append(
            f"{out.kind} {name}/{out.space}: {s['rows_written']} rows written "
            f"({s['rows_embedded']} embedded, {s['rows_reused']} reused), skipped {skipped}, "
            f"{s['truncated']} truncated, {s['seconds']}s, {s['rows_per_s']} rows/s, {state}"
            + (f", index {idx.get('state')}" if idx else "")
            + (f", {s['store_rows_deleted']} vectors of deleted rows removed" if "store_rows_deleted" in s else "")
            + (f", lag {s['lag']['rows_pending']} pending" if "lag" in s else "")
        )
        v = s.get("verify")
        if v and v["offenders"]:
            lines.append(f"  BAD {name}: {v['offenders']} of {v['checked']} row(s) written since the cutover hold another "
                         f"space's vectors in {v['location']} (ids: {', '.join(v['offender_ids'][:20])}): "
                         f"`embed verify --space {out.space} --repair`, or `embed rollback --writers-stopped`")
    return lines


def _offenders(out: PassResult) -> int:
    """Rows the pass's watch (embed verify) found holding another space's vectors."""
    return sum((s.get("verify") or {}).get("offenders", 0) for s in out.sources.values())


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event instead of killing mid-batch: the pass stops between
    batches (a second signal interrupts at once). The previous handlers come back after."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(f"embed: {signal.Signals(signum).name} received, stopping after the current batch", err=True)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@cli.command()
@click.option("--space", required=True, metavar="NAME", help="The space to fill (a declared space name).")
@click.option("--source", "source", default="all", show_default=True, metavar="NAME|all",
              help="Which source to fill: a declared source name, or all of them.")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Stop after this many pending rows (a trial run); rerun to continue.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent embed calls (helps HTTP endpoints; an in-process model runs one at a time).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Rows per claimed chunk (the model gets them in its own batches).")
@PROGRESS
@click.option("--no-progress", is_flag=True, help="No progress output on stderr (--progress none).")
@click.option("--dry-run", is_flag=True,
              help="Print the rows, statements (with locks), estimated time, storage and cost; change nothing.")
@click.option("--budget-usd", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="For a space that declares price_per_mtok: refuse when the preview costs more, and stop "
                   "before the batch that would pass it (batches written are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_obj
@fail_cleanly
def backfill(env: Env, space: str, source: str, limit: int | None, workers: int, chunk_rows: int,
             progress_fmt: str, no_progress: bool, dry_run: bool, budget_usd: float | None, as_json: bool) -> None:
    """Embed every live source row that lacks a current vector in SPACE and store it (binary COPY).

    Identical content is embedded once; blank or rejected rows are recorded in
    embed_store.skipped and reported. Safe to kill at any moment and to run in several
    processes at once: a rerun picks up exactly what is missing. Builds the HNSW index when
    the table is complete.

    \b
    Example:
      embed backfill --space bge_m3 --source all --json
      embed backfill --space bge_m3_ollama --workers 4
      embed backfill --space e5_small --source documents --limit 1000
      embed backfill --space bge_m3 --progress json 2> progress.jsonl
      embed backfill --space openai_3_large --dry-run --budget-usd 5
    """
    from embed.api import backfill as run
    from embed.api import backfill_preview

    cfg = env.config()
    if dry_run or budget_usd is not None:  # the preview refuses above the budget, before anything runs
        preview = backfill_preview(cfg, env.url(cfg), space, sources=_sources(source), budget_usd=budget_usd)
        if dry_run:
            emit(preview, as_json, lambda p: p.lines())
            return
    with _stop_on_signals() as stop:
        out = run(cfg, env.url(cfg), space, sources=_sources(source), limit=limit, workers=workers,
                  chunk_rows=chunk_rows, progress=_progress(progress_fmt, no_progress), stop=stop,
                  budget_usd=budget_usd)
    emit(out, as_json, _summary_lines)
    if out.interrupted:
        sys.exit(130)


@cli.command()
@click.option("--space", required=True, metavar="NAME", help="The space to bring in step with the source.")
@click.option("--source", "source", default="all", show_default=True, metavar="NAME|all")
@click.option("--watch", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Repeat every SECONDS until interrupted (SIGINT/SIGTERM end it cleanly).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True)
@PROGRESS
@click.option("--no-progress", is_flag=True, help="No progress output on stderr (--progress none).")
@click.option("--json", "as_json", is_flag=True, help="JSON summary per pass on stdout (one object per line with --watch).")
@click.pass_obj
@fail_cleanly
def sync(env: Env, space: str, source: str, watch: float | None, workers: int, chunk_rows: int,
         progress_fmt: str, no_progress: bool, as_json: bool) -> None:
    """Embed rows added or edited since, delete vectors of deleted/soft-deleted rows, report the lag.

    The production space is untouched; this only maintains SPACE's store tables. After an in-place
    cutover to SPACE each pass also checks the rows written since in Honcho's column (embed
    verify's watch): rows holding another space's vectors are printed by id, recorded, turn
    `embed status` and `embed gate` red, and end the command with exit status 1.

    \b
    Example:
      embed sync --space bge_m3 --watch 60
      embed sync --space bge_m3 --source message_embeddings --json
    """
    import json

    from embed.api import sync as run

    cfg = env.config()

    def on_pass(out: PassResult, passes: int) -> None:
        if watch is None:
            return
        if as_json:
            click.echo(json.dumps({**out.as_dict(), "passes": passes}, default=str))
        else:
            for line in _summary_lines(out):
                click.echo(line)
        if _offenders(out):
            stop.set()  # production's column holds another space's vectors: stop, exit 1

    with _stop_on_signals() as stop:
        out, passes = run(cfg, env.url(cfg), space, sources=_sources(source), watch=watch, stop=stop,
                          on_pass=on_pass, workers=workers, chunk_rows=chunk_rows,
                          progress=_progress(progress_fmt, no_progress))
    if watch is None:
        emit(out, as_json, _summary_lines)
    elif not as_json:
        click.echo(f"sync stopped after {passes} pass(es)")
    if _offenders(out):
        raise Blocked(f"{_offenders(out)} row(s) written since the cutover hold another space's vectors (ids above): "
                      f"`embed verify --space {space} --repair`, or `embed rollback --writers-stopped`")


def _status_lines(out: Status) -> list[str]:
    lines = []
    for name, st in out.serving.items():
        lines.append(f"{name}: production reads {st.reads} ({st.mode}), views serve {st.views}"
                     + (f", rollback goes to {st.rollback_to}" if st.rollback_to else ""))
        if st.next:
            lines.append(f"  next: {st.next}")
        if st.verify:
            lines.append(f"  RED: {st.verify}")
        lines += [f"  next for {step.line()}" for step in out.next.get(name, ())]
    for p in out.pairs:
        if p.note is not None or p.totals is None:
            lines.append(f"{p.source:<20} {p.space:<16} {p.note}")
            continue
        c = p.totals
        head = (
            f"{p.source:<20} {p.space:<16} {p.kind:<6} {c.coverage_pct:6.2f}%  "
            + (f"{p.column}{' (live)' if p.live else ''}  " if p.kind == "column" else "")
            + f"live {c.live_rows}  current {c.current}  stale {c.stale}  pending {c.pending}  "
            f"skipped {c.skipped}  [{p.state}]"
        )
        if p.store is not None:
            run = p.store.last_run
            head += f"  orphans {p.store.orphans}  index {p.store.index['hnsw']}"
            head += f"  last run #{run.id} {run.kind} {run.status}" if run else "  no run yet"
        lines.append(head)
    for block in out.honcho_settings:
        lines += ["", "Honcho's columns hold a space it has not been set up for; restart its API and deriver with:",
                  block.rstrip()]
    return lines


@cli.command()
@click.option("--space", "spaces", multiple=True, metavar="NAME", help="Only these spaces (repeatable).")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only these sources (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (per-workspace coverage included).")
@click.pass_obj
@fail_cleanly
def status(env: Env, spaces: tuple[str, ...], sources: tuple[str, ...], as_json: bool) -> None:
    """What production reads, and coverage per source and space.

    First, per source: the space production reads (from the database), what the views serve,
    where a rollback goes, and the command that settles an interrupted switch; then the next
    command for each space that is not yet production's: `embed init`, `embed backfill`,
    `embed sync` (N rows behind), the fix of the first failing gate (smoke, shadow, backup,
    verify), or "ready: `embed gate --space S`" (in --json: `next`, per source). Then per source
    and space: live rows vs current vectors, stale, pending, skipped, last run, HNSW index
    (per workspace with --json). While Honcho's columns hold a space whose settings no switch
    finished delivering, the Honcho settings are printed too.

    \b
    Example:
      embed status --space bge_m3 --json
    """
    from embed.api import status as run

    cfg = env.config()
    out = run(cfg, env.url(cfg), spaces=list(spaces) or None, sources=list(sources) or None)
    emit(out, as_json, _status_lines)
