"""The lifecycle driver: one seeded run of the whole migration, as an operator would do it,
while a simulated Honcho writes, a reader samples and faults are injected.

    backfill fake_http, backfill e5_small -> sync -> backup (first into a broken directory)
    -> planted smoke + shadow inputs -> verify the endpoint -> [gate] -> cutover (view) -> sync -> rollback -> sync
    -> cutover (view) -> [rollback/cutover cycles while time is left]
    -> [in-place: stage -> cutover -> sync -> rollback -> sync -> stage -> cutover]
    -> final sync -> check

Every step is a real `embed` subprocess (EMBED_PROJECT = the run's project copy, --db URL),
retried after a failure until it succeeds, as an operator would; a failure must be clear
(exit 1, one `embed: error:` line, no traceback) and a step that never succeeds is a finding.
Cutovers are tried on a live Honcho first; when the coverage gate blocks them (rows written
since the last sync), the operator quiesces Honcho's writers, syncs and tries again.
The result (steps, attempts, faults injected by kind, checks, reader statistics and violations)
is written to the run's result.json; violations carry ids, names and counts only.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from embed.config import Config
from embed.db.connection import connect
from embed.store import serving
from tests.faults import checker
from tests.faults.common import write_json
from tests.faults.endpoint import Endpoint
from tests.faults.injectors import Injector, Outcome, unwritable_dir
from tests.faults.world import API_KEY_ENV, DIMS, E5, HTTP, ROOT, World
from tests.support.gate import plant_shadow, plant_smoke

SIM_RATE = 3.0  # Honcho operations per second
INPLACE = "honcho-inplace"
SWITCH_CLEAR = ("another embed cutover or rollback is running", "already serves")


class StepFailed(Exception):
    """A step that did not succeed within its attempts: the run stops there (and is a finding)."""


@dataclass
class Result:
    """What one run did and found (docs/faults.md quotes the totals over many runs)."""

    seed: int
    inplace: bool = False
    seconds: float = 0.0
    steps: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    violations: list[dict[str, Any]] = field(default_factory=list)
    reader: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "inplace": self.inplace, "seconds": round(self.seconds, 1), "steps": dict(self.steps),
                "attempts": self.attempts, "faults": dict(self.faults), "checks": dict(self.checks),
                "violations": self.violations, "reader": self.reader, "sim": self.sim}


class Run:
    """One seeded run: its own database clone, project copy, endpoint, simulator and reader."""

    def __init__(self, world: World, seed: int, seconds: float, workdir: Path, inplace: bool) -> None:
        self.world, self.seed, self.seconds, self.inplace = world, seed, seconds, inplace
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True)
        self.project, self.url = world.new_run(workdir)
        self.cfg = Config.load(self.project, "local")
        self.by_fp = {sp.fingerprint: sp.name for sp in self.cfg.spaces.values()}
        self.env = {"EMBED_PROJECT": str(self.project), API_KEY_ENV: world.api_key}
        self.endpoint = Endpoint(world.port, DIMS, workdir, self.logs / "endpoint.log")
        self.faults = Injector(self.rng, self.url, self.env, world.server, self.endpoint, workdir)
        self.result = Result(seed=seed, inplace=inplace)
        self.n = 0
        self.sim: subprocess.Popen[bytes] | None = None
        self.reader: subprocess.Popen[bytes] | None = None
        self.pg_log_start = world.server.logfile.stat().st_size if world.server.logfile.exists() else 0

    # -- helpers ----------------------------------------------------------------------------------
    def violation(self, what: str, **kw: Any) -> None:
        self.result.violations.append({"check": "driver", "what": what, **kw})

    def _spawn(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{module.rsplit('.', 1)[1]}.out").open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _save(self, step: str, out: Outcome) -> None:
        for k, p in enumerate(out.procs):
            self.n += 1
            base = self.logs / f"{self.n:03d}-{step}{'-b' if k else ''}"
            base.with_suffix(".out").write_text("\n".join(p.out) + "\n")
            base.with_suffix(".err").write_text("\n".join(p.err) + "\n")

    def _clear(self, step: str, out: Outcome) -> bool:
        """Did the attempt succeed? A failure we did not cause by killing must be clear: exit 1 and
        one `embed: error:` line (`embed gate` prints its table and BLOCKED on stdout instead)."""
        self.result.attempts += 1
        self._save(step, out)
        if out.hung:
            self.violation("embed process hung", step=step, fault=out.fault)
        for p in out.procs:
            rc = p.p.returncode
            if rc == 0 or (out.killed and rc == -signal.SIGKILL):
                continue
            err = [ln for ln in p.err if ln.strip()]
            said = (bool(err) and err[-1].startswith("embed: error:")) or (step == "gate" and "BLOCKED" in "".join(p.out))
            if rc != 1 or any("Traceback" in ln for ln in err) or not said:
                self.violation("unclear failure", step=step, fault=out.fault, rc=rc, last=err[-1:] or None)
        return out.rc == 0 and not out.killed

    def control_sim(self, **order: Any) -> None:
        """Tell Honcho what to do (pause its writers, switch its model) and wait until it has."""
        path = self.workdir / "sim.control.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**current, **order})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                state = json.loads((self.workdir / "sim.state.json").read_text())
                if all(state.get(k) == v for k, v in order.items()):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise StepFailed(f"the simulator did not acknowledge {order}")

    # -- steps -------------------------------------------------------------------------------------
    def step(self, name: str, args: list[str], menu: str | None, attempts: int = 8) -> Outcome:
        for attempt in range(1, attempts + 1):
            fault = self.faults.pick(menu, attempt) if menu else None
            out = self.faults.attempt(fault, args)
            if self._clear(name, out):
                self.result.steps[name] += 1
                return out
        raise StepFailed(f"{name} did not succeed in {attempts} attempts")

    def backfill(self, space: str) -> None:
        menu = "backfill_http" if space == HTTP else "backfill_local"
        self.step(f"backfill-{space}", ["backfill", "--space", space, "--chunk-rows", "16", "--no-progress"], menu)

    def sync(self, space: str, faults: bool = True) -> None:
        menu = ("sync_http" if space == HTTP else "sync_local") if faults else None
        self.step(f"sync-{space}", ["sync", "--space", space, "--chunk-rows", "16", "--no-progress"], menu)

    def backup(self) -> None:
        """First into a directory that cannot take it (must fail clearly and register nothing),
        then for real (the backup gate needs one)."""
        kind = self.rng.choice(["full", "immutable"])
        with unwritable_dir(kind, self.workdir) as bad:
            if bad is not None:
                before = self._backups()
                out = self.faults.attempt(None, ["backup", "--out", str(bad)])
                self.faults.injected[f"backup:{kind}"] += 1
                self._clear("backup-bad", out)
                if out.rc != 1:
                    self.violation("backup into a broken directory did not fail", kind=kind, rc=out.rc)
                if self._backups() != before:
                    self.violation("a failed backup was registered", kind=kind)
                left = [p.name for p in (bad.parent if kind == "full" else bad).iterdir()]
                if left:
                    self.violation("a failed backup left files behind", kind=kind, files=left[:5])
        for attempt in range(1, 6):
            fault = self.faults.pick("backup", attempt)
            if fault and fault.startswith("backup:"):
                fault = "kill9"
            out = self.faults.attempt(fault, ["backup", "--out", str(self.workdir / f"backup-{attempt}")])
            if self._clear("backup", out):
                self.result.steps["backup"] += 1
                return
        raise StepFailed("backup did not succeed")

    def _backups(self) -> int:
        with psycopg.connect(self.url, application_name="fault-driver") as conn:
            return conn.execute("SELECT count(*) FROM embed_store.backups").fetchone()[0]

    def plant_inputs(self) -> None:
        """Smoke evidence and shadow runs for the HTTP space (their commands have their own tests;
        here they only have to exist and be fresh), after the last backfill."""
        plant_smoke(self.url, self.cfg.space(HTTP), endpoint_class="loopback")
        for source in self.cfg.sources:
            plant_shadow(self.url, self.cfg, source, self.cfg.space(HTTP))

    def verify_endpoint(self) -> None:
        """The endpoint the switch will send Honcho to reproduces the stored vectors (the verify
        gate needs it after the last backfill): a real `embed verify --where endpoint`."""
        self.step("verify-endpoint", ["verify", "--space", HTTP, "--where", "endpoint", "--sample", "16"], None)

    def switch(self, kind: str, mode: str = "view") -> None:
        """A cutover to the HTTP space or a rollback, as an operator does it under a live Honcho.

        View mode: the first try may be on a live Honcho (the coverage gate then usually blocks
        it: rows written since the last sync); then Honcho's writers are paused, the space
        synced and the switch tried again. In-place mode: writers always paused (they would
        write the old model's vectors into the swapped column), and after the swap Honcho is
        switched to the new model before its writers resume, as the printed settings say.
        Before a retry the operator looks at the event log (`embed history`): a switch that
        took effect although its command was killed is done (and one whose command *reported*
        a failure is a finding: rerunning a rollback that did happen would undo it)."""
        inplace = mode == INPLACE
        args = ["cutover", "--space", HTTP, *(["--mode", INPLACE] if inplace else [])] if kind == "cutover" \
            else ["rollback"]
        if inplace:
            args.append("--writers-stopped")  # the operator paused Honcho's writers (below)
        target = self.cfg.space(HTTP).fingerprint if kind == "cutover" else self._recorded(mode)[1]
        live = not inplace and self.rng.random() < 0.5
        resume: dict[str, Any] = {"paused": False}
        try:
            for attempt in range(1, 9):
                if inplace or not (attempt == 1 and live):
                    self.control_sim(paused=True)
                if kind == "cutover" and not (attempt == 1 and live):
                    self.sync(HTTP, faults=attempt > 1)
                fault = self.faults.pick("switch", attempt)
                before = self._switch_events()
                out = self.faults.attempt(fault, args)
                won = self._clear(kind, out) or any(p.p.returncode == 0 for p in out.procs)
                if fault == "concurrent":
                    self._judge_concurrent(kind, out, before)
                if not won and self._recorded(mode)[0] == target:
                    honest = any("committed, recorded" in ln for p in out.procs for ln in p.err)
                    # a finding only if this attempt switched (an earlier, killed one may have)
                    if not out.killed and not honest and self._switch_events() > before:
                        self.violation("a switch reported failure but took effect", step=kind, fault=fault)
                    continue  # the operator reruns the same command: it finishes what is left, or says `already`
                if won:
                    self.result.steps[f"{kind}-{mode}"] += 1
                    self._consistent(kind)
                    if inplace:
                        resume["space"] = self.by_fp[target]
                    return
            raise StepFailed(f"{kind} ({mode}) did not succeed in 8 attempts")
        finally:
            self.control_sim(**resume)

    def _recorded(self, mode: str = "view") -> tuple[str | None, str | None]:
        """(to_fp, from_fp) of the last successful switch (in-place: the last in-place one), when
        every source agrees on it (no switch yet: the legacy space)."""
        only = INPLACE if mode == INPLACE else None
        with psycopg.connect(self.url, application_name="fault-driver") as conn:
            rows = set(conn.execute(
                "SELECT DISTINCT ON (source) details ->> 'to_fp', details ->> 'from_fp' FROM embed_store.events "
                "WHERE kind IN ('cutover', 'rollback') AND outcome = 'ok' AND (%s::text IS NULL OR "
                "coalesce(details ->> 'mode', 'view') = %s) ORDER BY source, at DESC, id DESC", (only, only)).fetchall())
        if not rows:
            return self.cfg.legacy_space.fingerprint, None
        return rows.pop() if len(rows) == 1 else (None, None)

    def _switch_events(self) -> int:
        with psycopg.connect(self.url, application_name="fault-driver") as conn:
            return conn.execute("SELECT count(*) FROM embed_store.events WHERE kind IN ('cutover', 'rollback') "
                                "AND outcome = 'ok'").fetchone()[0]

    def _judge_concurrent(self, kind: str, out: Outcome, before: int) -> None:
        """Two identical switches at once: at most one switches (the other may find it done, after
        it, and say so: both succeed, as a rerun does), a loser says why, clearly."""
        winners = [p for p in out.procs if p.p.returncode == 0]
        losers = [p for p in out.procs if p.p.returncode != 0]
        # a winner that finished an interrupted switch, or found it done, switched nothing: no new event
        switched = [p for p in winners if not any(ln.startswith(("finished:", "already on")) for ln in p.out)]
        if len(switched) > 1:
            self.violation("two concurrent switches both switched", step=kind)
        if winners and losers and not any(any(m in ln for m in SWITCH_CLEAR) for p in losers for ln in p.err):
            self.violation("the losing concurrent switch did not say why", step=kind,
                           last=[p.err[-1:] for p in losers])
        added = self._switch_events() - before
        if added != len(switched) * len(self.cfg.sources):
            self.violation("switch events do not match the winners", step=kind, events=added, winners=len(winners),
                           switched=len(switched))

    def _consistent(self, step: str) -> None:
        """Right after a switch: log, views, embed_store.serving and Honcho's columns agree (the checker
        repeats it at the end)."""
        for v in checker.check_active(self.cfg, self.url) + checker.check_inplace(self.cfg, self.url):
            self.violation("after a switch: " + v.pop("what"), step=step, **v)

    # -- the run -------------------------------------------------------------------------------------
    def start_background(self) -> None:
        self.endpoint.start()
        self.sim = self._spawn("tests.faults.honcho_sim", self.url, "--seed", str(self.seed), "--rate",
                               str(SIM_RATE), "--workdir", str(self.workdir))
        self.reader = self._spawn("tests.faults.reader", self.url, "--project", str(self.project), "--workdir",
                                  str(self.workdir), "--seed", str(self.seed), "--interval", "0.1", "--inplace")
        self.control_sim(paused=False)

    def stop_background(self) -> None:
        for proc in (self.sim, self.reader):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    self.violation("a background process did not stop", pid=proc.pid)
        self.endpoint.stop()

    def lifecycle(self) -> None:
        started = time.monotonic()
        self.backfill(HTTP)
        self.backfill(E5)
        self.sync(HTTP)
        self.backup()
        self.plant_inputs()
        self.verify_endpoint()
        if self.rng.random() < 0.3:  # informational (the cutover runs the gates itself): may block on lag
            self._clear("gate", self.faults.attempt(None, ["gate", "--space", HTTP]))
        self.switch("cutover")
        self.sync(HTTP)
        self.switch("rollback")
        self.sync(HTTP)
        self.switch("cutover")
        while time.monotonic() - started < self.seconds:
            self.sync(self.rng.choice([HTTP, HTTP, E5]))
            self.switch("rollback" if self._active() == HTTP else "cutover")
        if self.inplace:
            self.inplace_phase()

    def _active(self) -> str:
        with connect(self.url) as conn:
            return self.cfg.label(serving.read(conn, self.cfg)["documents"].space_fp)

    def inplace_phase(self) -> None:
        """Honcho's own columns: stage ahead of time, swap, roll back, swap again (after rolling
        the views back: one source is switched one way at a time)."""
        if self._active() != self.cfg.legacy_space.name:
            self.switch("rollback")
        self.step("stage", ["cutover", "--space", HTTP, "--mode", INPLACE, "--stage-only"], "stage")
        self.switch("cutover", INPLACE)
        self.sync(HTTP)
        self.switch("rollback", INPLACE)
        self.sync(HTTP)
        self.step("stage", ["cutover", "--space", HTTP, "--mode", INPLACE, "--stage-only"], "stage")
        self.switch("cutover", INPLACE)

    def finish(self) -> None:
        """Honcho stops; one last clean sync per space; the reader stops; everything is checked."""
        if self.sim and self.sim.poll() is None:
            self.control_sim(paused=True)
        self.endpoint.misbehave([], clear=True)
        if self.endpoint.proc is None or self.endpoint.proc.poll() is not None:
            self.endpoint.start()
        for space in (HTTP, E5):
            self.sync(space, faults=False)
        time.sleep(0.5)  # a few reader samples of the final state
        self.stop_background()
        report = checker.check_all(self.cfg, self.url, inplace=True)
        self.result.checks.update(report.checks)
        self.result.violations += report.violations
        self._reader_results()
        self._privacy()

    def _reader_results(self) -> None:
        stats = self.workdir / "reader.stats.json"
        self.result.reader = json.loads(stats.read_text()) if stats.exists() else {}
        state = self.workdir / "sim.state.json"
        self.result.sim = json.loads(state.read_text()) if state.exists() else {}
        self.result.checks["reader samples"] += self.result.reader.get("samples", 0)
        if not self.result.reader.get("samples"):
            self.violation("the reader took no samples")
        found = self.workdir / "reader.violations.jsonl"
        for line in (found.read_text().splitlines() if found.exists() else []):
            self.result.violations.append({"check": "reader", **json.loads(line)})
        errors = self.workdir / "reader.errors.jsonl"
        missing: Counter[str] = Counter()
        for line in (errors.read_text().splitlines() if errors.exists() else []):
            e = json.loads(line)
            if "42P01" in e["error"]:  # a view readers query vanished (lost connections are the injected faults)
                missing[e["error"]] += 1
        for error, n in missing.items():  # seeds 1-34 once found it during every in-place cutover
            self.result.violations.append(
                {"check": "reader", "what": "a read failed: relation missing", "error": error, "times": n})

    def _privacy(self) -> None:
        pg_log = self.logs / "postgres.log"
        with self.world.server.logfile.open("rb") as f:
            f.seek(self.pg_log_start)
            pg_log.write_bytes(f.read())
        files = [p for p in sorted(self.workdir.rglob("*")) if p.is_file() and p.suffix in (".out", ".err", ".log",
                                                                                             ".json", ".jsonl")
                 and "project" not in p.parts and not p.name.startswith("endpoint.control")]
        lines, leaks = checker.check_privacy(files, checker.memory_texts(self.cfg, self.url),
                                             re.compile(rf"fz{self.seed}n\d+"), [self.world.api_key])
        self.result.checks["log lines scanned"] += lines
        self.result.checks["privacy"] += 1
        self.result.violations += [{"check": "privacy", **v} for v in leaks]

    def run(self) -> Result:
        t0 = time.monotonic()
        try:
            self.start_background()
            self.lifecycle()
        except StepFailed as e:
            self.violation("step failed", reason=str(e))
        finally:
            try:
                self.finish()
            except StepFailed as e:
                self.violation("final sync failed", reason=str(e))
            finally:  # whatever stopped the finish (pytest's timeout included): nothing left running
                self.stop_background()
            self.result.faults = self.faults.injected
            self.result.seconds = time.monotonic() - t0
            (self.workdir / "result.json").write_text(json.dumps(self.result.as_dict(), indent=1, default=str))
        return self.result


def run_seed(world: World, seed: int, seconds: float, workdir: Path, inplace: bool = False) -> Result:
    return Run(world, seed, seconds, workdir, inplace).run()
