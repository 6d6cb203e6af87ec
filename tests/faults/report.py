"""Totals of a fault-suite report (one JSON line per run, from EMBED_FAULT_REPORT / --fault-report).

    python -m tests.faults.report FILE

Prints runs, wall time, steps done, faults injected by kind, invariant checks passed, reader
samples and tolerated switch windows, and every violation with its seed: the numbers quoted in
docs/faults.md.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    steps: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    reader: Counter[str] = Counter()
    violations = []
    for run in lines:
        steps.update(run["steps"])
        faults.update(run["faults"])
        checks.update(run["checks"])
        reader.update({k: v for k, v in run["reader"].items() if isinstance(v, int) and k != "pid"})
        violations += [{"seed": run["seed"], **v} for v in run["violations"]]
    return {"runs": len(lines), "clean_runs": sum(1 for r in lines if not r["violations"]),
            "seeds": sorted(r["seed"] for r in lines), "seconds": round(sum(r["seconds"] for r in lines)),
            "attempts": sum(r["attempts"] for r in lines), "steps": dict(steps), "faults": dict(faults),
            "faults_total": sum(faults.values()), "checks": dict(checks), "reader": dict(reader),
            "violations": violations}


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:])[0])
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    print(json.dumps(totals(lines), indent=1, default=str))


if __name__ == "__main__":
    main()
