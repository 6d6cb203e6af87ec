"""`embed backup`: real pg_dump/pg_restore against the embedded server, a real redis-server, real
faults (an unreachable Redis after the dump, a full disk, an immutable directory, a held lock),
and the acceptance path: back up, drop a table, restore into a fresh database, compare counts."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from embed import store
from embed.cli import cli
from embed.config import Config
from embed.db.connection import connect, ensure_pgvector
from embed.db.localpg import LocalServer
from embed.errors import EmbedError
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.safety import backup as bk
from embed.safety.backup import libpq_target, pg_tools, redis_target, take_backup, verify_backup
from tests.conftest import ROOT, free_port, hashed_unit_vectors, new_database

REDIS_PASSWORD = "r3d!s:pw@x"
HONCHO_KEYS = {
    "honcho:v2:workspace:ws_alpha": '{"id":"w1","name":"ws_alpha"}',
    "honcho:v2:peer:ws_alpha:alice": '{"id":"p1","name":"alice"}',
    "honcho:v2:session:ws_alpha:s1": '{"id":"s1","is_active":true}',
}


# ---------------------------------------------------------------- helpers
def redis_cli(port: int, *args: str, password: str | None = REDIS_PASSWORD) -> str:
    env = {**os.environ, "REDISCLI_AUTH": password} if password else dict(os.environ)
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, env=env, timeout=10)
    return r.stdout.strip()


@contextmanager
def redis_server(workdir: Path, *extra: str, password: str | None = REDIS_PASSWORD) -> Iterator[int]:
    """A throwaway redis-server on a free port, nothing persisted unless `extra` says so."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # No 5 s wait for more replicas before a diskless transfer (`--rdb` is a replica to the server).
    argv = ["redis-server", "--save", "", "--appendonly", "no", "--dir", str(workdir), "--port", str(port),
            "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0", *extra]
    if password:
        argv += ["--requirepass", password]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if redis_cli(port, "PING", password=password) == "PONG":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def redis_url(port: int, password: str = REDIS_PASSWORD) -> str:
    from urllib.parse import quote

    return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"


def seed_tiny(url: str, cfg: Config) -> None:
    """Honcho-shaped tables with legacy vectors, embed_store, and a few vectors in one store table."""
    ensure_pgvector(url)
    dims = cfg.legacy_space.dims
    with connect(url) as conn:
        seed(conn, generate(seed=3, documents=120, messages=60), dims=dims,
             vectors=lambda texts: hashed_unit_vectors(texts, dims))
        store.init(conn, cfg)
        bge = cfg.space("bge_m3")
        ids = [r[0] for r in conn.execute("SELECT id FROM public.documents ORDER BY id LIMIT 25").fetchall()]
        vecs = hashed_unit_vectors(ids, bge.dims)
        with conn.cursor() as cur:
            cur.executemany(
                psycopg.sql.SQL(
                    "INSERT INTO {} (source_id, content_sha256, space_fp, embedding) VALUES (%s, %s, %s, %s)"
                ).format(store.table_ident(cfg.source("documents"), bge)),
                [(i, b"\x00" * 32, bge.fingerprint, np.asarray(v)) for i, v in zip(ids, vecs, strict=True)],
            )


def live_counts(url: str, tables: list[str]) -> dict[str, int]:
    with connect(url, vector=False) as conn:
        return {
            t: conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(*t.split(".")))
                            ).fetchone()[0]
            for t in tables
        }


