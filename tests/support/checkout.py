"""A full copy of the checkout, as an operator has it (tests/ included), for tests of the
operator's path: a copy that held only the parts a test needs would hide what every user hits."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what a clone does not have, or what is this machine's own
LEFT_OUT = (".git", ".venv", ".embed", ".cache", ".pytest_cache", ".ruff_cache", "__pycache__", "*.egg-info",
            ".bench-langchain", "logs")


def copy_checkout(dest: Path) -> Path:
    """Copy the whole checkout to `dest` (which must not exist); returns it."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*LEFT_OUT), symlinks=True)
    return dest


def add_to_config(project: Path, after: str, block: str) -> None:
    """Insert `block` (YAML lines, indented as they belong) right after the first line of
    config.yaml that reads `after`: a hand edit, comments and Jinja kept as they are."""
    path = project / "config.yaml"
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.rstrip() == after) + 1
    lines[at:at] = [block if block.endswith("\n") else block + "\n"]
    path.write_text("".join(lines))
