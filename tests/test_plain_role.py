"""The runbook as a plain role, as on managed PostgreSQL (RDS, Cloud SQL, Supabase: no superuser).

A superuser does only what a service console does beforehand: creates the database, installs
pgvector and a login role with CREATE on the `public` schema. That role creates Honcho's tables
(so it owns them, as Honcho's own database user does) and walks the runbook: doctor, init, plan,
backup (pg_dump), backfill, shadow, gate, in-place cutover, rollback, retire dry-run. A privilege
it lacks is refused in one line naming the GRANT (CREATE on the database for `embed init` and
`embed plan`; before pgvector is installed, the CREATE EXTENSION a superuser runs);
another role's session, whose details pg_stat_activity hides from a plain role, still stops the
swap; row-level security that applies to the role refuses the backfill.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from embed import api
from embed.cli import cli
from embed.config import Config
from embed.db.connection import connect
from embed.db.localpg import LocalServer
from embed.embedders import get_embedder
from embed.errors import Blocked
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from tests.conftest import new_database
from tests.support.gate import plant_smoke

pytestmark = pytest.mark.timeout(900)

CANDIDATE = "e5_small"


def _as(url: str, role: str) -> str:
    head, _, tail = url.partition("@")
    return f"{head.split('//')[0]}//{role}:secret@{tail}"


def _cli(project: Path, url: str, *args: str):
    return CliRunner().invoke(cli, ["--project", str(project), "--db", url, *args])


def _refusal(project: Path, url: str, *args: str) -> str:
    r = _cli(project, url, *args)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("embed: error: "), r.output
    return lines[0]


def test_the_runbook_runs_as_a_plain_role_that_owns_honchos_tables(pg_server: LocalServer, project: Path,
                                                                   tmp_path: Path) -> None:
    admin = new_database(pg_server)
    db = admin.rsplit("/", 1)[1]
    role = f"honcho_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'secret\' NOSUPERUSER NOCREATEDB NOCREATEROLE')
    url = _as(admin, role)
    assert "a superuser (or the service's console) installs it once: CREATE EXTENSION vector;" in \
        _refusal(project, url, "init")  # pgvector is not a trusted extension
    with psycopg.connect(admin, autocommit=True) as su:  # what the service console does once
        su.execute("CREATE EXTENSION vector")
        su.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"')
        su.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{role}"')  # Honcho's migrations, the seed's eval schema
    cfg = Config.load(project, "local")
    with get_embedder(cfg.legacy_space) as legacy, connect(url) as conn:  # Honcho's tables, owned by the role
        seed(conn, generate(seed=7, documents=60, messages=20), dims=384,
             vectors=lambda texts: legacy.embed(texts, "passage").vectors)
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'REVOKE CREATE ON DATABASE "{db}" FROM "{role}"')

    line = _refusal(project, url, "init")
    assert f'embed init needs CREATE on database {db}, which role {role} lacks; nothing changed' in line
    assert f'Fix: GRANT CREATE ON DATABASE "{db}" TO "{role}";' in line
    with connect(url) as conn:
        assert conn.execute("SELECT to_regnamespace('embed_store') IS NULL").fetchone()[0]
    found = api.doctor(cfg, url, spaces=[CANDIDATE])
    assert not found.superuser and [f.fix for f in found.blocking] == [f'GRANT CREATE ON DATABASE "{db}" TO "{role}";']
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{role}"')

    assert api.doctor(cfg, url, spaces=[CANDIDATE]).blocking == ()
    api.init_store(cfg, url)
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'REVOKE CREATE ON DATABASE "{db}" FROM "{role}"')
    assert "embed plan needs CREATE on database" in _refusal(project, url, "plan")  # SQLMesh's schemas
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{role}"')
    api.plan(cfg, url)
    assert api.doctor(cfg, url, spaces=[CANDIDATE]).privileges[0].fix == "not needed: the schemas exist"
    backup = api.take_backup(cfg, url, tmp_path / "backup")  # pg_dump of the whole database, as the role
    assert backup.manifest["database"]["tables"]["public.documents"] == 60
    plant_smoke(url, cfg.space(CANDIDATE))  # the smoke's own run is tested in tests/test_smoke.py
    assert api.backfill(cfg, url, CANDIDATE, progress=False).complete
    api.shadow(cfg, url, baseline=cfg.legacy_space.name, candidates=[CANDIDATE], queries=60)
    assert api.verify(cfg, url, CANDIDATE, where="endpoint", sample=16).passed  # what consumers will call
    gates = api.gate(cfg, url, CANDIDATE)
    assert gates.passed, gates.summary()

    with psycopg.connect(admin, application_name="honcho-api") as honcho:  # another role's session
        honcho.execute("SELECT 1")
        honcho.commit()
        with pytest.raises(Blocked, match=r"other sessions are connected .*honcho-api from an address hidden"):
            api.cutover(cfg, url, CANDIDATE, mode="honcho-inplace")
    done = api.cutover(cfg, url, CANDIDATE, mode="honcho-inplace", writers_policy="writers-stopped")
    assert done.outcome == "switched" and done.swap["lock_ms"] > 0
    back = api.rollback(cfg, url, writers_policy="writers-stopped")
    assert back.outcome == "switched" and back.mode == "honcho-inplace"
    plan = api.retire_plan(cfg, url, CANDIDATE)
    assert not plan.allowed and any("retention" in b for b in plan.blockers)

    # row-level security that applies to the owner itself (FORCE): the backfill would miss rows
    with connect(url) as conn:
        conn.execute("ALTER TABLE documents ENABLE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE documents FORCE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY one_workspace ON documents USING (workspace_name = current_setting('app.ws', true))")
        conn.commit()
    line = _refusal(project, url, "backfill", "--space", CANDIDATE)
    assert f"embed backfill refused, nothing changed: row-level security on public.documents applies to role {role}" \
        in line and "silently missed" in line
    with pytest.raises(Blocked, match=r"^in-place staging refused, nothing changed: row-level security"):
        api.stage(cfg, url, CANDIDATE)
    diagnosis = api.doctor(cfg, url, spaces=[CANDIDATE])
    assert [f.check for f in diagnosis.blocking] == ["rls"]
    assert diagnosis.disk.server_free_bytes is None  # a plain role cannot see the data directory: said so
    assert any(f.check == "disk" and "not visible" in f.message for f in diagnosis.findings)
    with connect(url) as conn:
        conn.execute("ALTER TABLE documents NO FORCE ROW LEVEL SECURITY")  # the owner reads every row again
        conn.commit()
    assert api.doctor(cfg, url, spaces=[CANDIDATE]).blocking == ()

    # a role granted nothing: each step that checks says which GRANT; any other denial is one line too
    stranger = f"stranger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as su:
        su.execute(f'CREATE ROLE "{stranger}" LOGIN PASSWORD \'secret\'')
    line = _refusal(project, _as(admin, stranger), "backfill", "--space", CANDIDATE)
    assert f"embed backfill needs owner of schema embed_store (role {role}), which role {stranger} lacks" in line
    assert f'Fix: GRANT "{role}" TO "{stranger}";  -- or run embed as {role}' in line
    line = _refusal(project, _as(admin, stranger), "status")
    assert "permission denied" in line and "`embed doctor` lists the privileges each step needs" in line
