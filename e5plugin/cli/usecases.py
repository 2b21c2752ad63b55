"""The use-case commands: `faq index|ask`, `dedup`, `calibrate`, `chunks deploy|split`, `finetune`,
`rollout`, `alias show|switch`. Parsing and printing only; the work is in :mod:`e5plugin.tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import errors
from .common import (
    E5Group,
    State,
    chosen_mode,
    echo_dry_run,
    echo_json,
    mode_option,
    prefix_options,
    progress_bar,
    resolve_model_arg,
)


# ---- faq ----------------------------------------------------------------------------------------------------------
@click.group(cls=E5Group)
def faq():
    """FAQ answer retrieval: index question/answer pairs, ask questions.

    \b
    Example:
      e5plugin faq index faq.jsonl --index faq --model intfloat/e5-small-v2
      e5plugin faq ask "how do I reset my password?" --index faq
    """


@faq.command("index")
@click.argument("source", type=click.Path(allow_dash=True))
@click.option("--index", "-i", required=True)
@click.option(
    "--embed",
    type=click.Choice(["question", "answer", "both", "entry"]),
    default=None,
    help="What is embedded: the question, the answer, both (two vectors per entry; the better one counts) or entry "
    "(question + answer as one passage). Default: the index's recorded choice, else entry for 512-token models "
    "(E5), both for shorter ones.",
)
@click.option("--model", "-m", help="Create the index for this model when it does not exist yet.")
@prefix_options
@mode_option(help="For a new index: server (the cluster embeds) or client; auto: server when the cluster can.")
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
    from ..ingest import open_input, read_documents
    from ..tasks.faq import index_faq, parts

    backend = state.backend
    if not backend.index_exists(index):
        if not model:
            raise errors.ConfigurationError(f"Index {index!r} does not exist: pass --model to create it.")
        from ..deploy import DeployRequest, deploy

        spec = resolve_model_arg(model)
        deploy(backend, spec, DeployRequest(index=index, mode=chosen_mode(backend, mode), replicas=replicas))
    stream, name = open_input(source)
    with progress_bar("faq index", as_json) as bar:
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
    embed = backend.index_meta(index)["faq"]["embed"]  # the choice index_faq made (default: by model)
    entries = report.indexed // len(parts(embed))
    if as_json:
        echo_json({"embed": embed, "entries": entries, **report.to_dict()})
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
    from ..tasks.faq import ask

    result = ask(state.backend, index, text, threshold=threshold, k=k)
    if as_json:
        echo_json(result.to_dict())
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

    from ..tasks.dedup import find_duplicates, tag_duplicates

    backend = state.backend
    with progress_bar("dedup", False) as bar:
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
        echo_json(data)


# ---- calibrate ----------------------------------------------------------------------------------------------------
@click.command()
@click.option("--model", "-m", help="Hub id or local directory (default: the model of --index).")
@prefix_options
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
@click.option(
    "--task",
    type=click.Choice(["faq", "dedup"]),
    help="Store it as this task's own threshold (its side must be what the task compares: dedup passage, faq "
    "query or query-passage); without it, the shared one, used by each task whose comparison its side fits.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def calibrate(state: State, model, pairs, fmt, positive_min, target_precision, maximize, side, index, task, as_json):
    """Choose a similarity threshold from labelled pairs (max F1 or a target precision) and store it.

    \b
    Example:
      e5plugin calibrate --model intfloat/e5-small-v2 --pairs sts-test.csv --maximize f1 --index docs
      e5plugin calibrate --index docs --pairs pairs.jsonl --target-precision 0.9
    """
    from ..embed import Embedder
    from ..models import ModelSpec, ensure_local
    from ..tasks.calibrate import calibrate as run_calibrate
    from ..tasks.calibrate import check_same_model, read_pairs, store_calibration

    if target_precision is not None and maximize:
        raise click.UsageError("--target-precision and --maximize are alternatives: give one.")
    if not model and not index:
        raise click.UsageError("Give --model, or --index to use the index's model.")
    if task and not index:
        raise click.UsageError("--task stores the threshold in an index: give --index too.")
    meta: dict = {}
    if index:
        backend = state.backend
        meta = backend.index_meta(index) if backend.index_exists(index) else {}
        if not meta:
            raise errors.ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    if model:
        spec = resolve_model_arg(model)
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
        store_calibration(state.backend, index, result, task=task)
    if as_json:
        echo_json({**result.to_dict(), "stored_in": index})
        return
    click.echo(f"model       {result.model}")
    click.echo(f"pairs       {result.pairs} ({result.positives} positive: {result.label_rule}), embedded as {side}")
    click.echo(f"objective   {result.objective}")
    click.echo(f"threshold   {result.threshold:.4f}")
    click.echo(f"precision   {result.precision:.4f}")
    click.echo(f"recall      {result.recall:.4f}")
    click.echo(f"f1          {result.f1:.4f}")
    if index:
        slot = f"calibrations.{task}" if task else "calibration"
        click.echo(f"stored in   {index} (_meta.e5plugin.{slot})")


# ---- chunks (long documents) ----------------------------------------------------------------------------------------
@click.group(cls=E5Group)
def chunks():
    """Long documents: an index that splits documents into passages the model can read whole.

    \b
    Example:
      e5plugin chunks deploy --model intfloat/e5-small-v2 --index manuals
      e5plugin chunks split chapter1.txt --model intfloat/e5-small-v2
    """


@chunks.command("deploy")
@click.option("--model", "-m", required=True, help="Hub id or a local model directory.")
@prefix_options
@click.option("--index", "-i", required=True)
@click.option(
    "--chunk-size",
    type=int,
    help="Tokens of text per passage (default: as many as the model reads after its prefix).",
)
@click.option("--chunk-overlap", type=int, default=64, show_default=True, help="Tokens neighbouring passages share.")
@click.option("--passages-field", default="passages", show_default=True, help="The nested field of the passages.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--vector-field", default="embedding", show_default=True, help="The vector inside each passage.")
@click.option("--keyword-field", "keyword_fields", multiple=True, help="Map as keyword (repeatable; default: lang).")
@mode_option()
@click.option("--index-options", default="hnsw", show_default=True)
@click.option("--model-id", help="Name of the model in the cluster (server mode).")
@click.option("--replicas", type=int, help="number_of_replicas for a new index.")
@click.option("--dry-run", is_flag=True, help="Print the requests; send nothing.")
@click.pass_obj
def chunks_deploy(
    state: State,
    model,
    index,
    chunk_size,
    chunk_overlap,
    passages_field,
    text_field,
    vector_field,
    keyword_fields,
    mode,
    index_options,
    model_id,
    replicas,
    dry_run,
):
    """Deploy an index that stores each document as overlapping passages (nested vectors).

    `e5plugin ingest` then splits every document with the model's tokenizer, and `e5plugin search` returns
    documents ranked by their best passage.

    \b
    Example:
      e5plugin chunks deploy --model intfloat/e5-small-v2 --index manuals --chunk-size 256 --chunk-overlap 32
      e5plugin ingest manuals.jsonl --index manuals
      e5plugin search "torque of the rear axle bolts" --index manuals
    """
    from ..deploy import DeployRequest, deploy
    from ..tasks.chunking import ChunkingSettings

    backend = state.backend
    spec = resolve_model_arg(model)
    request = DeployRequest(
        index=index,
        text_field=text_field,
        vector_field=vector_field,
        mode=chosen_mode(backend, mode, chunked=True),
        index_options=index_options,
        model_id=model_id,
        replicas=replicas,
        chunking=ChunkingSettings(chunk_size=chunk_size, overlap=chunk_overlap, field=passages_field),
        keyword_fields=tuple(keyword_fields) or ("lang",),
    )
    result = deploy(backend, spec, request, dry_run=dry_run)
    if dry_run:
        echo_dry_run(state, backend, result.planned)
        return
    settings = result.setup.chunking
    click.echo(f"index       {index} ({result.index_action}, {request.mode.value} mode)")
    if result.model:
        click.echo(f"model       {result.model.model_id} ({result.model.action}, {result.model.state})")
    if result.pipeline_action:
        click.echo(f"pipeline    {result.setup.pipeline} ({result.pipeline_action})")
    click.echo(f"passages    {settings.chunk_size} tokens, overlap {settings.overlap}, in {result.setup.vector_field}")


@chunks.command("split")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--model", "-m", required=True)
@prefix_options
@click.option("--chunk-size", type=int)
@click.option("--chunk-overlap", type=int, default=64, show_default=True)
def chunks_split(source, model, chunk_size, chunk_overlap):
    """Show how a text file would be split into passages (JSON Lines: text, start, end, tokens). No cluster.

    \b
    Example:
      e5plugin chunks split chapter1.txt --model intfloat/e5-small-v2 --chunk-size 128
    """
    from ..prefixes import Mode, plan_prefixes
    from ..tasks.chunking import Chunker, ChunkingSettings

    spec = resolve_model_arg(model)
    prefix = plan_prefixes(spec, Mode.CLIENT, cluster_prefix_support=False).passage_prefix  # room kept for it
    chunker = Chunker(spec, ChunkingSettings(chunk_size=chunk_size, overlap=chunk_overlap), prefix)
    text = click.get_text_stream("stdin").read() if source == "-" else Path(source).read_text(encoding="utf-8")
    for passage in chunker(text):
        click.echo(json.dumps({**passage.to_source(), "tokens": passage.tokens}, ensure_ascii=False))


# ---- finetune -------------------------------------------------------------------------------------------------------
@click.command()
@click.option("--model", "-m", required=True, help="The base model: hub id or local directory.")
@prefix_options
@click.option("--pairs", "pairs_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="New, empty directory.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=2e-5, show_default=True)
@click.option("--max-seq-length", type=int, default=256, show_default=True, help="Truncation while training.")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Share of queries held out for nDCG@10.")
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deploy", "do_deploy", is_flag=True, help="Then roll the model out behind the alias --index.")
@click.option("--index", "-i", "alias", help="With --deploy: the alias applications search.")
@mode_option()
@click.option("--source", type=click.Path(exists=True, dir_okay=False), help="With --deploy: documents (JSON Lines).")
@click.option("--replicas", type=int, help="With --deploy: number_of_replicas of the new index.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def finetune(
    state: State,
    model,
    pairs_path,
    out_dir,
    epochs,
    batch_size,
    learning_rate,
    max_seq_length,
    holdout,
    max_steps,
    seed,
    do_deploy,
    alias,
    mode,
    source,
    replicas,
    as_json,
):
    """Fine-tune on (query, passage) pairs; nDCG@10 before/after on held-out queries; optionally deploy it as a
    new model version behind an alias, switched without downtime.

    PAIRS: JSON Lines {"query": ..., "passage": ...} (or CSV/TSV with those columns). Prefixes are added as the
    model expects them (query: / passage: for E5).

    \b
    Example:
      e5plugin finetune --model intfloat/e5-small-v2 --pairs pairs.jsonl --out models/e5-support-v2
      e5plugin finetune -m ./models/e5-small-v2 --pairs pairs.jsonl --out models/v3 --deploy --index support
    """
    from ..tasks.finetune import FinetuneConfig, load_pairs
    from ..tasks.finetune import finetune as run_finetune

    if do_deploy and not alias:
        raise click.BadParameter("--deploy needs --index (the alias to switch)")
    spec = resolve_model_arg(model)
    config = FinetuneConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_seq_length=max_seq_length,
        seed=seed,
        max_steps=max_steps,
    )

    def progress(step: int, total: int, loss: float) -> None:
        if not as_json:
            click.echo(f"\rstep {step}/{total} loss {loss:.4f}", nl=False, err=True)

    report = run_finetune(spec, load_pairs(pairs_path), out_dir, config, holdout=holdout, progress=progress)
    output = report.to_dict()
    if do_deploy:
        output["rollout"] = _rollout(state, report.spec, alias, mode, source, None, None, False, replicas, as_json)
    if as_json:
        echo_json(output)
        return
    run = report.training
    click.echo(f"\nmodel       {report.out_dir} (from {report.base_model})")
    click.echo(f"training    {report.train_pairs} pairs, {run.steps} steps in {run.seconds:.1f}s")
    click.echo(
        f"nDCG@10     {report.ndcg_before:.4f} -> {report.ndcg_after:.4f} "
        f"({report.heldout_queries} held-out queries, {report.eval_corpus} passages)"
    )
    if do_deploy:
        _print_rollout(output["rollout"])


# ---- rollout / alias ------------------------------------------------------------------------------------------------
def _rollout(state, spec, alias, mode, source, from_index, check_query, delete_old, replicas, quiet) -> dict:
    from ..ingest import open_input, read_documents
    from ..tasks.rollout import rollout

    backend = state.backend
    current = backend.alias_indices(alias)
    if mode == "auto" and current:  # the new version keeps the current one's mode
        mode = backend.index_meta(current[0]).get("mode", "auto")
    documents = None
    if source:
        stream, _ = open_input(source)
        documents = list(read_documents(stream))
    result = rollout(
        backend,
        spec,
        alias,
        mode=chosen_mode(backend, mode),
        documents=documents,
        check_query=check_query,
        source_index=from_index,
        replicas=replicas,
        delete_old=delete_old,
    )
    return result.to_dict()


def _print_rollout(data: dict) -> None:
    before = ", ".join(data["previous"]) or "nothing"
    click.echo(f"new index   {data['index']} ({data['copied']} documents)")
    click.echo(f"alias       {data['alias']} -> {data['index']} (was {before})")
    if data["deleted"]:
        click.echo(f"deleted     {', '.join(data['deleted'])}")


@click.command()
@click.option("--model", "-m", required=True, help="The new model version: hub id or local directory.")
@prefix_options
@click.option("--alias", "-a", required=True, help="The alias applications search (created on the first rollout).")
@mode_option()
@click.option("--source", type=click.Path(exists=True, dir_okay=False), help="Documents (JSON Lines) to index.")
@click.option("--from-index", help="Copy the documents from this index (default: the alias's current index).")
@click.option("--check-query", help="A search that must return hits on the new index before the switch.")
@click.option("--delete-old", is_flag=True, help="Delete the previous index after the switch (no rollback).")
@click.option("--replicas", type=int, help="number_of_replicas of the new index.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollout(state: State, model, alias, mode, source, from_index, check_query, delete_old, replicas, as_json):
    """Deploy a model version into a new index <alias>-vN, fill it, then switch the alias atomically.

    \b
    Example:
      e5plugin rollout --model ./models/e5-support-v2 --alias support --check-query "reset password"
      e5plugin alias switch --alias support --index support-v1      # rollback
    """
    spec = resolve_model_arg(model)
    data = _rollout(state, spec, alias, mode, source, from_index, check_query, delete_old, replicas, as_json)
    if as_json:
        echo_json(data)
    else:
        _print_rollout(data)


@click.group("alias", cls=E5Group)
def alias_group():
    """Aliases: show where one points, switch it (rollback).

    \b
    Example:
      e5plugin alias show support
      e5plugin alias switch --alias support --index support-v1
    """


@alias_group.command("show")
@click.argument("name")
@click.pass_obj
def alias_show(state: State, name):
    """The indices an alias points to. Example: e5plugin alias show support"""
    targets = state.backend.alias_indices(name)
    if not targets:
        raise errors.ConfigurationError(f"No alias named {name!r}.")
    for index in targets:
        model = state.backend.index_meta(index).get("model", {}).get("model_id")
        click.echo(f"{name} -> {index} (model {model})")


@alias_group.command("switch")
@click.option("--alias", "-a", required=True)
@click.option("--index", "-i", required=True)
@click.pass_obj
def alias_switch(state: State, alias, index):
    """Point an alias at another index in one atomic step. Example: e5plugin alias switch -a support -i support-v1"""
    if not state.backend.index_exists(index):
        raise errors.ConfigurationError(f"No index named {index!r}.")
    left = state.backend.switch_alias(alias, index)
    click.echo(f"{alias} -> {index}" + (f" (was {', '.join(left)})" if left else ""))


COMMANDS = (faq, dedup, calibrate, chunks, finetune, rollout, alias_group)
