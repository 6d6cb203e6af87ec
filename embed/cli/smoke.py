"""`embed smoke`: evidence that a space's embedder works before anything depends on it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from embed.cli import Env, cli, emit, fail_cleanly


@cli.command()
@click.option("--space", "space_name", required=True, help="The declared space to test (see `embed spaces`).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the evidence JSON here (mode 0600).")
@click.option("--allow-cloud", is_flag=True,
              help="Allow sending the sentinel texts to an endpoint classified as cloud.")
@click.option("--require", "required", multiple=True, metavar="CHECK",
              help="Checks that decide pass/fail (repeatable). Default: the space's smoke_required "
                   "option, else dims, deterministic, batch_consistent, crosslingual.")
@click.option("--no-record", is_flag=True, help="Do not record the result in the database.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole evidence as JSON.")
@click.pass_obj
@fail_cleanly
def smoke(env: Env, space_name: str, out: Path | None, allow_cloud: bool, required: tuple[str, ...],
          no_record: bool, as_json: bool) -> None:
    """Embed Polish/English sentinel sentences with a space's embedder and check the vectors.

    Checks dims, normalization, determinism, batch-vs-single consistency and that each Polish
    sentinel's nearest English one is its translation; measures p50/p95/max latency per batch
    and per text. The endpoint is classified (in-process, loopback, private-network, cloud) and
    a cloud endpoint is refused before any text is sent unless --allow-cloud. The evidence holds
    ids and hashes, never sentinel text or secrets. Exits 1 when a required check fails. Gates
    require passing smoke evidence for a space's fingerprint before it may become active.

    \b
    Example:
      embed smoke --space bge_m3 --out evidence/smoke-bge_m3.json
      embed smoke --space openai_3_small --allow-cloud --json
    """
    from embed.api import smoke as run

    cfg = env.config()
    url = None if no_record else env.url(cfg)
    ev = run(cfg, space_name, url=url, allow_cloud=allow_cloud, required=required or None, out=out)

    def lines(e: dict) -> list[str]:
        lat = e["latency_ms"]["per_text"] or {}
        head = (f"smoke {e['space']} ({e['fingerprint'][:12]}): "
                f"{'PASSED' if e['passed'] else 'FAILED'}; endpoint {e['endpoint_class']}, "
                f"dims {e['dims_observed']}, p50 {lat.get('p50')} ms/text, p95 {lat.get('p95')} ms/text")
        checks = [f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']:<20} value={c['value']}"
                  f"{'' if c['required'] else '  (informational)'}" for c in e["checks"]]
        return [head, *checks] + ([f"evidence written to {out}"] if out else [])

    emit(ev, as_json, lines)
    if not ev["passed"]:
        sys.exit(1)
