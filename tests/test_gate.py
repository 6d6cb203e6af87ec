"""`embed gate`, `embed cutover --mode view`, `embed rollback` and the before_all guard, on a real
embedded Postgres with real `sqlmesh plan`s.

One database per module (seeded, both spaces' vectors present, views planned); each test plants
the gate inputs it needs (tests/support/gate.py) after wiping the previous test's, so one gate
at a time can be made to fail. Vectors are `hashed_unit_vectors` test data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from embed import mesh
from embed.api import init_store
from embed.cli import cli
from embed.config import Config
from embed.cutover.switch import GateResult, _aimed, cutover, gate, rollback
from embed.db.connection import connect, sqlmesh_env
from embed.db.localpg import LocalServer
from embed.errors import EmbedError
from embed.gates import guard_failure
from embed.honcho.synthetic.corpus import generate
from embed.honcho.synthetic.seed import seed
from embed.store import serving, table_name
from tests.conftest import PROJECT_FILES, ROOT, new_database
from tests.support.backfill import insert_doc
from tests.support.gate import plan_switch, plant_backup, plant_gates, plant_shadow, plant_smoke, plant_verify
from tests.test_sqlmesh_gates import DIMS, active_space_fps, fill_store, text_vectors

SPACE = "e5_small"
LEGACY = "minilm_l6"
INPUTS = ("smoke_runs", "shadow_runs", "backups", "runs", "events")


@pytest.fixture(scope="module")
def world(pg_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    project = tmp_path_factory.mktemp("gate") / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
    url = new_database(pg_server)
    with connect(url, vector=False) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.commit()
    with connect(url) as conn:
        seed(conn, generate(seed=5, documents=50, messages=20), dims=DIMS, vectors=text_vectors)
    cfg = Config.load(project, "local")
    init_store(cfg, url)
    mesh.plan(cfg, url)
    yield project, url


@pytest.fixture
def env(world: tuple[Path, str]) -> Iterator[tuple[Config, str]]:
    """The world with no gate inputs and the legacy space what production reads again."""
    project, url = world
    cfg = Config.load(project, "local")
    with connect(url) as conn:
        conn.execute("DELETE FROM embed_store.serving")  # nothing switched, no switch in flight
        conn.commit()
    mesh.plan(cfg, url)
    with connect(url) as conn:
        for table in (*INPUTS, "skipped", *(table_name(cfg.source(s), cfg.space(SPACE)) for s in cfg.sources)):
            conn.execute(f"DELETE FROM embed_store.{table}")
        conn.commit()
    for source in cfg.sources:
        fill_store(url, cfg, source, SPACE)
    yield cfg, url


def failed(result: GateResult) -> set[str]:
    return {f"{g.source}.{g.gate}" for g in result.gates if not g.passed}


def reads(url: str, cfg: Config) -> dict[str, str]:
    """What embed_store.serving says production reads, per source."""
    with connect(url) as conn:
        return {s: cfg.label(st.space_fp) for s, st in serving.read(conn, cfg).items()}


def events(url: str, kind: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            "SELECT source, outcome, details ->> 'from_fp', details ->> 'to_fp' FROM embed_store.events "
            "WHERE kind = %s ORDER BY id", (kind,)).fetchall()


def age_backfill(url: str, cfg: Config, source: str) -> None:
    """A backfill of the space that finished after the planted shadow run started."""
    with connect(url) as conn:
        conn.execute("INSERT INTO embed_store.runs (kind, space_fp, source, actor, status, finished_at) "
                     "VALUES ('backfill', %s, %s, 'test', 'ok', clock_timestamp())",
                     (cfg.space(SPACE).fingerprint, source))
        conn.commit()


def delete_one_vector(url: str, cfg: Config) -> None:
    with connect(url) as conn:
        conn.execute(f"DELETE FROM embed_store.{table_name(cfg.source('documents'), cfg.space(SPACE))} "
                     "WHERE source_id = (SELECT min(id) FROM documents WHERE deleted_at IS NULL AND content <> '')")
        conn.commit()


def documents_shadow(cfg: Config, url: str, **kw: object) -> None:
    """Every input passing, except that the documents shadow run has the given values."""
    plant_gates(url, cfg, cfg.space(SPACE), omit=["shadow"])
    plant_shadow(url, cfg, "message_embeddings", cfg.space(SPACE))
    plant_shadow(url, cfg, "documents", cfg.space(SPACE), **kw)  # type: ignore[arg-type]


# each case: how to break exactly one gate, and the gate that must then fail
CASES = {
    "no smoke run": (lambda cfg, url: plant_gates(url, cfg, cfg.space(SPACE), omit=["smoke"]), "smoke"),
    "failed smoke": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["smoke"]),
                                       plant_smoke(url, cfg.space(SPACE), passed=False)), "smoke"),
    "cloud endpoint": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["smoke"]),
                                         plant_smoke(url, cfg.space(SPACE), endpoint_class="cloud")), "smoke"),
    "sync lag": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE)), delete_one_vector(url, cfg)), "coverage"),
    "no shadow run": (lambda cfg, url: plant_gates(url, cfg, cfg.space(SPACE), omit=["shadow"]),
                      "shadow_fresh shadow_ndcg shadow_ann_recall"),
    "stale shadow run": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["verify"]),
                                           age_backfill(url, cfg, "documents"), plant_verify_all(cfg, url)),
                         "shadow_fresh"),
    "nDCG below margin": (lambda cfg, url: documents_shadow(cfg, url, ndcg_ci_low=-0.05), "shadow_ndcg"),
    "unlabelled shadow run": (lambda cfg, url: documents_shadow(cfg, url, labelled=False), "shadow_ndcg"),
    "ANN recall low": (lambda cfg, url: documents_shadow(cfg, url, ann_recall=0.9), "shadow_ann_recall"),
    "no backup": (lambda cfg, url: plant_gates(url, cfg, cfg.space(SPACE), omit=["backup"]), "backup"),
    "unverified backup": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["backup"]),
                                            plant_backup(url, verified=False)), "backup"),
    "backup too old": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["backup"]),
                                         plant_backup(url, age_hours=30)), "backup"),
    "endpoint never verified": (lambda cfg, url: plant_gates(url, cfg, cfg.space(SPACE), omit=["verify"]), "verify"),
    "endpoint verified before the last backfill": (
        lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["shadow"]), age_backfill(url, cfg, "documents"),
                          [plant_shadow(url, cfg, s, cfg.space(SPACE)) for s in cfg.sources]), "verify"),
    "endpoint verify failed": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE)),
                                                 plant_verify(url, cfg.space(SPACE), "documents", passed=False)),
                               "verify"),
    "another endpoint verified": (lambda cfg, url: (plant_gates(url, cfg, cfg.space(SPACE), omit=["verify"]),
                                                    [plant_verify(url, cfg.space(SPACE), s, location="http://10.0.0.9/v1")
                                                     for s in cfg.sources]), "verify"),
}


def plant_verify_all(cfg: Config, url: str) -> None:
    for s in cfg.sources:
        plant_verify(url, cfg.space(SPACE), s)


@pytest.mark.parametrize("case", list(CASES))
def test_each_failing_gate_blocks_the_cutover_and_changes_nothing(env: tuple[Config, str], case: str) -> None:
    cfg, url = env
    breaks, gate_name = CASES[case]
    breaks(cfg, url)
    checked = gate(cfg, url, SPACE)
    assert not checked.passed
    bad = failed(checked)
    assert {b.split(".", 1)[1] for b in bad} == set(gate_name.split()), bad
    config_before = (Path(cfg.project) / "config.yaml").read_text()
    with pytest.raises(EmbedError, match=rf"cutover blocked, nothing changed: .*{gate_name.split()[0]}"):
        cutover(cfg, url, SPACE)
    assert (Path(cfg.project) / "config.yaml").read_text() == config_before
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    assert [e[1] for e in events(url, "cutover")] == ["blocked", "blocked"]


def test_an_endpoint_never_verified_fails_the_gate_and_the_in_place_cutover_changes_nothing(
        env: tuple[Config, str]) -> None:
    """Invariant 3: no `embed verify --where endpoint` is a failed gate, whose line names the command."""
    from tests.support.inplace import schema_snapshot

    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE), omit=["verify"])
    r = CliRunner().invoke(cli, ["--project", str(cfg.project), "--db", url, "gate", "--space", SPACE])
    assert r.exit_code == 1 and "BLOCKED" in r.output
    assert (f"no embed verify of the endpoint in-process: run embed verify --space {SPACE} --source documents "
            "--where endpoint --sample 200") in r.output
    with connect(url) as conn:
        before = schema_snapshot(conn)
    with pytest.raises(EmbedError, match=r"cutover blocked, nothing changed: .*verify"):
        cutover(cfg, url, SPACE, mode="honcho-inplace", writers_policy="writers-stopped")
    with connect(url) as conn:
        assert schema_snapshot(conn) == before
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    plant_verify_all(cfg, url)
    assert gate(cfg, url, SPACE).passed


@pytest.mark.parametrize(("needed", "verdict"), [(600, "INCONCLUSIVE"), (40, "FAIL")])
def test_too_small_a_sample_is_inconclusive_not_a_fail(env: tuple[Config, str], needed: int, verdict: str) -> None:
    """A CI straddling the floor on fewer queries than needed cannot decide; it still blocks."""
    cfg, url = env
    documents_shadow(cfg, url, ndcg_ci_low=-0.05, queries_needed=needed)
    checked = gate(cfg, url, SPACE)
    assert failed(checked) == {"documents.shadow_ndcg"}
    (g,) = [g for g in checked.gates if g.source == "documents" and g.gate == "shadow_ndcg"]
    assert g.measured.startswith(verdict), g.measured
    assert f"needs ~{needed} labelled queries, has 50" in g.measured
    documents_shadow(cfg, url, ndcg_ci_low=-0.01, queries_needed=needed)
    assert gate(cfg, url, SPACE).passed


def test_gate_command_prints_every_gate_and_sets_the_exit_status(env: tuple[Config, str]) -> None:
    cfg, url = env
    runner = CliRunner()
    args = ["--project", str(cfg.project), "--db", url, "gate", "--space", SPACE]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1 and "BLOCKED" in r.output and "FAIL     documents" in r.output
    assert "no verified backup" in r.output and "no smoke run" in r.output
    plant_gates(url, cfg, cfg.space(SPACE))
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output and "NOT RUN" not in r.output and r.output.count("PASS     ") >= 14
    with connect(url) as conn:
        outcomes = [x[0] for x in conn.execute("SELECT outcome FROM embed_store.events WHERE kind = 'gate' ORDER BY id")]
    assert outcomes == ["blocked", "ok"]


def test_cutover_switches_the_views_and_rollback_switches_back(env: tuple[Config, str]) -> None:
    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE))
    config_before = (Path(cfg.project) / "config.yaml").read_text()
    out = cutover(cfg, url, SPACE)
    assert out.outcome == "switched" and out.switched["documents"] == (LEGACY, SPACE)
    assert active_space_fps(url) == {cfg.space(SPACE).fingerprint}
    assert active_space_fps(url, "message_embeddings") == {cfg.space(SPACE).fingerprint}
    assert reads(url, cfg) == {"documents": SPACE, "message_embeddings": SPACE}
    assert (Path(cfg.project) / "config.yaml").read_text() == config_before  # the operator's file: never written
    legacy_fp, new_fp = cfg.space(LEGACY).fingerprint, cfg.space(SPACE).fingerprint
    assert sorted(events(url, "cutover")) == [("documents", "ok", legacy_fp, new_fp),
                                               ("message_embeddings", "ok", legacy_fp, new_fp)]
    again = cutover(cfg, url, SPACE)  # a retry is not a new action
    assert again.outcome == "already" and len(events(url, "cutover")) == 2

    back = rollback(cfg, url)
    assert back.switched["documents"] == (SPACE, LEGACY)
    assert active_space_fps(url) == {legacy_fp}
    assert reads(url, cfg) == {"documents": LEGACY, "message_embeddings": LEGACY}
    assert sorted(events(url, "rollback")) == [("documents", "ok", new_fp, legacy_fp),
                                                ("message_embeddings", "ok", new_fp, legacy_fp)]
    with connect(url) as conn:
        states = dict(conn.execute("SELECT name, state FROM embed_store.spaces").fetchall())
    assert states[LEGACY] == "active" and states[SPACE] == "gated"  # the rollback moved both back

    twice = rollback(cfg, url)  # a toggle would cut over again, ungated
    assert twice.outcome == "already" and active_space_fps(url) == {legacy_fp}
    assert len(events(url, "rollback")) == 2 and len(events(url, "cutover")) == 2
    r = CliRunner().invoke(cli, ["--project", str(cfg.project), "--db", url, "rollback"])
    assert r.exit_code == 0 and f"already on {LEGACY}" in r.output, r.output


def test_gates_of_the_active_space_are_judged_at_its_cutover(env: tuple[Config, str]) -> None:
    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE))
    cutover(cfg, url, SPACE)
    age_backfill(url, cfg, "documents")  # a new backfill after the cutover's shadow run
    delete_one_vector(url, cfg)  # and a row Honcho wrote since, not synced yet
    mesh.plan(cfg, url)  # the active space stays valid: it was gated when it became active
    assert active_space_fps(url) == {cfg.space(SPACE).fingerprint}
    # but making it active *now* would not be
    assert failed(gate(cfg, url, SPACE)) == {"documents.shadow_fresh", "documents.coverage", "documents.verify"}


def test_plain_sqlmesh_plan_cannot_re_promote_a_version_whose_gates_fail(env: tuple[Config, str]) -> None:
    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE))
    cutover(cfg, url, SPACE)  # builds (and audits) the e5 version of the active views
    rollback(cfg, url)
    with connect(url) as conn:
        conn.execute("DELETE FROM embed_store.backups")  # the backup gate now fails
        conn.commit()
    # A switch to SPACE in flight (as `embed cutover` sets it before its plan), and a plain
    # sqlmesh rendering exactly that: SQLMesh would re-promote the e5 version without auditing it.
    with connect(url) as conn, conn.transaction():
        for s in cfg.sources:
            serving.aim_views(conn, cfg, s, cfg.space(SPACE).fingerprint)
    sqlmesh = str(Path(sys.executable).with_name("sqlmesh"))
    env_vars = {**os.environ, **sqlmesh_env(url), "EMBED_GATEWAY": "local", serving.ENV: mesh.rendering(cfg, url)}
    p = subprocess.run([sqlmesh, "--gateway", "local", "plan", "--auto-apply", "--no-prompts"], cwd=cfg.project,
                       env=env_vars, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "embed gate blocked the plan" in p.stdout + p.stderr and "backup" in p.stdout + p.stderr
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    with pytest.raises(EmbedError, match="a view switch was interrupted"):
        mesh.plan(cfg, url)  # embed plan settles no switch: that is cutover's or rollback's
    assert rollback(cfg, url).outcome == "finished"  # undoes the switch in flight
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint} and mesh.plan(cfg, url)


def test_a_second_cutover_at_the_same_time_exits_clearly(env: tuple[Config, str]) -> None:
    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE))
    with connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('embed.cutover.switch'))")
        with pytest.raises(EmbedError, match="another embed cutover or rollback is running"):
            cutover(cfg, url, SPACE)
        with pytest.raises(EmbedError, match="another embed cutover or rollback is running"):
            rollback(cfg, url)
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    assert events(url, "cutover") == []


def test_rollback_without_a_cutover_and_unknown_spaces_change_nothing(env: tuple[Config, str]) -> None:
    cfg, url = env
    assert rollback(cfg, url).outcome == "already"
    with pytest.raises(EmbedError, match="unknown space"):
        cutover(cfg, url, "nope")
    with pytest.raises(EmbedError, match="unknown mode"):
        cutover(cfg, url, SPACE, mode="sideways")
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}


@pytest.mark.parametrize("case", ["no shadow run", "stale shadow run", "nDCG below margin", "ANN recall low"])
def test_shadow_gates_block_sqlmesh_plan_itself(env: tuple[Config, str], case: str) -> None:
    """Through the switch's own `sqlmesh plan`, not `embed gate`: the before_all guard refuses."""
    cfg, url = env
    breaks, gate_name = CASES[case]
    breaks(cfg, url)
    g = gate_name.split()[0]
    with pytest.raises(EmbedError, match=rf"embed gate blocked the plan: documents\.{g}"):
        plan_switch(url, cfg, {s: SPACE for s in cfg.sources})
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}


