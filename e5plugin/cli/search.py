"""`search` (the query helper from the command line) and `doctor` (what is wrong, with a fix each)."""

from __future__ import annotations

import sys

import click

from .common import State, echo_json


@click.command()
@click.argument("text")
@click.option("--index", "-i", required=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Hits to return.")
@click.option("--hybrid", is_flag=True, help="BM25 + kNN, fused with reciprocal rank fusion.")
@click.option("--filter", "filters", multiple=True, help="field=value (term filter); repeatable.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def search(state: State, text, index, k, hybrid, filters, as_json):
    """Semantic search: top hits for TEXT (the query prefix is handled for you).

    \b
    Example:
      e5plugin search "how do I reset my password" --index docs -k 3
      e5plugin search "Rückerstattung" --index docs --filter lang=de --hybrid --json
    """
    from ..search import SemanticSearch

    clauses = []
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--filter {item!r}: use field=value")
        clauses.append({"term": {field: value}})
    helper = SemanticSearch.for_index(index, backend=state.backend)
    hits = helper.search(text, k=k, filters=clauses or None, hybrid=hybrid)
    if as_json:
        echo_json([{"id": h.id, "score": h.score, "source": _without_vector(h.source, helper)} for h in hits])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{index}: {text}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column(helper.setup.text_field, overflow="fold")
    from ..ingest import get_path

    for rank, hit in enumerate(hits, start=1):
        snippet = str(get_path(hit.source, helper.setup.text_field) or "")[:160]
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, snippet)
    Console().print(table)


def _without_vector(source: dict, helper) -> dict:
    return {k: v for k, v in source.items() if k != helper.setup.vector_field.split(".")[0]}


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def doctor(state: State, as_json):
    """Engine, version, licence, ML plugins, models, e5plugin indices, and what is wrong (with a fix each).

    \b
    Example:
      e5plugin doctor
    """
    from ..doctor import diagnose

    report = diagnose(state.backend)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(
            f"engine     {report.engine} {report.version}" + (f" (licence {report.licence})" if report.licence else "")
        )
        yes_no = {True: "yes", False: "no"}
        click.echo(f"ML         {yes_no[report.ml]}; cluster adds prefixes: {yes_no[report.cluster_prefixes]}")
        for entry in report.indices:
            click.echo(
                f"index      {entry['index']}: {entry['documents']} docs, mode {entry['mode']}, model "
                f"{entry['model']} (sha256 {str(entry['weights_sha256'])[:12]}, revision {entry['revision']})"
                + (f", cluster model {entry['model_id']} {entry.get('model_state', '')}" if entry["model_id"] else "")
            )
            prefixes = entry.get("prefixes") or {}
            click.echo(
                f"           family {entry.get('family')} ({entry.get('family_source')}); prefixes: query "
                f"{prefixes.get('query_prefix', '')!r}, passage {prefixes.get('passage_prefix', '')!r}"
            )
        for model in report.models:
            click.echo(f"model      {model['model_id']}: {model['state']} (source {model.get('source')})")
            if "nodes" in model:
                click.echo(f"           runs on: {', '.join(model['nodes']) or 'no node'}")
        for problem in report.problems:
            click.echo(f"PROBLEM    {problem.what}\n  fix:     {problem.fix}")
        if not report.problems:
            click.echo("no problems found")
    if report.problems:
        sys.exit(1)


COMMANDS = (search, doctor)
