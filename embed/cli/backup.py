"""`embed backup`: a verified backup (Postgres dump + Redis RDB + manifest) before anything destructive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from embed.cli import Env, cli, emit, fail_cleanly

if TYPE_CHECKING:
    from embed.safety.backup import Backup

PG_BIN_HELP = ("Directory with pg_dump/pg_restore (default: the embedded build when it is at least the "
               "server's major version, else a matching one on PATH or in /usr/lib/postgresql).")
REDIS_BIN_HELP = "Directory with redis-cli/redis-check-rdb (default: PATH); use a build at least as new as the server."


@cli.group(invoke_without_command=True)
@click.option("--out", type=click.Path(path_type=Path), metavar="DIR",
              help="New (or empty) directory for the backup; created 0700, files 0600.")
@click.option("--redis", "redis_url", metavar="URL", envvar="EMBED_REDIS_URL",
              help="Also snapshot this Redis (redis://[user:password@]host:port) with `redis-cli --rdb` "
                   "(also $EMBED_REDIS_URL, which keeps the password off the command line).")
@click.option("--tables", "scope", type=click.Choice(["all", "honcho"]), default="all", show_default=True,
              help="'all': the whole database; 'honcho': the configured source tables + schema embed_store.")
@click.option("--pg-bin", type=click.Path(file_okay=False, exists=True, path_type=Path), help=PG_BIN_HELP)
@click.option("--redis-bin", type=click.Path(file_okay=False, exists=True, path_type=Path), help=REDIS_BIN_HELP)
@click.option("--lock-wait-timeout", default="60s", show_default=True,
              help="Fail instead of waiting longer than this for a table lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
@fail_cleanly
def backup(ctx: click.Context, out: Path | None, redis_url: str | None, scope: str, pg_bin: Path | None,
           redis_bin: Path | None, lock_wait_timeout: str, as_json: bool) -> None:
    """Back up the target database (and Redis) into DIR, verify it, and register it.

    `pg_dump -Fc` runs in a snapshot exported by the transaction that counts every table, so
    the manifest's row counts are exactly what the dump holds. The dump is checked with
    `pg_restore --list`, the RDB with `redis-check-rdb`; manifest.json (sizes, sha256, row
    counts, server versions, masked URLs) is written last. Passwords reach pg_dump and redis-cli
    only through PGPASSWORD / REDISCLI_AUTH. On any failure the partial directory is removed.
    Retire needs a verified backup taken after the space stopped being active.

    \b
    Example:
      embed backup --out backups/pre-bge-m3
      embed backup --out backups/pre-bge-m3 --redis redis://redis:6379/0
      embed backup --out backups/at-cutover --tables honcho
    """
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise click.UsageError("--out DIR is required (or use a subcommand: verify, list)")
    from embed.api import take_backup
    from embed.safety.backup import human_bytes

    env: Env = ctx.obj
    cfg = env.config()
    m = take_backup(cfg, env.url(cfg), out, redis_url=redis_url, scope=scope, pg_bin=pg_bin,
                    redis_bin=redis_bin, lock_wait_timeout=lock_wait_timeout)

    def lines(b: Backup) -> list[str]:
        m = b.manifest
        db = m["database"]
        head = (f"backup {b.backup_id} in {b.path}: {len(db['tables'])} table(s), {db['total_rows']} row(s) "
                f"from {db['url']} (PostgreSQL {db['server_version']}, pgvector {db['pgvector']}); "
                f"{human_bytes(m['files']['postgres.dump']['bytes'])} dumped, TOC verified")
        out_lines = [head]
        if m["redis"]:
            r = m["redis"]
            out_lines.append(f"redis {r['url']} (redis {r['server_version']}, RDB v{r['rdb_version']}): "
                             f"{r['verification']['keys']} key(s), redis-check-rdb OK")
        out_lines.append(f"registered as backup #{b.registered}" if b.registered is not None else
                         "not registered: embed_store does not exist yet (after `embed init`, run "
                         f"`embed backup verify {b.path}`)")
        return out_lines

    emit(m, as_json, lines)


@backup.command("verify")
@click.argument("path", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--pg-bin", type=click.Path(file_okay=False, exists=True, path_type=Path), help=PG_BIN_HELP)
@click.option("--redis-bin", type=click.Path(file_okay=False, exists=True, path_type=Path), help=REDIS_BIN_HELP)
@click.option("--no-record", is_flag=True, help="Check the files only; do not update the database.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def verify(env: Env, path: Path, pg_bin: Path | None, redis_bin: Path | None, no_record: bool, as_json: bool) -> None:
    """Re-check a backup: every file's size and sha256, `pg_restore --list`, `redis-check-rdb`.

    Records the outcome in embed_store.backups (verified, verified_at), registering a backup
    the database did not know yet. Exits 1 when a check fails.

    \b
    Example:
      embed backup verify backups/pre-bge-m3
      embed backup verify backups/pre-bge-m3 --no-record --json
    """
    from embed.api import verify_backup

    url = None if no_record else env.url()
    res = verify_backup(path, url=url, pg_bin=pg_bin, redis_bin=redis_bin)
    emit(res, as_json, lambda r: [
        f"backup {r.backup_id}: {'VERIFIED' if r.ok else 'FAILED'}",
        *[f"  {'ok  ' if c.ok else 'FAIL'} {c.check:<28} {c.detail}" for c in r.checks],
    ])
    if not res.ok:
        sys.exit(1)


@backup.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@fail_cleanly
def list_(env: Env, as_json: bool) -> None:
    """Backups registered in this database, oldest first.

    \b
    Example:
      embed backup list
      embed backup list --json
    """
    from embed.api import list_backups

    rows = list_backups(env.url())
    emit([r.as_dict() for r in rows], as_json, lambda _: [
        f"#{r.id:<4} {r.at:%Y-%m-%d %H:%M:%S%z}  {'verified' if r.verified else 'UNVERIFIED':<10} "
        f"{r.scope:<6} {r.tables:>4} table(s) {r.rows:>9} row(s){'  +redis' if r.redis else ''}  {r.path}"
        for r in rows
    ] or ["no backups registered"])