def test_a_view_rollback_embeds_the_rows_written_since_before_it_switches(env: tuple[Config, str]) -> None:
    """Back to a store-backed space (e5_small, after a cutover from it to bge_m3): the row written
    meanwhile gets an e5_small vector first, and --json reports how many."""
    cfg, url = env
    third = "bge_m3"
    with connect(url) as conn:
        for s in cfg.sources:
            conn.execute(f"DELETE FROM embed_store.{table_name(cfg.source(s), cfg.space(third))}")
        conn.commit()
    for source in cfg.sources:
        fill_store(url, cfg, source, third)
    plant_gates(url, cfg, cfg.space(SPACE))
    plant_gates(url, cfg, cfg.space(third))
    cutover(cfg, url, SPACE)
    cutover(cfg, url, third)
    with connect(url) as conn:
        insert_doc(conn, "a memory written after the second cutover")
        conn.commit()
    r = CliRunner().invoke(cli, ["--project", str(cfg.project), "--db", url, "rollback", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # progress goes to stderr
    assert out["switched"]["documents"] == {"from": third, "to": SPACE}
    assert out["caught_up"] == {"documents": 1, "message_embeddings": 0}
    assert reads(url, cfg) == {"documents": SPACE, "message_embeddings": SPACE}
    assert failed(gate(cfg, url, SPACE)) <= {"documents.shadow_fresh", "message_embeddings.shadow_fresh"}


# --------------------------------------------------------------------- views built ahead by `embed gate`
def forget_unpromoted_versions(cfg: Config, url: str) -> None:
    """Drop every view version no environment promotes (SQLMesh's janitor, TTL ignored), so that
    the next view cutover to SPACE has its versions to build whatever earlier tests did."""
    with mesh.context(cfg, url) as ctx:
        ctx._run_janitor(ignore_ttl=True)


def cutover_builds(cfg: Config, url: str) -> set[str]:
    """The view versions a view cutover to SPACE would build now: its plan, built, not applied."""
    with connect(url) as conn:
        after = _aimed(serving.read(conn, cfg), {s: cfg.space(SPACE) for s in cfg.sources})
    with mesh.Switch(cfg, url, serving.render(after)) as sw:
        return {s.name for s in sw.plan.new_snapshots} | {i.snapshot_id.name for i in sw.plan.missing_intervals}


def prebuild_left(url: str) -> tuple[list[str], list[str]]:
    """SQLMesh's environments, and the schemas of any but prod's views."""
    with connect(url) as conn:
        envs = [r[0] for r in conn.execute("SELECT name FROM sqlmesh._environments ORDER BY name")]
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'embed\\_\\_%'")]
    return envs, schemas


ACTIVE = ["embed.documents_active", "embed.message_embeddings_active"]


def test_gate_builds_the_cutovers_views_ahead_and_production_reads_the_old_space_until_the_cutover(
        env: tuple[Config, str]) -> None:
    cfg, url = env
    legacy_fp, new_fp = cfg.space(LEGACY).fingerprint, cfg.space(SPACE).fingerprint
    forget_unpromoted_versions(cfg, url)
    assert len(cutover_builds(cfg, url)) == 2  # one version of each source's active view to build
    assert gate(cfg, url, SPACE).ahead == ""  # blocked: nothing is built ahead

    plant_gates(url, cfg, cfg.space(SPACE))
    first = gate(cfg, url, SPACE)
    assert first.passed and first.ahead == f"built ahead for a view cutover: {', '.join(ACTIVE)}"
    assert cutover_builds(cfg, url) == set()  # the cutover's plan only re-points
    assert active_space_fps(url) == {legacy_fp} and active_space_fps(url, "message_embeddings") == {legacy_fp}
    assert reads(url, cfg) == {"documents": LEGACY, "message_embeddings": LEGACY}
    assert prebuild_left(url) == (["prod"], [])  # the plan's own environment is gone with its views
    assert gate(cfg, url, SPACE).ahead == "built already"  # twice: harmless
    assert active_space_fps(url) == {legacy_fp} and prebuild_left(url) == (["prod"], [])

    out = cutover(cfg, url, SPACE)
    assert out.outcome == "switched" and out.views_rebuilt == tuple(ACTIVE)
    assert active_space_fps(url) == {new_fp} and active_space_fps(url, "message_embeddings") == {new_fp}
    assert reads(url, cfg) == {"documents": SPACE, "message_embeddings": SPACE}
    back = rollback(cfg, url)
    assert back.switched["documents"] == (SPACE, LEGACY) and back.views_rebuilt == tuple(ACTIVE)
    assert active_space_fps(url) == {legacy_fp} and reads(url, cfg)["documents"] == LEGACY


def test_views_built_ahead_are_still_gated_at_the_cutover(env: tuple[Config, str]) -> None:
    """A version built ahead is promoted without SQLMesh auditing it again: embed's gates in the
    cutover and the before_all guard on the plan itself still refuse once a gate fails."""
    cfg, url = env
    plant_gates(url, cfg, cfg.space(SPACE))
    assert gate(cfg, url, SPACE).ahead.startswith(("built ahead", "built already"))
    with connect(url) as conn:
        conn.execute("DELETE FROM embed_store.backups")
        conn.commit()
    with pytest.raises(EmbedError, match="cutover blocked, nothing changed"):
        cutover(cfg, url, SPACE)
    with pytest.raises(EmbedError, match=r"embed gate blocked the plan: .*backup"):
        plan_switch(url, cfg, {s: SPACE for s in cfg.sources})
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    assert rollback(cfg, url).outcome == "finished"  # undoes the switch plan_switch left in flight


def test_an_interrupted_build_ahead_is_finished_by_the_next_gate(env: tuple[Config, str]) -> None:
    """What a build ahead killed before dropping its environment leaves (the environment and its
    views, built): production reads the old space; the next `embed gate` drops it."""
    cfg, url = env
    forget_unpromoted_versions(cfg, url)
    plant_gates(url, cfg, cfg.space(SPACE))
    with connect(url) as conn:
        after = _aimed(serving.read(conn, cfg), {s: cfg.space(SPACE) for s in cfg.sources})
    with mesh.context(cfg, url, serving.render(after)) as ctx:
        ctx.apply(ctx.plan_builder(mesh.PREBUILD_ENV, no_auto_categorization=False).build())
    assert prebuild_left(url) == (["embed_prebuild", "prod"], ["embed__embed_prebuild"])
    assert active_space_fps(url) == {cfg.space(LEGACY).fingerprint}
    assert gate(cfg, url, SPACE).ahead == "built already" and prebuild_left(url) == (["prod"], [])
    assert cutover(cfg, url, SPACE).outcome == "switched"
    assert active_space_fps(url) == {cfg.space(SPACE).fingerprint}


def test_the_guard_lets_only_another_environment_than_prod_serve_another_space(env: tuple[Config, str]) -> None:
    cfg, url = env
    with connect(url) as conn:
        after = serving.parse(cfg, serving.render(_aimed(serving.read(conn, cfg),
                                                         {s: cfg.space(SPACE) for s in cfg.sources})))

    def fetch(q: str) -> list[tuple]:
        with connect(url) as conn:
            return conn.execute(q).fetchall()

    assert "this plan would serve documents on e5_small instead of minilm_l6" in guard_failure(cfg, after, fetch)
    assert "documents.smoke" in guard_failure(cfg, after, fetch, mesh.PREBUILD_ENV)  # gated there too
    plant_gates(url, cfg, cfg.space(SPACE))
    assert guard_failure(cfg, after, fetch, mesh.PREBUILD_ENV) is None
    assert "this plan would serve" in guard_failure(cfg, after, fetch)
    parked = {**after, "documents": dataclasses.replace(after["documents"], legacy_column="embedding__x")}
    assert "legacy view on column embedding__x" in guard_failure(cfg, parked, fetch, mesh.PREBUILD_ENV)