def restore_into_fresh_db(server: LocalServer, dump: Path) -> str:
    """pg_restore --no-owner into a new database on the same server (the acceptance path)."""
    url = new_database(server)
    conninfo, env = libpq_target(url)
    r = subprocess.run([pg_tools().exe("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={conninfo}",
                        str(dump)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return url


def cli_run(url: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--db", url, "--project", str(ROOT), "--gateway", "local", *args], input=input)


@pytest.fixture
def honcho_db(db_url: str, cfg: Config) -> str:
    seed_tiny(db_url, cfg)
    return db_url


# ---------------------------------------------------------------- acceptance
def test_backup_drop_restore_counts_match_manifest(
    honcho_db: str, pg_server: LocalServer, tmp_path: Path, cfg: Config
) -> None:
    with redis_server(tmp_path / "redis") as port:
        for key, value in HONCHO_KEYS.items():
            assert redis_cli(port, "SET", key, value, "EX", "300") == "OK"
        redis_cli(port, "SET", "honcho:v2:nottl", "1")
        out = tmp_path / "bk" / "2026-05-18"
        r = cli_run(honcho_db, "backup", "--out", str(out), "--redis", redis_url(port), "--json")
    assert r.exit_code == 0, r.output
    assert REDIS_PASSWORD not in r.output and "r3d" not in r.output
    m = json.loads(r.output)

    # Private files, complete manifest.
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "postgres.dump", "redis.rdb"]
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    on_disk = json.loads((out / "manifest.json").read_text())
    assert "r3d" not in (out / "manifest.json").read_text()
    assert on_disk["backup_id"] == m["backup_id"] and on_disk["format"] == "embed-backup/1"
    db = on_disk["database"]
    assert db["scope"] == "all" and db["server_version"].startswith("18") and db["pgvector"]
    assert db["url"] == honcho_db  # no password in this URL; masking is tested below
    assert db["tables"]["public.documents"] == 120 and db["tables"]["embed_store.documents__" + cfg.space("bge_m3").ident] == 25
    assert db["verification"]["toc_tables"] == len(db["tables"])
    assert on_disk["redis"]["server_version"] and on_disk["redis"]["rdb_version"] >= 9
    assert on_disk["redis"]["verification"]["keys"] == len(HONCHO_KEYS) + 1
    assert on_disk["redis"]["verification"]["expires"] == len(HONCHO_KEYS)
    assert on_disk["redis"]["url"] == f"redis://:***@127.0.0.1:{port}/0"
    for name, entry in on_disk["files"].items():
        assert entry["bytes"] == (out / name).stat().st_size and entry["sha256"] == bk.sha256_file(out / name)
    assert on_disk["embed_version"] and on_disk["started_at"] <= on_disk["finished_at"]

    # Registered, verified, logged.
    with connect(honcho_db, vector=False) as conn:
        row = conn.execute("SELECT id, path, verified, verified_at IS NOT NULL, manifest->>'backup_id' "
                           "FROM embed_store.backups").fetchall()
        assert row == [(m["registered"], str(out), True, True, m["backup_id"])]
        ev = conn.execute("SELECT outcome, details FROM embed_store.events WHERE kind = 'backup'").fetchall()
        assert ev[0][0] == "ok" and ev[0][1]["backup"] == m["registered"] and ev[0][1]["redis"] is True

    # Disaster: a table is gone. Restore into a fresh database: every count equals the manifest.
    with connect(honcho_db, vector=False, autocommit=True) as conn:
        conn.execute("DROP TABLE public.message_embeddings")
    restored = restore_into_fresh_db(pg_server, out / "postgres.dump")
    assert live_counts(restored, list(db["tables"])) == db["tables"]
    with connect(restored) as conn:  # vectors come back typed and intact
        typ = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                           "attrelid = 'public.documents'::regclass AND attname = 'embedding'").fetchone()[0]
        assert typ == f"vector({cfg.legacy_space.dims})"

    # And the RDB loads into a second redis-server with every key.
    rdir = tmp_path / "redis-restore"
    rdir.mkdir()
    shutil.copy(out / "redis.rdb", rdir / "restored.rdb")
    with redis_server(rdir, "--dbfilename", "restored.rdb", password=None) as port2:
        for key, value in HONCHO_KEYS.items():
            assert redis_cli(port2, "GET", key, password=None) == value
        assert int(redis_cli(port2, "TTL", "honcho:v2:workspace:ws_alpha", password=None)) > 0
        assert redis_cli(port2, "DBSIZE", password=None) == str(len(HONCHO_KEYS) + 1)


def test_counts_and_dump_share_one_snapshot(
    honcho_db: str, pg_server: LocalServer, tmp_path: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows committed after the counts but before pg_dump starts are in neither."""
    real_run = bk._run

    def late_writer(argv: list[str], **kw):
        if "pg_dump" in Path(argv[0]).name:
            with connect(honcho_db, vector=False, autocommit=True) as other:
                for _ in range(3):
                    store.record_event(other, "test", "info")
        return real_run(argv, **kw)

    monkeypatch.setattr(bk, "_run", late_writer)
    m = take_backup(cfg, honcho_db, tmp_path / "bk")
    restored = restore_into_fresh_db(pg_server, tmp_path / "bk" / "postgres.dump")
    assert live_counts(restored, list(m.manifest["database"]["tables"])) == m.manifest["database"]["tables"]
    live = live_counts(honcho_db, ["embed_store.events"])["embed_store.events"]
    assert live == m.manifest["database"]["tables"]["embed_store.events"] + 3 + 1  # + the late rows + the backup event


def test_honcho_scope_holds_sources_and_store_only(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    m = take_backup(cfg, honcho_db, tmp_path / "bk", scope="honcho")
    tables = set(m.manifest["database"]["tables"])
    assert {"public.documents", "public.message_embeddings"} <= tables
    assert all(t.startswith("embed_store.") for t in tables - {"public.documents", "public.message_embeddings"})
    assert "public.messages" not in tables
    assert bk.toc_tables(pg_tools(), tmp_path / "bk" / "postgres.dump") == tables
    assert m.manifest["database"]["restore_needs"] and m.manifest["redis"] is None


# ---------------------------------------------------------------- secrets
def test_passwords_go_through_the_environment_only() -> None:
    t = redis_target("redis://ops:p%40ss@cache.internal:6380/2")
    assert t.args == ("-u", "redis://cache.internal:6380/2", "--user", "ops")
    assert t.env["REDISCLI_AUTH"] == "p@ss" and "p@ss" not in " ".join(t.args) and "***" in t.masked
    assert redis_target("rediss://:only@h").args == ("-u", "rediss://h:6379", "--tls")
    conninfo, env = libpq_target("postgresql://honcho:s%3Acret@db.internal:5433/honcho?sslmode=require")
    assert "s:cret" not in conninfo and "password" not in conninfo and env["PGPASSWORD"] == "s:cret"
    assert "sslmode=require" in conninfo and "port=5433" in conninfo
    assert bk.masked_url("postgresql://h/db?sslmode=require&password=s3") == "postgresql://h/db?sslmode=require&password=***"
    with pytest.raises(EmbedError, match="Redis URL must look like"):
        redis_target("http://x")


def test_database_password_reaches_pg_dump_only_through_pgpassword(
    honcho_db: str, pg_server: LocalServer, tmp_path: Path, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spy on the real child processes: the password is in PGPASSWORD, never in argv or output."""
    role, pw = f"bk_{uuid.uuid4().hex[:8]}", "Pw:" + uuid.uuid4().hex
    dbname = honcho_db.rsplit("/", 1)[1]
    with connect(pg_server.url("postgres"), vector=False, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(pw)))
    calls: list[tuple[list[str], dict[str, str] | None]] = []
    real_run = bk._run

    def spy(argv: list[str], **kw):
        calls.append((argv, kw.get("env")))
        return real_run(argv, **kw)

    monkeypatch.setattr(bk, "_run", spy)
    url = f"postgresql://{role}:{pw.replace(':', '%3A')}@127.0.0.1:{pg_server.port}/{dbname}"
    r = cli_run(url, "backup", "--out", str(tmp_path / "bk"), "--tables", "honcho", "--json")
    assert r.exit_code == 0, r.output
    dump_calls = [(a, e) for a, e in calls if Path(a[0]).name == "pg_dump"]
    assert len(dump_calls) == 1 and dump_calls[0][1]["PGPASSWORD"] == pw
    assert all(pw not in " ".join(a) for a, _ in calls)
    assert pw not in r.output and pw not in (tmp_path / "bk" / "manifest.json").read_text()
    assert json.loads(r.output)["database"]["url"] == f"postgresql://{role}:***@127.0.0.1:{pg_server.port}/{dbname}"


# ---------------------------------------------------------------- refusals and faults
def test_refuses_a_file_or_a_non_empty_directory(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EmbedError, match="exists and is not a directory"):
        take_backup(cfg, honcho_db, tmp_path / "afile")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    r = cli_run(honcho_db, "backup", "--out", str(tmp_path / "full"))
    assert r.exit_code == 1 and "is not empty" in r.output and r.output.count("\n") == 1
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(EmbedError, match="Redis URL"):
        take_backup(cfg, honcho_db, tmp_path / "new", redis_url="localhost:6379")
    assert not (tmp_path / "new").exists()  # bad input changes nothing


def test_redis_failure_after_the_dump_removes_the_partial_backup(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    """Real fault: the Postgres dump is written, then Redis is unreachable."""
    out = tmp_path / "bk"
    with pytest.raises(EmbedError, match=r"redis-cli .*failed.*partial backup removed"):
        take_backup(cfg, honcho_db, out, redis_url=f"redis://:pw@127.0.0.1:{free_port()}")
    assert not out.exists()
    with connect(honcho_db, vector=False) as conn:
        assert conn.execute("SELECT count(*) FROM embed_store.backups").fetchone()[0] == 0
        ev = conn.execute("SELECT outcome, reason FROM embed_store.events WHERE kind = 'backup'").fetchall()
        assert len(ev) == 1 and ev[0][0] == "failed" and "pw" not in ev[0][1].replace("partial", "")


def test_full_disk_removes_the_partial_backup(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    """Real fault: a 16 KiB tmpfs fills up while pg_dump writes (needs root and mount)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(EmbedError, match=r"pg_dump failed: .*No space left on device.*partial backup removed"):
            take_backup(cfg, honcho_db, mnt / "bk")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_unwritable_directory_leaves_no_manifest(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    """Real fault: an empty, immutable directory (chattr +i; root cannot write into it either)."""
    out = tmp_path / "frozen"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        with pytest.raises(EmbedError):
            take_backup(cfg, honcho_db, out)
        assert list(out.iterdir()) == []
        with pytest.raises(EmbedError, match=r"no manifest\.json: not a backup"):
            verify_backup(out)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


def test_a_held_lock_fails_cleanly_instead_of_queueing(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    with connect(honcho_db, vector=False) as holder:
        holder.execute("LOCK TABLE public.documents IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(EmbedError, match=r"lock not available within 300ms.*partial backup removed"):
            take_backup(cfg, honcho_db, tmp_path / "bk", lock_wait_timeout="300ms")
        holder.rollback()
    assert not (tmp_path / "bk").exists()


# ---------------------------------------------------------------- verify
def test_verify_detects_tampering_and_unverifies(honcho_db: str, tmp_path: Path, cfg: Config) -> None:
    out = tmp_path / "bk"
    take_backup(cfg, honcho_db, out)
    r = cli_run(honcho_db, "backup", "verify", str(out))
    assert r.exit_code == 0 and "VERIFIED" in r.output
    dump = out / "postgres.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    r = cli_run(honcho_db, "backup", "verify", str(out), "--json")
    assert r.exit_code == 1
    res = json.loads(r.output)
    assert not res["ok"] and any(c["check"] == "sha256 postgres.dump" and not c["ok"] for c in res["checks"])
    with connect(honcho_db, vector=False) as conn:
        assert conn.execute("SELECT verified, verified_at IS NOT NULL FROM embed_store.backups").fetchall() == [
            (False, True)]
        kinds = [k for (k,) in conn.execute("SELECT outcome FROM embed_store.events WHERE kind = 'backup-verify' "
                                            "ORDER BY id").fetchall()]
        assert kinds == ["ok", "failed"]
    r = cli_run(honcho_db, "backup", "list")
    assert r.exit_code == 0 and "UNVERIFIED" in r.output


def test_a_backup_taken_before_init_is_registered_by_verify(db_url: str, tmp_path: Path, cfg: Config) -> None:
    ensure_pgvector(db_url)
    with connect(db_url, vector=False, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY)")
        conn.execute("INSERT INTO public.notes SELECT generate_series(1, 7)")
    m = take_backup(cfg, db_url, tmp_path / "bk")
    assert m.registered is None and m.manifest["database"]["tables"] == {"public.notes": 7}
    with connect(db_url) as conn:
        store.init(conn, cfg)
    res = verify_backup(tmp_path / "bk", url=db_url)
    assert res.ok and isinstance(res.registered, int)
    with connect(db_url, vector=False) as conn:
        assert conn.execute("SELECT verified FROM embed_store.backups").fetchall() == [(True,)]
