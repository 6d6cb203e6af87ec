"""The embedded default server: idempotent up, crash detection and restart, clean down."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from click.testing import CliRunner

from embed.cli import cli
from embed.db.connection import ensure_pgvector
from embed.db.localpg import LocalServer
from tests.conftest import free_port, server_home


@pytest.fixture
def server():
    s = LocalServer(home=server_home(), port=free_port())
    yield s
    s.destroy()


def test_up_is_idempotent_and_has_pgvector_08(server: LocalServer) -> None:
    url = server.up()
    pid = server.running_pid()
    assert server.up() == url and server.running_pid() == pid
    version = ensure_pgvector(url)
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 8)
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_a_killed_server_is_detected_and_restarted_with_its_data(server: LocalServer) -> None:
    url = server.up()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep (x int)")
        conn.execute("INSERT INTO keep VALUES (42)")
    os.kill(server.running_pid(), signal.SIGKILL)
    for _ in range(50):
        if not server.status()["running"]:
            break
        time.sleep(0.1)
    assert server.status()["running"] is False
    server.up()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM keep").fetchone()[0] == 42


def test_cli_db_lifecycle(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_HOME", str(server.home))
    monkeypatch.setenv("EMBED_PGPORT", str(server.port))
    runner = CliRunner()
    r = runner.invoke(cli, ["db", "status", "--json"])
    assert r.exit_code == 3 and '"running": false' in r.output
    r = runner.invoke(cli, ["db", "up"])
    assert r.exit_code == 0 and "pgvector 0.8" in r.output
    r = runner.invoke(cli, ["db", "url"])
    assert r.output.strip() == server.url()
    r = runner.invoke(cli, ["db", "env"])
    assert f"export EMBED_PGPORT={server.port}" in r.output and "export EMBED_GATEWAY=local" in r.output
    assert runner.invoke(cli, ["db", "down"]).output.strip() == "stopped"
    assert runner.invoke(cli, ["db", "down"]).output.strip() == "was not running"
    r = runner.invoke(cli, ["spaces"])  # works offline, says the database is unknown
    assert r.exit_code == 0 and "not in database" in r.output
