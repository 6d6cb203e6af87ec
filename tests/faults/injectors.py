"""Fault injectors: each one runs a real `embed` command while something goes wrong around it.

A fault is a name; `Injector.attempt(fault, args)` starts the command, injects the fault at a
moment drawn from the run's seeded RNG, waits for the command and returns what happened. The
menu per kind of step is in `MENU`:

  kill9@<point>   park the process at an EMBED_TEST_PAUSE_AT point (embed/db/hooks.py), SIGKILL it:
                  the backfill writer's points, before the HNSW build, and in a switch after
                  the gate, after the views are aimed, after a swap commits, after the views are switched
  kill9           SIGKILL after a random delay (no pause point: anywhere, e.g. inside a plan)
  pg_restart      stop Postgres (fast shutdown) for a moment and start it again
  pg_terminate    pg_terminate_backend() on every connection except the simulator's and reader's
  endpoint:*      the HTTP embedding endpoint misbehaves: 429 / 5xx / reset bursts, a timeout,
                  a wrong-dims or NaN response, killed and restarted after a delay
  concurrent      (switch steps) a second identical command at the same moment
  backup:full / backup:immutable
                  (backup steps) --out on a 16 KiB tmpfs / an immutable (chattr +i) directory
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from embed.db.localpg import LocalServer
from tests.faults.endpoint import Endpoint
from tests.support.backfill import Proc

WRITE_POINTS = ("before_copy", "during_copy", "after_copy", "after_commit")
ENDPOINT = ("endpoint:429", "endpoint:5xx", "endpoint:slow", "endpoint:wrong_dims", "endpoint:nan",
            "endpoint:kill", "endpoint:long_outage")
DB = ("pg_restart", "pg_terminate")
MENU: dict[str, tuple[str, ...]] = {
    "backfill_http": (*(f"kill9@{p}" for p in (*WRITE_POINTS, "before_index")), "kill9", *DB, *ENDPOINT),
    "backfill_local": (*(f"kill9@{p}" for p in (*WRITE_POINTS, "before_index")), "kill9", *DB),
    "sync_http": (*(f"kill9@{p}" for p in WRITE_POINTS), "kill9", *DB, *ENDPOINT),
    "sync_local": (*(f"kill9@{p}" for p in WRITE_POINTS), "kill9", *DB),
    "switch": ("kill9", "kill9@cutover_gated", "kill9@switch_aimed", "kill9@switch_committed",
               "kill9@switch_views_done", *DB,
               "concurrent", "concurrent"),
    "backup": ("kill9", "pg_terminate", "backup:full", "backup:immutable"),
    "stage": ("kill9", "kill9@inplace_before_index", *DB),
}
STEP_TIMEOUT_S = 300
OURS = ("honcho-sim", "fault-reader", "fault-driver")  # connections pg_terminate leaves alone


@dataclass
class Outcome:
    """One attempt: the processes it ran, whether we killed them on purpose, what was injected."""

    procs: list[Proc]
    fault: str | None
    injected: bool = False
    killed: bool = False
    hung: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rc(self) -> int | None:
        return self.procs[0].p.returncode


class Injector:
    def __init__(self, rng: random.Random, url: str, env: dict[str, str], server: LocalServer,
                 endpoint: Endpoint, scratch: Path) -> None:
        self.rng, self.url, self.env, self.server, self.endpoint = rng, url, env, server, endpoint
        self.scratch = scratch
        self.injected: Counter[str] = Counter()

    # -- choosing --------------------------------------------------------------------------------
    def pick(self, menu: str, attempt: int) -> str | None:
        """A fault for this attempt, or None: likely on the first try, rarer on retries, none
        after the third (an operator's rerun must eventually go through)."""
        if self.rng.random() >= {1: 0.75, 2: 0.4, 3: 0.2}.get(attempt, 0.0):
            return None
        return self.rng.choice(MENU[menu])

    # -- running -----------------------------------------------------------------------------------
    def start(self, args: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        return Proc(self.url, *args, env={**self.env, **(extra_env or {})})

    def wait(self, out: Outcome, timeout: float = STEP_TIMEOUT_S) -> Outcome:
        for p in out.procs:
            try:
                p.p.wait(timeout)
            except subprocess.TimeoutExpired:
                out.hung = True
                p.kill9()
            for t in p._t:
                t.join(5)
        return out

    def attempt(self, fault: str | None, args: list[str]) -> Outcome:
        out = Outcome(procs=[], fault=fault)
        if fault is None:
            out.procs.append(self.start(args))
            return self.wait(out)
        kind, _, arg = fault.partition(":")
        if kind.startswith("kill9@"):
            return self._kill_at(out, args, kind.split("@", 1)[1])
        if kind == "kill9":
            return self._kill_later(out, args)
        if kind in DB:
            return self._database(out, args, kind)
        if kind == "endpoint":
            return self._endpoint(out, args, arg)
        if kind == "concurrent":
            out.procs += [self.start(args), self.start(args)]
            self._count(out, fault)
            return self.wait(out)
        raise ValueError(f"unknown fault {fault!r}")

    def _count(self, out: Outcome, name: str | None = None) -> None:
        out.injected = True
        self.injected[name or out.fault or "?"] += 1

    def _kill_at(self, out: Outcome, args: list[str], point: str) -> Outcome:
        nth = self.rng.randint(1, 2) if point in WRITE_POINTS else 1  # the write points come once per batch
        p = self.start(args, {"EMBED_TEST_PAUSE_AT": f"{point}:{nth}"})
        out.procs.append(p)
        try:
            p.wait_for("embed-test: paused at", timeout=STEP_TIMEOUT_S)
        except AssertionError:  # finished (or failed) before reaching the point: nothing injected
            return self.wait(out)
        p.kill9()
        out.killed = True
        self._count(out)
        return self.wait(out)

    def _kill_later(self, out: Outcome, args: list[str]) -> Outcome:
        p = self.start(args)
        out.procs.append(p)
        try:
            p.p.wait(self.rng.uniform(0.3, 8.0))
        except subprocess.TimeoutExpired:
            p.kill9()
            out.killed = True
            self._count(out)
        return self.wait(out)

    def _database(self, out: Outcome, args: list[str], kind: str) -> Outcome:
        p = self.start(args)
        out.procs.append(p)
        try:
            p.p.wait(self.rng.uniform(0.2, 4.0))
            return self.wait(out)  # over before the fault
        except subprocess.TimeoutExpired:
            pass
        self._count(out)
        if kind == "pg_restart":
            self.restart_postgres(self.rng.uniform(0.2, 2.5))
        else:
            out.notes["terminated"] = self.terminate_backends()
        return self.wait(out)

    def restart_postgres(self, down_s: float) -> None:
        self.server.down()
        time.sleep(down_s)
        self.server.up()

    def terminate_backends(self) -> int:
        return terminate_backends(self.server, self.url)

    def _endpoint(self, out: Outcome, args: list[str], what: str) -> Outcome:
        r = self.rng
        if what in ("kill", "long_outage"):
            self.endpoint.kill9()
            p = self.start(args)
            out.procs.append(p)
            self._count(out)
            try:  # a short outage is ridden out by the client's retries; a long one fails the run clearly
                p.p.wait(r.uniform(0.3, 2.0) if what == "kill" else r.uniform(8.0, 12.0))
            except subprocess.TimeoutExpired:
                pass
            self.endpoint.start()
            return self.wait(out)
        plan = {
            "429": ["429"] * r.randint(1, 4),
            "5xx": [r.choice(["500", "503", "reset"]) for _ in range(r.randint(1, 6))],
            "slow": ["slow"],
            "wrong_dims": ["wrong_dims"] * r.randint(1, 3),
            "nan": ["nan"] * r.randint(1, 3),
        }[what]
        # Let a few requests through first, so the fault lands mid-run, not on the first call.
        self.endpoint.misbehave(["ok"] * r.randint(0, 4) + plan, slow_s=3.0, clear=True)
        self._count(out)
        out.procs.append(self.start(args))
        self.wait(out)
        self.endpoint.misbehave([], clear=True)
        return out


def terminate_backends(server: LocalServer, url: str) -> int:
    """Drop every client connection to the run's database except the simulator's, the reader's and ours."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(server.url("postgres"), autocommit=True, application_name="fault-driver") as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND coalesce(application_name, '') <> ALL(%s)",
            (name, list(OURS)),
        ).fetchall()
    return len(rows)


@contextmanager
def unwritable_dir(kind: str, scratch: Path) -> Iterator[Path | None]:
    """A backup destination that fails like a full or read-only disk: a 16 KiB tmpfs ('full') or
    an empty immutable directory ('immutable'); None when this machine cannot make one."""
    where = scratch / f"bad-backup-{kind}-{time.monotonic_ns()}"
    where.mkdir(parents=True)
    cmd, undo = (["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], ["umount", str(where)]) \
        if kind == "full" else (["chattr", "+i", str(where)], ["chattr", "-i", str(where)])
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield where / "bk" if kind == "full" else where
    finally:
        subprocess.run(undo, capture_output=True, check=True)
