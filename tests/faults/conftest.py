"""The fault suite's shared world: its own Postgres server and template database (tests/faults/world.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, server_home
from tests.faults import world as world_mod


@pytest.fixture(scope="session")
def fault_world() -> Iterator[world_mod.World]:
    home = server_home()
    w = world_mod.build(home / "server", free_port(), free_port())
    yield w
    w.server.destroy()
    shutil.rmtree(home, ignore_errors=True)
