"""The bugs the fault suite found, each pinned down deterministically (the seeds that found them
stay in test_lifecycle.CI_SEEDS; docs/faults.md lists them).

- seed 1: a backend terminated during a view cutover dropped the cutover lock with its
  connection while the switch went on, then the unlock raised a traceback although the switch
  had happened; and a switch killed between `sqlmesh plan` and its event left config.yaml and
  the views ahead of the event log, after which every rerun said "already serves" (cutover)
  or "fix embed_active by hand" (rollback), so the log never caught up.
- seed 1, in-place phase: the rerun of an in-place cutover/rollback that failed or was killed
  after its swap swapped again (a rollback's rerun put the new space back in Honcho's column).
- seed 3: a short burst of malformed (NaN) responses from the endpoint skipped a healthy row
  for good, so the new space never had it although coverage said 100 %.
- seed 45: a cutover killed -9 while SQLMesh's forked workers loaded the project left them
  alive, holding the cutover lock; every later cutover was refused.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embed.config import Config
from embed.db.connection import connect
from embed.fill.backfill import Options, run_pass
from embed.store import serving
from tests.faults import checker
from tests.faults.endpoint import Endpoint
from tests.faults.injectors import terminate_backends
from tests.faults.world import API_KEY_ENV, DIMS, HTTP, LEGACY, World
from tests.support.backfill import Proc
from tests.support.badserver import BadServer
from tests.support.gate import plant_gates
from tests.test_sqlmesh_gates import fill_store

pytestmark = pytest.mark.faults


@pytest.fixture
def run(fault_world: World, tmp_path: Path) -> tuple[Config, str]:
    project, url = fault_world.new_run(tmp_path)
    return Config.load(project, "local"), url


@pytest.fixture
def ready(run: tuple[Config, str], fault_world: World, tmp_path: Path) -> Iterator[tuple[Config, str, dict[str, str]]]:
    """A database where every gate for the HTTP space passes (planted inputs, filled store), and
    the endpoint up (an in-place rollback embeds the rows written since with the legacy model)."""
    cfg, url = run
    for source in cfg.sources:
        fill_store(url, cfg, source, HTTP)
    plant_gates(url, cfg, cfg.space(HTTP))
    endpoint = Endpoint(fault_world.port, DIMS, tmp_path, tmp_path / "endpoint.log")
    endpoint.start()
    try:
        yield cfg, url, {"EMBED_PROJECT": str(cfg.project), API_KEY_ENV: fault_world.api_key}
    finally:
        endpoint.stop()


def test_a_burst_of_malformed_responses_skips_no_row(run: tuple[Config, str]) -> None:
    cfg, url = run
    with BadServer(dims=cfg.space(HTTP).dims) as bad:
        bad.plan = ["ok", "nan", "nan", "nan", "wrong_dims"]
        space = cfg.space(HTTP)
        space = dataclasses.replace(space, options={**space.options, "endpoint": bad.url, "api_key_env": None})
        out = run_pass(cfg, url, space, opts=Options(progress=False, chunk_rows=8))
    assert set(out.skipped) <= {"empty"}, out.skipped
    for source in cfg.sources:
        assert checker.check_store(cfg, url, HTTP, source) == []


def _switch(url: str, env: dict[str, str], *args: str, pause: str | None = None,
            resume: Path | None = None) -> Proc:
    extra = {**env, **({"EMBED_TEST_PAUSE_AT": pause} if pause else {}),
             **({"EMBED_TEST_RESUME_FILE": str(resume)} if resume else {})}
    return Proc(url, *args, env=extra)


def test_a_switch_killed_before_its_event_is_completed_by_the_rerun(
        ready: tuple[Config, str, dict[str, str]]) -> None:
    cfg, url, env = ready
    p = _switch(url, env, "cutover", "--space", HTTP, pause="switch_views_done")
    p.wait_for("embed-test: paused at switch_views_done")
    p.kill9()
    behind = checker.check_active(cfg, url)  # the views serve HTTP, nothing recorded it yet
    assert {v["recorded"] for v in behind} == {LEGACY} and {tuple(v["served"]) for v in behind} == {(HTTP,)}

    again = _switch(url, env, "cutover", "--space", HTTP)
    again.p.wait(300)
    assert again.p.returncode == 0, again.err[-3:]
    assert f"documents: {LEGACY} -> {HTTP}" in again.out
    assert checker.check_active(cfg, url) == [] and checker.check_events(cfg, url) == []

    p = _switch(url, env, "rollback", pause="switch_aimed")  # killed before its plan
    p.wait_for("embed-test: paused at switch_aimed")
    p.kill9()
    again = _switch(url, env, "rollback")
    again.p.wait(300)
    assert again.p.returncode == 0, again.err[-3:]
    assert f"documents: {HTTP} -> {LEGACY}" in again.out
    assert checker.check_active(cfg, url) == [] and checker.check_events(cfg, url) == []


def test_a_lost_lock_connection_stops_the_switch_before_it_happens(
        ready: tuple[Config, str, dict[str, str]], fault_world: World, tmp_path: Path) -> None:
    cfg, url, env = ready
    resume = tmp_path / "resume"
    p = _switch(url, env, "cutover", "--space", HTTP, pause="cutover_gated", resume=resume)
    p.wait_for("embed-test: paused at cutover_gated")
    assert terminate_backends(fault_world.server, url) >= 1  # the lock's connection among them
    resume.touch()
    p.p.wait(120)
    for t in p._t:
        t.join(5)
    assert p.p.returncode == 1 and not any("Traceback" in ln for ln in p.err), p.err[-5:]
    assert p.err[-1] == ("embed: error: lost the database connection holding the cutover lock; "
                         "nothing switched: run it again")
    assert checker.check_active(cfg, url) == []
    with connect(url) as conn:
        assert serving.read(conn, cfg)["documents"].space_fp == cfg.space(LEGACY).fingerprint


def test_an_inplace_switch_killed_after_its_swap_is_finished_not_swapped_again(
        ready: tuple[Config, str, dict[str, str]]) -> None:
    """Found in the in-place phase (seed 1): the rerun of an in-place switch that failed or died
    after its swap swapped again: a rollback's rerun put the cutover's space back in Honcho's
    column under a 'rollback' event, a cutover's rerun was stuck ("already live: nothing to
    stage"). The swap now records itself in its own transaction, and the rerun finishes the
    views instead of swapping."""
    cfg, url, env = ready
    p = _switch(url, env, "cutover", "--space", HTTP, "--mode", "honcho-inplace", "--writers-stopped",
                pause="switch_committed")
    p.wait_for("embed-test: paused at switch_committed")
    p.kill9()
    assert checker.check_inplace(cfg, url) == []  # swapped and recorded together
    assert {v["views_behind"] for v in checker.check_active(cfg, url)} == {True}
    again = _switch(url, env, "cutover", "--space", HTTP, "--mode", "honcho-inplace", "--writers-stopped")
    again.p.wait(300)
    for t in again._t:
        t.join(5)
    assert again.p.returncode == 0, again.err[-3:]
    assert checker.check_inplace(cfg, url) == [] and checker.check_events(cfg, url) == []
    assert checker.check_active(cfg, url) == []

    p = _switch(url, env, "rollback", "--writers-stopped", pause="switch_committed")  # swapped back
    p.wait_for("embed-test: paused at switch_committed")
    p.kill9()
    again = _switch(url, env, "rollback", "--writers-stopped")
    again.p.wait(300)
    for t in again._t:
        t.join(5)
    assert again.p.returncode == 0, again.err[-3:]
    assert any(ln.startswith(f"finished: {LEGACY}") for ln in again.out)  # not swapped twice: the views caught up
    assert checker.check_inplace(cfg, url) == [] and checker.check_events(cfg, url) == []  # legacy, not swapped twice
    assert checker.check_active(cfg, url) == []


def test_a_connection_lost_mid_command_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by seed 3 (pg_restart during an in-place swap's batches): the lost connection
    reached the operator as a psycopg traceback. Now any command says it in one line."""
    import psycopg
    from click.testing import CliRunner

    import embed.fill.status
    from embed.cli import cli

    def lost(*args: object, **kwargs: object) -> None:
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    monkeypatch.setattr(embed.fill.status, "status", lost)
    r = CliRunner().invoke(cli, ["--db", "postgresql://u:secret@127.0.0.1:1/x", "status"])
    assert r.exit_code == 1 and "Traceback" not in r.output and "secret" not in r.output
    assert r.output.strip().splitlines()[-1] == ("embed: error: lost the database connection (AdminShutdown: "
                                                  "terminating connection due to administrator command); "
                                                  "run the same command again")


FORKS = """import os, sys
from pathlib import Path
forks = []
os.register_at_fork(before=lambda: forks.append(1))
from embed import mesh
from embed.config import Config
mesh.plan(Config.load(Path(sys.argv[1]), "local"), sys.argv[2])
print("forks", len(forks))
"""


def test_planning_forks_no_process_that_could_outlive_a_killed_cutover(run: tuple[Config, str]) -> None:
    """Found by seed 45: SQLMesh loaded the project in forked workers, which inherit the socket
    of the connection holding the cutover lock; a cutover killed -9 while they loaded left them
    blocked on each other's pipes, alive, holding the lock, and every later cutover said
    "another embed cutover or rollback is running". embed now plans without forking."""
    cfg, url = run
    r = subprocess.run([sys.executable, "-c", FORKS, str(cfg.project), url], cwd=cfg.project,
                       env={k: v for k, v in os.environ.items() if k != "MAX_FORK_WORKERS"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "forks 0"
