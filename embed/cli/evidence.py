"""`embed evidence`: the reviewer's bundle for one space (smoke, shadow, gates, backups, history, status)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from embed.cli import Env, cli, emit, fail_cleanly

if TYPE_CHECKING:
    from embed.safety.evidence import Published


@cli.command()
@click.option("--space", "space_name", required=True,
              help="Space to document (name, or <name>_<fp8> for an old spec); resolved to its fingerprint.")
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="New or empty directory (created 0700, files 0600), or a previous bundle of the same space, "
                   "which is replaced as a whole.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's index as JSON.")
@click.pass_obj
@fail_cleanly
def evidence(env: Env, space_name: str, out: Path, as_json: bool) -> None:
    """Collect the evidence for one space into DIR, with an index of sha256s.

    The latest smoke evidence, every shadow run of the space (JSON + HTML report), gate results,
    backup manifests (newest first), the event history and coverage, each named in index.md with
    what it proves. Only ids, counts, hashes and metrics are read; before anything is written the
    bundle is searched for the API keys named by the spaces' api_key_env and the database and
    Redis passwords, and refused if one is found. Missing bookkeeping tables are reported as
    missing, never guessed.

    \b
    Example:
      embed evidence --space bge_m3 --out evidence/bge_m3
    """
    from embed.api import write_bundle

    cfg = env.config()
    res = write_bundle(cfg, env.url(cfg), space_name, out)

    def lines(r: Published) -> list[str]:
        ix = r.index
        head = f"evidence for {ix['space']} ({ix['fingerprint'][:12]}) in {r.path}: {len(ix['files'])} file(s) + index"
        return [head, *[f"  {s}" for s in ix["sections"].values()]]

    emit(res, as_json, lines)
