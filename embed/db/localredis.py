"""A private redis-server for the demo (Honcho's cache), started from the machine's own binary.

Daemonized with its pid, port and data in one directory, so a second `embed demo` finds and
reuses it; nothing is persisted by Redis itself (the demo's backup takes an RDB snapshot). The
demo stops the server at its end (`down`): an idle redis-server left behind by every run adds up.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class LocalRedis:
    def __init__(self, home: Path) -> None:
        self.home = home

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None

    def _port(self) -> int | None:
        pid_file, port_file = self.home / "redis.pid", self.home / "port"
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
            return int(port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def up(self) -> str:
        """Start (or find) the server; returns its redis:// URL (127.0.0.1 only)."""
        port = self._port()
        if port is None:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            subprocess.run(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.home),
                 "--daemonize", "yes", "--pidfile", str(self.home / "redis.pid"), "--save", "",
                 "--appendonly", "no", "--logfile", str(self.home / "redis.log"),
                 "--repl-diskless-sync-delay", "0"],
                check=True, capture_output=True, timeout=30,
            )
            (self.home / "port").write_text(str(port))
            for _ in range(100):
                if self.cli(port, "PING") == "PONG":
                    break
                time.sleep(0.05)
        return f"redis://127.0.0.1:{port}/0"

    @staticmethod
    def cli(port: int, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def down(self) -> bool:
        """Stop the server if it runs; True when it was running (and is gone now)."""
        port = self._port()
        if port is None:
            return False
        pid = int((self.home / "redis.pid").read_text().strip())
        self.cli(port, "SHUTDOWN", "NOSAVE")
        for _ in range(100):  # SHUTDOWN returns before the process has exited
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        return True
