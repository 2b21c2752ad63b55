"""CLI commands of the E5 use cases: ``faq index`` / ``faq ask``, ``dedup``, ``calibrate``.

Registered on the main group by :func:`register` (called from ``e5plugin.cli``); parsing and printing only, the
work is in :mod:`e5plugin.tasks`.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import errors
from .cli import E5Group, State, _chosen_mode, _echo_json, _mode_option, _progress_bar, _resolve_model


# ---- faq ----------------------------------------------------------------------------------------------------------
@click.group(cls=E5Group)
def faq():
    """FAQ answer retrieval: index question/answer pairs, ask questions."""


@faq.command("index")
@click.argument("source", type=click.Path(allow_dash=True))
@click.option("--index", "-i", required=True)
@click.option(
    "--embed",
    type=click.Choice(["question", "answer", "both"]),
    default="both",
    show_default=True,
    help="What is embedded: the question, the answer, or both (two vectors per entry; the better one counts).",
)
@click.option("--model", "-m", help="Create the index for this model when it does not exist yet.")
@_mode_option(help="For a new index: server (the cluster embeds) or client; auto: server when the cluster can.")
@click.option("--replicas", type=int, help="number_of_replicas for a new index.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def faq_index(state: State, source, index, embed, model, mode, replicas, batch_size, as_json):
    """Index FAQ entries from a JSON Lines file (question, answer, optional id; - for stdin).

    \b
    Example:
      e5plugin faq index faq.jsonl --index faq --embed both --model intfloat/e5-small-v2
    """
    from .ingest import open_input, read_documents
    from .tasks.faq import index_faq, parts

    backend = state.backend
    if not backend.index_exists(index):
        if not model:
            raise errors.ConfigurationError(f"Index {index!r} does not exist: pass --model to create it.")
        from .deploy import DeployRequest, deploy

        spec = _resolve_model(model, None, None)
        deploy(backend, spec, DeployRequest(index=index, mode=_chosen_mode(backend, mode), replicas=replicas))
    stream, name = open_input(source)
    with _progress_bar("faq index", as_json) as bar:
        task = bar.add_task("faq", total=None)
        report = index_faq(
            backend,
            index,
            read_documents(stream, "jsonl"),
            embed=embed,
            source_name=name,
            batch_size=batch_size,
            progress=lambda n: bar.advance(task, n),
        )
    entries = report.indexed // len(parts(embed))
    if as_json:
        _echo_json({"embed": embed, "entries": entries, **report.to_dict()})
    else:
        click.echo(
            f"indexed {entries} FAQ entries ({report.indexed} documents, embed: {embed}), failed {report.failed}"
        )
        for failure in report.failures[:20]:
            where = f"line {failure.line}" if failure.line else f"id {failure.id}"
            click.echo(f"  failed {where}: {failure.reason}", err=True)
    if not report.ok:
        raise errors.IngestFailedError(f"{report.failed} FAQ entries failed (listed above); the others are stored.")


@faq.command("ask")
@click.argument("text")
@click.option("--index", "-i", required=True)
@click.option("--threshold", type=float, help="Minimum cosine for an answer (default: the index's calibration).")
@click.option("-k", "k", type=int, default=3, show_default=True, help="Candidates to show.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def faq_ask(state: State, text, index, threshold, k, as_json):
    """The best stored answer for TEXT with its confidence, or "no good answer" below the threshold.

    \b
    Example:
      e5plugin faq ask "how do I reset my password?" --index faq
    """
    from .tasks.faq import ask

    result = ask(state.backend, index, text, threshold=threshold, k=k)
    if as_json:
        _echo_json(result.to_dict())
    elif result.answered:
        click.echo(f"answer      {result.answer}")
        click.echo(f"question    {result.question} (id {result.id}, matched on the {result.matched})")
        click.echo(f"confidence  {result.confidence:.4f} (threshold {result.threshold:.4f}, {result.threshold_source})")
    else:
        best = result.candidates[0] if result.candidates else None
        click.echo(
            f"no good answer (best confidence {result.confidence if result.confidence is not None else '-'} < "
            f"threshold {result.threshold:.4f}, {result.threshold_source})"
        )
        if best:
            click.echo(f"closest     {best['question']} (id {best['id']})")


# ---- dedup --------------------------------------------------------------------------------------------------------
@click.command()
@click.option("--index", "-i", required=True)
@click.option("--threshold", type=float, help="Minimum cosine for near-duplicates (default: the index's calibration).")
@click.option("--neighbors", type=int, default=10, show_default=True, help="kNN hits asked per document.")
@click.option("--num-candidates", type=int, help="HNSW candidates per query (default max(50, 2 * (neighbors + 1))).")
@click.option("--batch-size", type=int, default=200, show_default=True, help="Vectors per page and per msearch.")
@click.option("--tag", is_flag=True, help="Write e5plugin_duplicate_of / _cluster / _score into the documents.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the JSON report here, not to stdout.")
@click.pass_obj
def dedup(state: State, index, threshold, neighbors, num_candidates, batch_size, tag, output):
    """Near-duplicate clusters: kNN queries against the index, grouped with union-find; JSON report or --tag.

    \b
    Example:
      e5plugin dedup --index docs --threshold 0.9
      e5plugin dedup --index docs --tag -o duplicates.json
    """
    import json

    from .tasks.dedup import find_duplicates, tag_duplicates

    backend = state.backend
    with _progress_bar("dedup", False) as bar:
        task = bar.add_task("dedup", total=None)
        report = find_duplicates(
            backend,
            index,
            threshold=threshold,
            neighbors=neighbors,
            num_candidates=num_candidates,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if tag:
        tag_duplicates(backend, report)
    data = report.to_dict()
    if output:
        Path(output).write_text(json.dumps(data, indent=2, ensure_ascii=False))
        click.echo(
            f"{data['clusters_found']} clusters, {data['duplicates']} duplicates among {data['documents']} documents "
            f"(threshold {report.threshold:.4f}, {report.threshold_source})"
            + (f"; tagged {report.tagged}, cleared {report.cleared}" if tag else "")
            + f"; report in {output}"
        )
    else:
        _echo_json(data)


# ---- calibrate ----------------------------------------------------------------------------------------------------
@click.command()
@click.option("--model", "-m", help="Hub id or local directory (default: the model of --index).")
@click.option(
    "--pairs",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Labelled pairs: JSON Lines, TSV (text1, text2, label|score) or an STS Benchmark file.",
)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "tsv", "sts"]), default="auto", show_default=True)
@click.option(
    "--positive-min",
    type=float,
    default=4.0,
    show_default=True,
    help="Graded scores: a pair is positive when score >= this (STS 0-5).",
)
@click.option("--target-precision", type=float, help="Highest recall with at least this precision.")
@click.option("--maximize", type=click.Choice(["f1"]), help="Maximize F1 (the default objective).")
@click.option(
    "--side",
    type=click.Choice(["query", "passage", "query-passage"]),
    default="query",
    show_default=True,
    help="query: both texts as queries (E5 guidance for symmetric tasks); passage: both as passages (what dedup "
    "compares); query-passage: text1 as query, text2 as passage (FAQ/search relevance pairs).",
)
@click.option("--index", "-i", help="Store the threshold in this index's _meta (faq and dedup read it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def calibrate(state: State, model, pairs, fmt, positive_min, target_precision, maximize, side, index, as_json):
    """Choose a similarity threshold from labelled pairs (max F1 or a target precision) and store it.

    \b
    Example:
      e5plugin calibrate --model intfloat/e5-small-v2 --pairs sts-test.csv --maximize f1 --index docs
      e5plugin calibrate --index docs --pairs pairs.jsonl --target-precision 0.9
    """
    from .embed import Embedder
    from .models import ModelSpec, ensure_local
    from .tasks.calibrate import calibrate as run_calibrate
    from .tasks.calibrate import check_same_model, read_pairs, store_calibration

    if target_precision is not None and maximize:
        raise click.UsageError("--target-precision and --maximize are alternatives: give one.")
    if not model and not index:
        raise click.UsageError("Give --model, or --index to use the index's model.")
    meta: dict = {}
    if index:
        backend = state.backend
        meta = backend.index_meta(index) if backend.index_exists(index) else {}
        if not meta:
            raise errors.ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    if model:
        spec = _resolve_model(model, None, None)
        if index:
            check_same_model(meta, spec, index)
    else:
        recorded = dict(meta["model"])
        recorded.pop("extra", None)
        spec = ModelSpec(**recorded)
        if spec.local_path and not Path(spec.local_path).is_dir():
            spec = ModelSpec(**{**recorded, "local_path": None})
    spec = ensure_local(spec)
    labelled = read_pairs(pairs, fmt=fmt, positive_min=positive_min)
    result = run_calibrate(
        Embedder(spec),
        labelled,
        target_precision=target_precision,
        side=side,
        source=Path(pairs).name,
        positive_min=positive_min,
    )
    if not result.target_reached:
        raise errors.ConfigurationError(
            f"No threshold reaches precision {target_precision} on these {result.pairs} pairs (best: "
            f"{result.precision:.4f} at {result.threshold:.4f}); lower --target-precision. Nothing was stored."
        )
    if index:
        store_calibration(state.backend, index, result)
    if as_json:
        _echo_json({**result.to_dict(), "stored_in": index})
        return
    click.echo(f"model       {result.model}")
    click.echo(f"pairs       {result.pairs} ({result.positives} positive: {result.label_rule}), embedded as {side}")
    click.echo(f"objective   {result.objective}")
    click.echo(f"threshold   {result.threshold:.4f}")
    click.echo(f"precision   {result.precision:.4f}")
    click.echo(f"recall      {result.recall:.4f}")
    click.echo(f"f1          {result.f1:.4f}")
    if index:
        click.echo(f"stored in   {index} (_meta.e5plugin.calibration)")


def register(cli: click.Group) -> None:
    """Add the use-case commands to the main ``e5plugin`` group."""
    cli.add_command(faq)
    cli.add_command(dedup)
    cli.add_command(calibrate)
