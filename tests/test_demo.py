"""README command 1 in miniature: `embed demo` on its own embedded server, twice; then plain
`sqlmesh` reaches the same database through `embed db env`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embed.localdb import LocalServer
from tests.conftest import ROOT, free_port, server_home

EMBED = [sys.executable, "-m", "embed"]


def run(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def demo_env():
    home = server_home()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env.update(EMBED_HOME=str(home), EMBED_PGPORT=str(free_port()))
    yield env
    LocalServer(home=home, port=int(env["EMBED_PGPORT"])).destroy()


def test_demo_runs_end_to_end_and_again(demo_env: dict[str, str]) -> None:
    first = run([*EMBED, "demo", "--scale", "tiny"], demo_env)
    assert first.returncode == 0, first.stderr[-2000:]
    for step in ("[db", "[seed", "[init", "[plan", "[query"):
        assert step in first.stdout
    assert "legacy vectors from minilm_l6 (384d)" in first.stdout
    assert "10 ids" in first.stdout
    again = run([*EMBED, "demo", "--scale", "tiny"], demo_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "corpus already seeded" in again.stdout and "0 table(s) created" in again.stdout

    exports = run([*EMBED, "db", "env"], demo_env).stdout
    env = dict(demo_env)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    sqlmesh = [str(Path(sys.executable).parent / "sqlmesh")]
    plan = run([*sqlmesh, "plan", "--auto-apply", "--no-prompts"], env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    audit = run([*sqlmesh, "audit"], env)
    assert audit.returncode == 0 and "0 audit errors" in audit.stdout, audit.stdout[-2000:]
