"""Every `embed ...` line in the runbook's and README's code blocks names a real command, and every
`--flag` on it is one that command accepts: the docs cannot drift from the CLI unnoticed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from embed.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/runbook.md", "README.md")
FENCE = re.compile(r"^```")
PREFIX = re.compile(r"^(\$ )?(\.venv/bin/)?embed ")
GLOBAL_WITH_VALUE = {"--db", "--gateway", "--project"}


def code_lines(path: Path) -> list[str]:
    """Lines inside fenced code blocks, with `\\` continuations joined."""
    lines, inside, pending = [], False, ""
    for raw in path.read_text().splitlines():
        if FENCE.match(raw.strip()):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def embed_lines() -> list[tuple[str, str]]:
    return [(doc, ln) for doc in DOCS for ln in code_lines(ROOT / doc) if PREFIX.match(ln)]


def parse(line: str) -> tuple[list[str], list[str], list[str], str]:
    """(global flags, command path, flags named after it, the first word that is not a command);
    flag values and placeholders are dropped."""
    body = PREFIX.sub("", line, count=1)
    body = re.split(r" #|\s{2,}", body, maxsplit=1)[0]  # a shell comment, or a tour line's description
    try:
        words = shlex.split(body.replace("|", " "))
    except ValueError:  # an apostrophe in prose
        words = body.replace("|", " ").split()
    tokens = [t.strip("[]") for t in words]
    tokens = [t for t in tokens if t]
    globals_: list[str] = []
    while tokens and tokens[0].startswith("--"):
        flag = tokens.pop(0).split("=", 1)[0]
        globals_.append(flag)
        if flag in GLOBAL_WITH_VALUE and "=" not in flag and tokens:
            tokens.pop(0)
    path: list[str] = []
    cmd: click.Command = cli
    while tokens and isinstance(cmd, click.Group) and tokens[0] in cmd.commands:
        path.append(tokens.pop(0))
        cmd = cmd.commands[path[-1]]
    flags = [t.split("=", 1)[0] for t in tokens if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", t)]
    return globals_, path, flags, tokens[0] if tokens else ""


def help_text(path: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(cli, [*path, "--help"])
    return r.exit_code, r.output


def test_the_runbook_names_commands() -> None:
    lines = [ln for doc, ln in embed_lines() if doc == "docs/runbook.md"]
    assert len(lines) >= 20, "the runbook should walk the procedure command by command"


def named(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


LINES = embed_lines()


@pytest.mark.parametrize(("doc", "line"), LINES, ids=[" ".join(parse(ln)[1]) or ln[:30] for _d, ln in LINES])
def test_documented_command_exists_with_its_flags(doc: str, line: str) -> None:
    globals_, path, flags, word = parse(line)
    assert path, f"{doc}: `embed {word}` is not a command ({line!r})"
    code, out = help_text(path)
    assert code == 0, f"{doc}: `embed {' '.join(path)} --help` failed:\n{out}"
    missing = [f for f in flags if not named(f, out)]
    assert not missing, f"{doc}: `embed {' '.join(path)}` has no {', '.join(missing)} (line: {line!r})"
    _, root = help_text([])
    assert all(named(g, root) for g in globals_), f"{doc}: unknown global option in {line!r}"
