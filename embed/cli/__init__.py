"""The `embed` command line: thin wrappers over the Python API, one-line errors, --json for machines."""

from __future__ import annotations

import json
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
        from embed.db.connection import resolve_url

        return resolve_url(cfg or self.config(), self.db)


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EmbedError into one line on stderr and exit status 1 (no traceback, no secrets); so
    too a database connection lost mid-command (server restart, terminated backend), which the
    fault suite (tests/faults) showed reaching the user as a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbedError as e:
            click.echo(f"embed: error: {e}", err=True)
            sys.exit(1)
        except Exception as e:
            if not _lost_connection(e):
                raise
            first = first_line(str(e), "")
            click.echo(f"embed: error: lost the database connection ({type(e).__name__}: {first}); "
                       "run the same command again", err=True)
            sys.exit(1)

    return wrapper


def _lost_connection(e: BaseException) -> bool:
    """A psycopg OperationalError, raised as it is or wrapped by a library (SQLMesh's engine)."""
    import psycopg

    seen: set[int] = set()
    at: BaseException | None = e
    while at is not None and id(at) not in seen:
        if isinstance(at, psycopg.OperationalError):
            return True
        seen.add(id(at))
        at = at.__cause__ or at.__context__
    return False


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


# ---------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """The embedded PostgreSQL + pgvector server (data in .embed/pg, 127.0.0.1 only).

    \b
    Example:
      embed db up
      eval "$(embed db env)"
      embed db down
    """


def _server(env: Env):
    from embed.config import find_project
    from embed.db.localpg import LocalServer

    return LocalServer.default(env.project or find_project())


@db.command("up")
@click.pass_obj
@fail_cleanly
def db_up(env: Env) -> None:
    """Start the server (idempotent; a crashed server is detected and restarted).

    \b
    Example:
      embed db up
    """
    from embed.db.connection import ensure_pgvector

    url = _server(env).up()
    version = ensure_pgvector(url)
    click.echo(f"embedded PostgreSQL is up at {url} (pgvector {version})")


@db.command("down")
@click.option("--purge", is_flag=True, help="Also delete the data directory (asks first).")
@click.pass_obj
@fail_cleanly
def db_down(env: Env, purge: bool) -> None:
    """Stop the server (fast shutdown: committed data is safe).

    \b
    Example:
      embed db down
      embed db down --purge
    """
    server = _server(env)
    if purge:
        click.confirm(f"Delete {server.home} and every database in it?", abort=True)
        server.destroy()
        click.echo(f"stopped and deleted {server.home}")
        return
    click.echo("stopped" if server.down() else "was not running")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def db_status(env: Env, as_json: bool) -> None:
    """Whether the embedded server runs, where its data lives, its URL.

    \b
    Example:
      embed db status --json
    """
    st = _server(env).status()
    emit(st, as_json, lambda s: [f"{k}: {v}" for k, v in s.items()])
    sys.exit(0 if st["running"] else 3)


@db.command("url")
@click.pass_obj
@fail_cleanly
def db_url(env: Env) -> None:
    """Print the database URL embed would use (password masked).

    \b
    Example:
      embed db url
      embed --gateway honcho db url
    """
    from embed.db.connection import mask

    click.echo(mask(env.url()))


@db.command("env")
@click.pass_obj
@fail_cleanly
def db_env(env: Env) -> None:
    """Print `export` lines so a plain `sqlmesh` reaches the same database and renders the views
    as production reads them (embed_store.serving): eval "$(embed db env)".

    \b
    Example:
      eval "$(embed db env)"
      eval "$(embed --gateway honcho db env)"
    """
    import shlex

    from embed import mesh
    from embed.db.connection import sqlmesh_env
    from embed.store import serving

    cfg = env.config()
    url = env.url(cfg)
    for k, v in {**sqlmesh_env(url), "EMBED_GATEWAY": cfg.gateway, serving.ENV: mesh.rendering(cfg, url)}.items():
        click.echo(f"export {k}={shlex.quote(v)}")


# ---------------------------------------------------------------- spaces / init / plan / audit
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def init(env: Env, as_json: bool) -> None:
    """Create the embed_store schema and one typed table per (source, space); idempotent.

    Also brings external_models.yaml (the SQLMesh declaration of those tables) in line with
    config.yaml.

    \b
    Example:
      embed init
      embed --gateway honcho init --json
    """
    from embed.api import init_store

    out = init_store(env.config(), env.url())
    emit(out, as_json, lambda o: [
        f"embed_store ready: {len(o.created_tables)} table(s) created, {len(o.declared_spaces)} space(s) newly "
        "declared" + ("; external_models.yaml updated" if o.external_models_changed else "")
    ])


@cli.command()
@click.pass_obj
@fail_cleanly
def plan(env: Env) -> None:
    """Audit the store tables, then `sqlmesh plan --auto-apply` the views on prod.

    The views are rendered from what the database says production reads (embed_store.serving),
    so a plan never switches production; it also finishes the views of an in-place switch
    that stopped after its swap. A failing blocking audit stops the plan before any change.

    \b
    Example:
      embed --gateway honcho plan
    """
    from embed.api import plan as run

    cfg = env.config()
    out = run(cfg, env.url(cfg))
    click.echo(f"plan applied: {len(out.new_snapshots)} view(s) (re)built")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def audit(env: Env, as_json: bool) -> None:
    """Run every audit now (views and store tables); exit 1 unless every one ran and passed.

    An audit of a version no plan has built yet prints NOT RUN, which is not a pass: run
    `embed plan` first.

    \b
    Example:
      embed audit --json
    """
    from dataclasses import asdict

    from embed.api import audit as run

    cfg = env.config()
    results = run(cfg, env.url(cfg))
    emit([asdict(r) for r in results], as_json, lambda rs: [
        f"{r['status']:<8} {r['audit']:<20} {r['model']}"
        + (f"  ({r['count']} row(s))" if r["count"] else "") + (f"  {r['error']}" if r["error"] else "")
        for r in rs
    ])
    if not results or any(not r.passed for r in results):
        sys.exit(1)


def main() -> None:
    cli()


# The command modules attach themselves to `cli`; imported last because they import it.
from embed.cli import backfill, backup, cutover, demo, evidence, honcho, retire, shadow, smoke  # noqa: E402, F401
