"""The fault suite's embedding endpoint: tests/support/badserver.py's BadServer in a process of its own.

A real OpenAI-compatible HTTP server (vectors from each input's sha256, cheap and
deterministic) that the suite can SIGKILL and start again on the same port, and make
misbehave on demand: the driver drops a JSON control file (`{"plan": ["429", "429"],
"slow_s": 3, "clear": false}`) that the server picks up within 50 ms and appends to its per-request plan.

    python -m tests.faults.endpoint --port P --dims D --control FILE

It prints one readiness line and request counts; never a request body.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from tests.faults.common import write_json
from tests.support.badserver import BadServer

ROOT = Path(__file__).resolve().parents[2]


def _serve(port: int, dims: int, control: Path) -> None:
    srv = BadServer(dims=dims, port=port).start()
    stop = {"now": False}

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    print(f"endpoint ready port={srv.port} dims={dims}", flush=True)
    while not stop["now"]:
        if control.exists():
            try:
                order = json.loads(control.read_text())
                control.unlink()
            except (OSError, ValueError):
                order = None  # half-written: read it next time
            if order is not None:
                with srv._lock:
                    if order.get("clear"):
                        srv.plan.clear()
                    srv.plan.extend(order.get("plan", []))
                    srv.slow_s = float(order.get("slow_s", srv.slow_s))
                print(f"endpoint plan +{len(order.get('plan', []))} (requests so far {srv.hits})", flush=True)
        with srv._lock:
            srv.requests.clear()  # BadServer keeps bodies for assertions; this process needs none
        time.sleep(0.05)
    print(f"endpoint stopping after {srv.hits} requests", flush=True)
    srv.stop()


class Endpoint:
    """Start, kill -9, restart and script the endpoint process (from the driver)."""

    def __init__(self, port: int, dims: int, workdir: Path, log: Path) -> None:
        self.port, self.dims = port, dims
        self.control = workdir / "endpoint.control.json"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "tests.faults.endpoint", "--port", str(self.port), "--dims", str(self.dims),
               "--control", str(self.control)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"endpoint exited with {self.proc.returncode} (see {self.log.name})")
            if self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError("endpoint did not come up")

    def healthy(self) -> bool:
        req = urllib.request.Request(f"{self.url}/embeddings", data=b'{"input": []}', method="POST")
        try:
            with urllib.request.urlopen(req, timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def misbehave(self, plan: list[str], slow_s: float | None = None, clear: bool = False) -> None:
        """Queue behaviours for the next requests (atomically: the server never reads half a file);
        `clear` first drops what earlier orders left unused."""
        order: dict[str, object] = {"plan": plan, "clear": clear}
        if slow_s is not None:
            order["slow_s"] = slow_s
        deadline = time.monotonic() + 2
        while self.control.exists() and time.monotonic() < deadline:  # the previous order first
            time.sleep(0.02)
        write_json(self.control, order)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dims", type=int, required=True)
    ap.add_argument("--control", type=Path, required=True)
    a = ap.parse_args(argv)
    _serve(a.port, a.dims, a.control)


if __name__ == "__main__":
    main()
