"""Control-step benchmark: `embed cutover` and `embed rollback` with nothing to catch up (not a test).

    .venv/bin/python bench/control.py [--rounds 2] [--db ADMIN_URL] [--baseline DIR] [--json]

Sets up the tiny demo corpus on a fresh database (e5_small smoked, backfilled, verified at its
endpoint, shadowed, backed up and staged in Honcho's tables: every gate passes, nothing to catch up;
production on the legacy space; then `embed gate`, which in a tree that does so builds the view
cutover's views ahead), then runs each control step as the operator does, a fresh `embed`
process, and prints its wall time and where it went:
  view      cutover to e5_small and rollback (SQLMesh re-points embed.<source>_active);
  inplace   cutover --mode honcho-inplace (the first stages the columns; later ones find them staged)
            and its rollback, both --writers-stopped.
Phases are timed inside the process by wrapping the functions that do the work as their modules
are imported (nothing is imported ahead of the step): embed's imports, the first import of SQLMesh,
pandas and other heavy packages where the step makes it, the SQLMesh project load, the views' plan
(build, apply), the audits, the gates' SQL, the writers' window, staging, the swap (with the
rollback's fill), the catch-up sync, a model load; a phase inside another counts once, and 'other'
is what the outermost ones leave of the process's time. `--baseline DIR` (an older checkout) runs the same steps with that
embed and its project files, on a database of its own set up alike, side by side in the same run,
and prints after/before per step.
Target (DESIGN.md section 10): <= 3 s wall for each with nothing to catch up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASES = (  # (label, module, attribute path): the work a control step does, outermost first
    ("project load", "sqlmesh.core.context", "GenericContext.__init__"),
    ("plan build", "embed.mesh", "Switch._build"),
    ("plan apply", "embed.mesh", "Switch.apply"),
    ("audits", "embed.mesh", "audit"),
    ("gates", "embed.gates", "evaluate"),
    ("writers window", "embed.cutover.writers", "observe"),
    ("stage", "embed.cutover.inplace", "stage"),
    ("swap", "embed.cutover.inplace", "swap"),
    ("swap back + fill", "embed.cutover.inplace", "swap_back"),
    ("catch-up sync", "embed.fill.sync", "sync_once"),
    ("model load", "embed.embedders", "get_embedder"),
)
HEAVY = ("sqlmesh", "pandas", "polars", "scipy", "torch", "transformers", "sentence_transformers")  # first imports, timed
STEPS = (  # from the legacy space and back, in each mode
    ("view", "cutover", ["cutover", "--space", "e5_small"]),
    ("view", "rollback", ["rollback"]),
    ("inplace", "cutover", ["cutover", "--space", "e5_small", "--mode", "honcho-inplace", "--writers-stopped"]),
    ("inplace", "rollback", ["rollback", "--writers-stopped"]),
)


def say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------- inside the timed process
_ACTIVE: list[str] = []  # the phases running now, outermost first
OUTER = "outer phases"  # the sum of the phases that ran inside no other (with 'other', the process's total)


def _clock(spent: dict[str, float], label: str) -> Callable[[], None]:
    """Start timing `label`; the returned callable stops it (a phase inside another counts once)."""
    t0 = time.perf_counter()
    outer = not _ACTIVE
    _ACTIVE.append(label)

    def stop() -> None:
        _ACTIVE.remove(label)
        dt = time.perf_counter() - t0
        spent[label] = spent.get(label, 0.0) + dt
        if outer:
            spent[OUTER] = spent.get(OUTER, 0.0) + dt

    return stop


def _timed(spent: dict[str, float], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        stop = _clock(spent, label)
        try:
            return fn(*a, **kw)
        finally:
            stop()

    return wrapper


def _patch(spent: dict[str, float], pending: list[tuple[str, str, str]]) -> None:
    """Wrap the phases whose module is imported by now (the others wait: importing them here
    would move their import out of the step)."""
    for phase in list(pending):
        label, module, path = phase
        if module not in sys.modules:
            continue
        owner: Any = sys.modules[module]
        *parents, name = path.split(".")
        for p in parents:
            owner = getattr(owner, p, None)
        if owner is not None and hasattr(owner, name):  # else: still being imported (or absent in that tree)
            setattr(owner, name, _timed(spent, label, getattr(owner, name)))
            pending.remove(phase)


def _watch_imports(spent: dict[str, float], pending: list[tuple[str, str, str]]) -> None:
    """Time the first import of each of HEAVY where it happens (in the step, not ahead of it), and
    wrap each phase's function as soon as its module is imported."""
    import builtins

    real = builtins.__import__

    def hooked(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        top = name.partition(".")[0]
        stop = _clock(spent, f"{top} import") if level == 0 and top in HEAVY and top not in sys.modules else None
        try:
            return real(name, globals, locals, fromlist, level)
        finally:
            if stop is not None:
                stop()
            if pending:
                _patch(spent, pending)

    builtins.__import__ = hooked


def phases_main(out: Path, argv: list[str]) -> None:
    """Run `embed argv` in this process with the phases timed; write them to `out` as JSON."""
    began = time.time()  # the wall clock, shared with the parent: where start-up ends
    t0 = time.perf_counter()
    spent: dict[str, float] = {}
    pending = list(PHASES)
    _watch_imports(spent, pending)
    stop = _clock(spent, "embed imports")
    import embed.cli

    stop()
    code = 0
    try:
        sys.argv = ["embed", *argv]
        embed.cli.main()  # as the `embed` script runs it: its end (embed.cli._exit_now) is the process's
    except SystemExit as e:
        code = int(e.code or 0)
    except Exception as e:  # the step's own one-line error: the bench reports it
        print(f"embed: {e}", file=sys.stderr)
        code = 1
    spent["total in process"] = time.perf_counter() - t0
    out.write_text(json.dumps({"code": code, "spent": spent, "began": began, "ended": time.time()}))


# --------------------------------------------------------------------------------- the parent
def setup(args: argparse.Namespace, home: Path, tree: Path) -> tuple[str, Path, object]:
    """A fresh database where e5_small passes every gate and production reads the legacy space
    (the tiny demo corpus: seed, init, plan, smoke, backfill, shadow, backup, endpoint verify, then the
    tree's own stage and gate); (url, project, cleanup)."""
    sys.path.insert(0, str(ROOT))
    from bench.backfill import database
    from embed import api
    from embed.config import Config
    from embed.demo import demo_project

    url, cleanup = database(args)
    try:
        cfg = demo_project(Config.load(tree, "local"), home)  # that tree's models, macros, audits and config
        t0 = time.monotonic()
        api.seed_honcho(cfg, url, scale="tiny")
        for argv in (["init"], ["plan"]):  # SQLMesh runs the tree's own macros: its own embed runs them
            one(tree, cfg.project, url, argv)
        api.smoke(cfg, "e5_small", url=url)
        api.backfill(cfg, url, "e5_small", progress=False)
        api.shadow(cfg, url, baseline=cfg.legacy_space.name, candidates=["e5_small"], queries=50)
        api.take_backup(cfg, url, home / "backup")
        api.verify(cfg, url, "e5_small", where="endpoint", sample=32)  # the verify gate: what consumers will call
        # The runbook's last steps before a switch, by the tree's own `embed` (what they leave ready is
        # part of what is measured): stage ahead of time (the cutover has nothing to catch up), then gate
        # (which builds the view cutover's views ahead, where the tree's embed does).
        one(tree, cfg.project, url, ["cutover", "--space", "e5_small", "--mode", "honcho-inplace", "--stage-only"])
        one(tree, cfg.project, url, ["gate", "--space", "e5_small"])
        say(f"tiny corpus set up for {tree} in {time.monotonic() - t0:.0f} s: e5_small passes every gate, production "
            f"reads {cfg.legacy_space.name}")
    except BaseException:
        cleanup()  # type: ignore[operator]
        raise
    return url, cfg.project, cleanup


def one(tree: Path, project: Path, url: str, argv: list[str]) -> tuple[float, dict[str, float], int]:
    """Wall seconds of one `embed` process running argv with the embed in `tree`, its phases, its exit code."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        t0, started = time.monotonic(), time.time()
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phases", f.name, "--",
                            "--project", str(project), "--db", url, *argv],
                           env=env, cwd=tree, capture_output=True, text=True, timeout=600)
        wall, exited = time.monotonic() - t0, time.time()
        got = json.loads(Path(f.name).read_text() or "{}") if Path(f.name).stat().st_size else {}
    if got.get("code", r.returncode):
        raise SystemExit(f"embed {' '.join(argv)} failed: {r.stderr.strip().splitlines()[-1:]}")
    spent = got.get("spent", {})
    spent["interpreter start"] = got["began"] - started
    spent["interpreter exit"] = exited - got["ended"]
    return wall, spent, got.get("code", r.returncode)


def describe(spent: dict[str, float]) -> str:
    """The phases over 0.05 s, largest first, and what the outermost ones leave unexplained."""
    total = spent.get("total in process", 0.0)
    inner = {k: v for k, v in spent.items() if k not in ("total in process", OUTER) and v >= 0.05}
    parts = [f"{k} {v:.2f}" for k, v in sorted(inner.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts) + f"; other {max(total - spent.get(OUTER, 0.0), 0):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="times each step is run (the median is reported)")
    ap.add_argument("--db", default=None, help="an admin URL of a server to create a temp database on")
    ap.add_argument("--baseline", type=Path, default=None, help="an older checkout to run side by side")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every number")
    ap.add_argument("--phases", type=Path, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.phases:
        phases_main(args.phases, [a for a in rest if a != "--"])
        return
    trees = {"after": ROOT} | ({"before": args.baseline.resolve()} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="embed-bench-control-") as home, ExitStack() as stack:
        dbs = {}  # each tree on a database of its own, set up alike, so each meets its first switch itself
        for name, tree in trees.items():
            url, project, cleanup = setup(args, Path(home) / name, tree)
            stack.callback(cleanup)  # type: ignore[arg-type]
            dbs[name] = (url, project)
        walls: dict[tuple[str, str, str], list[float]] = {}
        for r in range(args.rounds):
            for mode, verb, argv in STEPS:
                for name, tree in trees.items():
                    url, project = dbs[name]
                    wall, spent, _ = one(tree, project, url, argv)
                    walls.setdefault((name, mode, verb), []).append(wall)
                    say(f"[{name:<6}] {mode:<7} {verb:<8} round {r + 1}: {wall:5.2f} s wall  ({describe(spent)})")
    say("")
    say("step                 " + "  ".join(f"{n:>8}" for n in trees) + ("  after/before" if len(trees) > 1 else ""))
    result = {}
    for mode, verb, _ in STEPS:
        med = {n: statistics.median(walls[(n, mode, verb)]) for n in trees}
        ratio = f"  {med['after'] / med['before']:12.2f}" if "before" in med else ""
        say(f"{mode + ' ' + verb:<20} " + "  ".join(f"{med[n]:7.2f}s" for n in trees) + ratio)
        result[f"{mode} {verb}"] = med
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
