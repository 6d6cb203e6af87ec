"""The `embed` command line: thin wrappers over the Python API, one-line errors, --json for machines."""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import click

from embed.errors import EmbedError, first_line


@dataclass
class Env:
    """What every command needs: the project config for the chosen gateway, and the --db flag."""

    project: Path | None
    gateway: str | None
    db: str | None

    def config(self):  # -> Config; imported lazily so `--help` stays fast
        from embed.config import Config

        return Config.load(self.project, self.gateway)

    def url(self, cfg=None) -> str:
        return (cfg or self.config()).database_url(self.db)


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EmbedError into one line on stderr and exit status 1 (no traceback, no secrets); so
    too a database connection lost mid-command (server restart, terminated backend), which the
    fault suite (tests/faults) showed reaching the user as a traceback, and a privilege the
    role lacks where no step checked it first."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbedError as e:
            click.echo(f"embed: error: {e}", err=True)
            sys.exit(1)
        except Exception as e:
            import psycopg

            if denied := _cause(e, lambda x: DENIED in (getattr(x, "sqlstate", None), getattr(x, "pgcode", None))):
                click.echo(f"embed: error: {first_line(str(denied))} for this role; `embed doctor` lists the "
                           "privileges each step needs and the GRANT that gives each", err=True)
                sys.exit(1)
            if not _cause(e, lambda x: isinstance(x, psycopg.OperationalError)):
                raise
            first = first_line(str(e), "")
            click.echo(f"embed: error: lost the database connection ({type(e).__name__}: {first}); "
                       "run the same command again", err=True)
            sys.exit(1)

    return wrapper


DENIED = "42501"  # SQLSTATE insufficient_privilege (psycopg's .sqlstate, SQLMesh's psycopg2 .pgcode)


def _cause(e: BaseException, match: Callable[[BaseException], bool]) -> BaseException | None:
    """The error in `e`'s chain that `match`es: raised as it is or wrapped by a library (SQLMesh's engine)."""
    seen: set[int] = set()
    at: BaseException | None = e
    while at is not None and id(at) not in seen:
        if match(at):
            return at
        seen.add(id(at))
        at = at.__cause__ or at.__context__
    return None


def emit(data: Any, as_json: bool, lines: Callable[[Any], list[str]]) -> None:
    """Lines for a person, or JSON for a machine (a typed result gives its `as_dict()`)."""
    if as_json:
        click.echo(json.dumps(data.as_dict() if hasattr(data, "as_dict") else data, indent=2, default=str))
    else:
        for line in lines(data):
            click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="EMBED_DATABASE_URL", metavar="URL",
              help="Target PostgreSQL URL (also $EMBED_DATABASE_URL). Default: the embedded server.")
@click.option("--gateway", envvar="EMBED_GATEWAY", metavar="NAME",
              help="config.yaml gateway: 'local' (embedded demo) or 'honcho' (production). ")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), envvar="EMBED_PROJECT",
              help="Project directory holding config.yaml (default: found from the current directory).")
@click.version_option(package_name="embed")
@click.pass_context
def cli(ctx: click.Context, db: str | None, gateway: str | None, project: Path | None) -> None:
    """Move a pgvector store to a new embedding model without ever mixing vector spaces.

    A space is a model's full spec (provider, model, revision, dims, metric, prefixes...),
    identified by a fingerprint, never by its dimension. Each (source table, space) gets its
    own typed store table; SQLMesh views serve exactly one space per source, behind audits.

    \b
    The procedure (docs/runbook.md):
      embed doctor                what would break a step, and the command or GRANT that fixes it
      embed init                  embed_store tables for every declared space
      embed backup --out DIR      verified pg_dump (+ Redis RDB) before anything else
      embed smoke --space S       evidence that S's embedder works (dims, PL/EN, latency)
      embed backfill --space S    fill S's store tables (resumable, binary COPY)
      embed sync --space S        keep up with the live source (--watch)
      embed shadow --candidate S  compare retrieval with the legacy space, from ids only
      embed gate --space S        every blocking gate, with measured values
      embed cutover --space S     switch what production reads (view or Honcho in place)
      embed rollback              back to the previous space
      embed retire --space S      drop old vectors after the retention window
    `embed demo` walks all of it on an embedded PostgreSQL with a seeded corpus.
    """
    ctx.obj = Env(project=project, gateway=gateway, db=db)


def main() -> None:
    """The `embed` command. Once it is done, the process ends without Python's teardown, which
    frees object by object what a control step loaded (SQLMesh's project, sqlglot's trees,
    pandas): 0.4-0.7 s of a 3 s `embed cutover`, memory the OS takes back at once. Threads are
    joined and the exit handlers registered during the command run first (this one is
    registered before them, so it runs last); its output is flushed."""
    status = [1]  # an exception that escaped click: Python prints it and exits with 1
    atexit.register(_exit_now, status)
    try:
        cli()
    except SystemExit as e:
        status[0] = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        raise


def _exit_now(status: list[int]) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`embed status | head`): nothing left to say
            pass
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(status[0])


# One module per verb group (named after the package it drives); each attaches its commands to
# `cli`, so they are imported last, because they import it.
for _group in ("db", "doctor", "store", "mesh", "smoke", "backup", "fill", "shadow", "cutover", "retire", "evidence",
               "honcho", "demo", "verify"):
    importlib.import_module(f"embed.cli.{_group}")
