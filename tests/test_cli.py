"""The CLI explains itself and fails in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from embed.cli import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, path))
    return out


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=lambda p: " ".join(p) or "embed")
def test_every_command_has_help_that_explains(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(cli, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    summary = r.output.split("\n\n")[1].strip()
    assert len(summary) >= 20, f"{' '.join(path)} has no real description"


def test_core_commands_exist() -> None:
    names = {" ".join(p) for p in all_commands(cli)}
    assert {"db up", "db down", "db status", "db url", "db env", "spaces", "init", "plan", "audit",
            "honcho seed", "demo"} <= names


def test_bad_input_is_one_line_and_exit_1() -> None:
    r = CliRunner().invoke(cli, ["--db", "mysql://root@localhost/x", "init"])
    assert r.exit_code == 1
    assert r.output.startswith("embed: error:") and r.output.count("\n") == 1
    r = CliRunner().invoke(cli, ["--gateway", "nope", "spaces"])
    assert r.exit_code == 1 and "unknown gateway 'nope'" in r.output


def test_spaces_json_lists_fingerprints() -> None:
    import json

    r = CliRunner().invoke(cli, ["spaces", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.output)
    byname = {x["name"]: x for x in rows}
    assert byname["minilm_l6"]["role"] == "active" and byname["e5_small"]["dims"] == 384
    assert len({x["fingerprint"] for x in rows}) == len(rows)


def test_every_verb_of_the_api_is_a_documented_function() -> None:
    from embed import api

    assert set(api.__all__) == {*api.OWN_VERBS, *api.VERBS}
    for name in api.__all__:
        fn = getattr(api, name)
        assert callable(fn) and fn.__doc__, name
    with pytest.raises(AttributeError):
        api.no_such_verb  # noqa: B018


def test_honcho_seed_reports_what_it_loaded(db_url: str) -> None:
    import re

    import psycopg

    r = CliRunner().invoke(cli, ["--db", db_url, "honcho", "seed", "--scale", "tiny", "--no-vectors"])
    assert r.exit_code == 0, r.output
    with psycopg.connect(db_url) as conn:
        docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        queries = conn.execute("SELECT count(*) FROM embed_eval.queries").fetchone()[0]
    said = re.search(r"seeded (\d+) documents, \d+ message embeddings, (\d+) labelled queries", r.output)
    assert said and (int(said[1]), int(said[2])) == (docs, queries) and queries > 0, r.output


def test_the_process_ends_with_the_commands_status_and_all_its_output(tmp_path: Path) -> None:
    """`embed` ends without Python's teardown (embed.cli._exit_now): the exit status is still the
    command's, everything it wrote reaches a pipe or a file, and exit handlers registered while
    it ran still run."""
    run = [sys.executable, "-m", "embed"]
    helped = subprocess.run([*run, "spaces", "--json"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout == CliRunner().invoke(cli, ["spaces", "--json"]).output
    bad = subprocess.run([*run, "--db", "mysql://root@localhost/x", "init"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("embed: error:")
    assert subprocess.run([*run, "no-such-command"], capture_output=True).returncode == 2
    mark = tmp_path / "handler-ran"
    code = ("import atexit, pathlib, sys; import embed.cli as c; "
            f"c.cli.command('touch')(lambda: atexit.register(pathlib.Path({str(mark)!r}).touch)); "
            "sys.argv = ['embed', 'touch']; c.main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and mark.exists(), done.stderr
