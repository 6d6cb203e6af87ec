"""`embed db up|down|status|url|env`: the embedded PostgreSQL + pgvector server."""

from __future__ import annotations

import sys

import click

from embed.cli import Env, cli, emit, fail_cleanly


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
