"""`embed shadow`: a thin wrapper over embed.shadow.run.shadow (terminal table, --json, --html)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from embed.cli import Env, cli, fail_cleanly


def _paths(path: Path, names: list[str]) -> dict[str, Path]:
    """One report file per source: FILE itself for one source, FILE.<source>.ext for several."""
    if len(names) == 1:
        return {names[0]: path}
    return {n: path.with_name(f"{path.stem}.{n}{path.suffix}") for n in names}


@cli.command()
@click.option("--baseline", metavar="SPACE", help="The space to compare against (default: the legacy space).")
@click.option(
    "--candidate", "candidates", multiple=True, required=True, metavar="SPACE", help="A space to validate (repeatable)."
)
@click.option(
    "--source",
    "source",
    default="all",
    show_default=True,
    metavar="NAME|all",
    help="Which source to compare: a declared source name, or all of them.",
)
@click.option(
    "--queries",
    type=int,
    default=200,
    show_default=True,
    help="Stored rows sampled as label-free queries (each queried with its own vector in each space); "
    "also the cap on labelled queries (a seeded sample; a --query-set file is used whole).",
)
@click.option(
    "--labels",
    default="auto",
    show_default=True,
    metavar="auto|provenance|known-item|seeded|none|FILE",
    help="What judges quality. auto: Honcho's provenance (a message as the query, the documents derived "
    "from it as relevant; a document as the query, its messages' chunks as relevant) when the source has "
    "it, else the seeded set, else label-free only (the result says labels: null). provenance or seeded "
    "named explicitly are refused where the source lacks them. known-item: a span of a row finds that row "
    "(favours lexical overlap). FILE: hand-written qrels for --query-set.",
)
@click.option(
    "--query-set",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSONL text queries (qid, text, optional lang/doc_langs, the source's tenant columns); "
    "default for documents: the seeded embed_eval set when the database has one.",
)
@click.option(
    "--qrels",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Relevance judgments for the text queries: JSONL {qid, doc_id, relevance} or TREC lines.",
)
@click.option("--k", type=int, default=10, show_default=True, help="Depth of every ranking compared.")
@click.option(
    "--sample-tenants",
    type=int,
    default=None,
    metavar="N",
    help="Sample the label-free queries from N random tenants (first tenant column) only.",
)
@click.option(
    "--sweep-queries",
    type=int,
    default=100,
    show_default=True,
    metavar="N",
    help="Stored rows per space read at each pgvector scan setting (ef_search x iterative_scan) on the tenants "
    "the planner serves through HNSW: the filtered-recall table and the recommended setting (0: no sweep).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of the bootstrap.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples per CI.")
@click.option("--allow-cloud", is_flag=True, help="Allow sending query texts to an endpoint classified as cloud.")
@click.option("--json", "as_json", is_flag=True, help="Print {source: result} as JSON instead of tables.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML report here (mode 0600; FILE.<source>.html per source when several).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write {source: result} as JSON here (mode 0600).",
)
@click.pass_obj
@fail_cleanly
def shadow(
    env: Env,
    baseline: str | None,
    candidates: tuple[str, ...],
    source: str,
    queries: int,
    labels: str,
    query_set: Path | None,
    qrels: Path | None,
    k: int,
    sample_tenants: int | None,
    sweep_queries: int,
    seed: int,
    n_boot: int,
    allow_cloud: bool,
    as_json: bool,
    html_path: Path | None,
    out: Path | None,
) -> None:
    """Compare retrieval in the baseline space and each candidate, per source, without mixing them.

    \b
    What is compared: the same queries under the same tenant filters the application uses
    (Honcho: workspace/observer/observed for documents, workspace/session/peer for messages):
      - labelled queries (--labels; no labelling work needed on Honcho: its documents record
        the messages they were derived from). A query's vector is READ from the store or the
        legacy column where its text is stored in that space (no model call, nothing sent),
        else embedded by that space's own query embedder (a space with a query prefix).
        nDCG/recall/MRR/hit@k with bootstrap CIs per language pair and tenant, the paired
        candidate-baseline delta with a Wilcoxon p-value, and a verdict at the gate's margin:
        PASS, FAIL, or INCONCLUSIVE with the queries needed ("needs ~N, has M");
      - --queries stored rows, each queried with its own stored vector in each space:
        top-k overlap, Jaccard, RBO, Kendall tau, neighbour retention;
      - index health per space: served query (the planner's plan) vs an exact scan, tie-aware
        ANN recall@k and latency p50/p95, plus an unfiltered probe with the HNSW index forced;
      - filtered recall as Honcho sees it: on the tenants the planner serves through HNSW,
        recall@k and latency at each hnsw.ef_search x hnsw.iterative_scan, and the cheapest
        setting that meets embed_gates.min_ann_recall (the gate reads this session's setting);
      - distance thresholds (embed_gates.thresholds) mapped to each candidate by quantile.
    \b
    What never meets: vectors of two spaces. Each query vector is tagged with its space's
    fingerprint and refused by any other space's reader; spaces are compared only as ranked
    id lists. No memory text is printed, stored or written: ids, counts and numbers only.
    \b
    Where results go: embed_store.shadow_runs (one row per source: spaces by fingerprint,
    parameters, the whole result) and embed_store.shadow_metrics (one row per metric, slice and
    space), plus a 'shadow' event per candidate. The cutover gates (embed/gates.py, the
    audits/embed_shadow_*.sql audits and `sqlmesh plan`) read the newest run against the
    legacy space: delta_ndcg@k CI floor, ann_recall@k, and freshness after the last backfill.

    \b
    Example:
      embed shadow --candidate bge_m3 --queries 1000 --html evidence/shadow.html
      embed shadow --candidate bge_m3 --source documents --query-set queries.jsonl --labels qrels.jsonl --allow-cloud
      embed shadow --baseline openai_3_small --candidate bge_m3 --source message_embeddings --queries 1000 --json
      embed shadow --candidate e5_small --html evidence/shadow.html
    """
    from embed.api import shadow as run
    from embed.config import Config
    from embed.db.files import write_atomic
    from embed.shadow import render_html, render_table

    cfg: Config = env.config()
    results = run(
        cfg,
        env.url(cfg),
        baseline=baseline,
        candidates=list(candidates),
        sources=None if source == "all" else [source],
        queries=queries,
        labels=labels if labels in ("auto", "provenance", "known-item", "seeded", "none") else Path(labels),
        query_set=query_set,
        qrels=qrels,
        k=k,
        sample_tenants=sample_tenants,
        sweep_queries=sweep_queries,
        seed=seed,
        n_boot=n_boot,
        allow_cloud=allow_cloud,
        say=lambda line: click.echo(line, err=True),
    )
    doc = results.as_dict()
    if out is not None:
        write_atomic(out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        click.echo(f"shadow: result JSON written to {out}", err=True)
    if html_path is not None:
        for name, path in _paths(html_path, list(doc)).items():
            write_atomic(path, render_html(doc[name]))
            click.echo(f"shadow: HTML report for {name} written to {path}", err=True)
    if as_json:
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
        return
    for i, r in enumerate(results.sources.values()):
        click.echo(("\n" if i else "") + f"== {r.source} (run #{r.run_id})\n" + render_table(r.result), nl=False)
