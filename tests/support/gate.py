"""Gate inputs written straight into the store, for tests of the gates themselves.

The gates read smoke runs, shadow runs/metrics, backups and `embed verify` events from embed_store;
the commands that produce them (smoke, shadow, backup, verify) have their own end-to-end tests. Here each input is
planted with exactly the values a test needs, so one gate at a time can be made to fail.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

from embed.config import Config
from embed.db.connection import connect
from embed.spaces import Space

ALL = ("smoke", "shadow", "backup", "verify")


def plant_smoke(url: str, space: Space, *, passed: bool = True, endpoint_class: str = "in-process") -> None:
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO embed_store.smoke_runs (space_fp, actor, passed, endpoint_class, evidence) "
            "VALUES (%s, 'test', %s, %s, %s)",
            (space.fingerprint, passed, endpoint_class, json.dumps({"passed": passed, "planted": True})),
        )
        conn.commit()


def plant_shadow(url: str, cfg: Config, source: str, space: Space, *, ndcg_ci_low: float = 0.01,
                 ann_recall: float = 1.0, labelled: bool = True, started_ago_s: float = 0.0,
                 queries_needed: int | None = None) -> int:
    with connect(url) as conn:
        run_id = conn.execute(
            "INSERT INTO embed_store.shadow_runs (started_at, actor, source, baseline_fp, candidate_fps, params, result) "
            "VALUES (now() - %s * interval '1 second', 'test', %s, %s, %s, '{}', '{}') RETURNING id",
            (started_ago_s, source, cfg.legacy_space.fingerprint, [space.fingerprint]),
        ).fetchone()[0]
        rows = [("ann_recall@10", ann_recall, ann_recall, ann_recall)]
        if labelled:
            rows.append(("delta_ndcg@10", ndcg_ci_low + 0.05, ndcg_ci_low, ndcg_ci_low + 0.1))
        if queries_needed is not None:  # what embed.shadow.power said 50 labelled queries lack
            rows.append(("queries_needed_ndcg@10", queries_needed, None, None))
        for metric, value, lo, hi in rows:
            conn.execute(
                "INSERT INTO embed_store.shadow_metrics (run_id, space_fp, slice, slice_value, metric, n, value, "
                "ci_low, ci_high) VALUES (%s, %s, 'all', 'all', %s, 50, %s, %s, %s)",
                (run_id, space.fingerprint, metric, value, lo, hi),
            )
        conn.commit()
    return run_id


def plant_backup(url: str, *, verified: bool = True, age_hours: float = 0.0) -> None:
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO embed_store.backups (at, actor, path, manifest, verified) "
            "VALUES (now() - %s * interval '1 hour', 'test', 'planted', %s, %s)",
            (age_hours, json.dumps({"backup_id": uuid.uuid4().hex}), verified),
        )
        conn.commit()


def plant_verify(url: str, space: Space, source: str, *, passed: bool = True, location: str | None = None) -> None:
    """An `embed verify --where endpoint` of `space` for `source` (default: at the endpoint the gate
    expects, embed.verify.endpoint_location), recorded now: after any backfill so far."""
    from embed import store
    from embed.verify import endpoint_location

    with connect(url) as conn:
        store.record_event(conn, "verify", "ok" if passed else "failed", space=space, source=source,
                           reason=None if passed else "3 of 40 below 0.999",
                           details={"kind": "endpoint", "location": location or endpoint_location(space),
                                    "checked": 40, "offenders": 0 if passed else 3, "min_cosine": 1.0 if passed else 0.9,
                                    "planted": True})
        conn.commit()


def plant_gates(url: str, cfg: Config, space: Space, *, omit: Iterable[str] = (), sources: Iterable[str] | None = None) -> None:
    """Every planted gate input for `space` (all sources) except those named in `omit`."""
    omit = set(omit)
    if "smoke" not in omit:
        plant_smoke(url, space)
    if "shadow" not in omit:
        for s in sources or cfg.sources:
            plant_shadow(url, cfg, s, space)
    if "backup" not in omit:
        plant_backup(url)
    if "verify" not in omit:
        for s in sources or cfg.sources:
            plant_verify(url, space, s)


def plan_switch(url: str, cfg: Config, mapping: dict[str, str]) -> list[str]:
    """What a switch's own plan does, without embed's gate in front of it: aim the views of each
    source at a space in embed_store.serving, then apply the SQLMesh plan rendered for that (so
    SQLMesh's audits and the before_all guard are what decide). Raises EmbedError when they refuse."""
    from embed import mesh
    from embed.store import serving

    with connect(url) as conn, conn.transaction():
        serving.ensure(conn, cfg)
        for source, space in mapping.items():
            serving.aim_views(conn, cfg, source, cfg.space(space).fingerprint)
        states = serving.read(conn, cfg)
    with mesh.Switch(cfg, url, serving.render(states)) as sw:
        return sw.apply()
