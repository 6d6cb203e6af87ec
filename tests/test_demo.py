"""README command 1 in miniature: `embed demo` on its own embedded server, twice; then plain
`sqlmesh` reaches the same database through `embed db env`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from embed.db.localpg import LocalServer
from embed.db.localredis import LocalRedis
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
    LocalRedis(home / "demo" / "redis").down()  # a demo killed by the timeout could not stop its own
    LocalServer(home=home, port=int(env["EMBED_PGPORT"])).destroy()


STEPS = ("[db", "[project", "[redis", "[seed", "[doctor", "[init", "[plan", "[reset", "[backup", "[smoke", "[backfill",
         "[sync", "[shadow", "[gate", "[preview", "[cutover", "[query", "[rollback", "[retire", "[evidence")


def _commands() -> set[bytes]:
    """argv[0] of every process (a daemonized redis-server names its address there)."""
    out = set()
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.add(f.read_bytes().split(b"\0")[0])
        except OSError:  # it ended meanwhile
            continue
    return out


def assert_redis_stopped(out: str) -> None:
    """The demo's private redis-server is gone once it finished (no such process, its port
    closed), and the last line says what is still running and how to stop it."""
    port = int(re.search(r"private redis-server \(Honcho's cache\) at redis://127\.0\.0\.1:(\d+)/0", out).group(1))
    assert f"redis-server 127.0.0.1:{port}".encode() not in _commands()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    assert "still running: the embedded PostgreSQL" in out.splitlines()[-1]
    assert "`embed db down`" in out.splitlines()[-1]


def test_demo_runs_end_to_end_and_again(demo_env: dict[str, str]) -> None:
    first = run([*EMBED, "demo", "--scale", "tiny"], demo_env)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    for step in STEPS:
        assert step in out, step
    assert "legacy vectors from minilm_l6 (384d)" in out
    assert re.search(r"dry run of the cutover, nothing changed: \d+ statement\(s\) in order \(locks: .*ACCESS "
                     r"EXCLUSIVE.*\), 0 gate\(s\) failing", out)  # the active views' re-pointing, gates passed
    assert "0 blocking (role postgres)" in out and "warning: documents: " in out  # doctor: one line per finding
    # what consumers call after the switch reproduces the stored vectors (the verify gate needs it)
    assert re.search(r"e5_small's endpoint \(in-process\): \d+ stored rows reproduced, min cosine [\d.]+, 0 offenders", out)
    assert "BLOCKED: 1 gate(s) failed: documents.coverage" in out  # the live writer's lag, visibly
    assert "PASS, 20/20 gates" in out  # 8 gates x 2 sources + the dims/single-space audits
    # the in-place path: verify on Honcho's live column, the old model's rows caught and repaired
    assert re.search(r"Honcho's live column: \d+ rows checked .*, 0 offenders", out)
    assert re.search(r"the next watch pass flags 3 of 3 new rows .*gate red on .*verify; or roll back: embed rollback", out)
    assert "3 vector(s) replaced by e5_small's own; now 0 offenders" in out
    assert re.search(r"in-place rollback to minilm_l6 .* \d+ sampled rows, min cosine [\d.]+, 0 offenders", out)
    assert out.count("all from e5_small") == 2 and "e5_small PASSED" in out
    assert "ANN recall 1.000" in out and "nDCG@10" in out and "Redis RDB" in out
    for source in ("documents", "message_embeddings"):  # labels from Honcho's provenance, a verdict each
        assert re.search(rf"  {source}: PASS: e5_small vs minilm_l6, .*; provenance labels, \d+ queries", out)
    work = Path(demo_env["EMBED_HOME"]) / "demo"
    assert_redis_stopped(first.stdout)
    assert (work / "shadow-documents.html").read_text().count("<svg") >= 3
    assert (work / "evidence" / "index.md").is_file()
    # what production reads lives in the database: the demo's config.yaml is the checkout's own
    assert (work / "project" / "config.yaml").read_text() == (ROOT / "config.yaml").read_text()

    again = run([*EMBED, "demo", "--scale", "tiny"], demo_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "corpus already seeded" in again.stdout and "0 table(s) created" in again.stdout
    assert "rolled back to minilm_l6 to replay" in again.stdout
    assert "again: already" in again.stdout
    assert again.stdout.count("all from e5_small") == 2
    assert_redis_stopped(again.stdout)

    exports = run([*EMBED, "db", "env"], demo_env).stdout
    env = dict(demo_env)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    sqlmesh = [str(Path(sys.executable).parent / "sqlmesh")]
    project = work / "project"
    plan = subprocess.run([*sqlmesh, "plan", "--auto-apply", "--no-prompts"], env=env, cwd=project,
                          capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    audit = subprocess.run([*sqlmesh, "audit"], env=env, cwd=project, capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0 and "0 audit errors" in audit.stdout, audit.stdout[-2000:]
