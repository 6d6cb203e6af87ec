"""A bench stopped by `timeout` (SIGTERM) or Ctrl-C stops the embedded PostgreSQL it started
(bench/backfill.py's stop_on_signals): a real bench process and its real server, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from embed.db.localpg import LocalServer

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 120  # generous: a loaded 2-core box starts, and stops, postgres slowly


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphaned postmaster is reaped by whoever is pid 1)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(what: str, check: Callable[[], object], proc: subprocess.Popen) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{what} within {WAIT_S} s; the bench said: {proc.communicate()[1][-2000:]!r}")


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    """A temp dir for the bench with a short path: its server's Unix socket lies under it, and a
    socket's path has room for 107 bytes (pytest's own temp tree, per xdist worker, is too deep)."""
    path = Path(tempfile.mkdtemp(prefix="eb-sig-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stopped_bench_stops_its_postgres(tmp_short: Path, sig: signal.Signals) -> None:
    # bench/trigger.py: the cheapest bench with an embedded server; at its default size it is still
    # setting up long after its server is up. SIGINT ignored at start, as for a shell's background job.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "trigger.py")], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_short)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    homes: list[Path] = []
    try:

        def postmaster() -> int | None:
            homes[:] = list(tmp_short.glob("embed-bench-*"))
            pid = LocalServer(home=homes[0]).running_pid() if homes else None
            return pid if pid and pid > 0 else None  # initdb's single-user backend writes its pid negated

        pid = wait_for("the bench's postgres did not start", postmaster, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == (128 + sig if sig == signal.SIGTERM else -sig), err[-2000:]
        assert f"bench: {sig.name}" in err
        wait_for("the bench's postgres still runs", lambda: not alive(pid), proc)
        assert not homes[0].exists(), "the bench left its server's data directory"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for home in homes:  # what a failed run left
            if home.exists():
                LocalServer(home=home).destroy()
