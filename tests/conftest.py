"""Shared fixtures: one real embedded PostgreSQL + pgvector server per test session, a fresh
database per test, and a private copy of the SQLMesh project for tests that edit config.yaml."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from embed.config import Config
from embed.db.localpg import LocalServer

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("config.yaml", "external_models.yaml", "models", "macros", "audits")
# ranx (the reference the shadow metrics are pinned to, used by tests only) compiles its numba
# kernels on first use: 40-120 s of every suite for query sets of a few hundred, which the same
# kernels run as plain Python score in seconds (the parity tests: 9 s in all).
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")


def hashed_unit_vectors(texts: list[str], dims: int) -> np.ndarray:
    """Unit vectors seeded by each text's sha256: deterministic test data with a stable geometry,
    for tests of storage and views (the embedders have their own tests with real models)."""
    out = np.empty((len(texts), dims), dtype=np.float32)
    for i, t in enumerate(texts):
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
        out[i] = rng.standard_normal(dims)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_home() -> Path:
    """A fresh directory for a server's data, outside pytest's private (0700, re-chmodded by
    every pytest start) temp tree, which the unprivileged server user could not traverse."""
    return Path(tempfile.mkdtemp(prefix="embed-test-pg-")).resolve()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalServer]:
    """A real server for the whole session (the same code path as `embed db up`)."""
    server = LocalServer(home=server_home(), port=free_port())
    server.up()
    yield server
    server.destroy()


def new_database(server: LocalServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


@pytest.fixture
def db_url(pg_server: LocalServer) -> str:
    """A fresh, empty database (pgvector available, not yet created in it)."""
    return new_database(pg_server)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A private copy of the SQLMesh project, so a test may edit config.yaml."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


@pytest.fixture
def cfg() -> Config:
    return Config.load(ROOT, "local")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own database settings."""
    for key in list(os.environ):
        if key.startswith("EMBED_"):
            monkeypatch.delenv(key)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the fault suite (tests/faults, docs/faults.md); env vars EMBED_FAULT_* work too."""
    group = parser.getgroup("faults", "end-to-end fault suite")
    group.addoption("--fault-seeds", default=None, help="seeds to run, e.g. 1-50 or 3,7 (default: the CI seeds)")
    group.addoption("--fault-seconds", default=None, type=float, help="minimum seconds of lifecycle per seed")
    group.addoption("--fault-report", default=None, help="append one JSON line per run to this file")
    group.addoption("--fault-inplace", default=None, help="0: leave out the Honcho in-place phase")


# The longest modules first (minutes each on two cores), so that the two workers (pytest-xdist,
# whole modules per worker: their module fixtures are built once) end together instead of one
# starting the runbook's rehearsal when the other is done.
LONGEST_FIRST = ("test_rehearsal.py", "test_lifecycle.py", "test_demo.py", "test_shadow_provenance.py",
                 "test_gate.py", "test_cutover_inplace.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
