"""CLI commands for long documents, fine-tuning and model-version rollouts behind an alias.

``chunks deploy`` / ``chunks split``, ``finetune``, ``rollout``, ``alias show`` / ``alias switch``. Registered on the
main group by :func:`register`; parsing and printing only, the work is in :mod:`e5plugin.tasks`.
(Multilingual search needs no command of its own: ``deploy`` maps ``lang`` as a keyword and
``e5plugin search ... --filter lang=en`` filters on it.)
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import errors
from .cli import E5Group, State, _chosen_mode, _echo_dry_run, _echo_json, _mode_option, _resolve_model


# ---- chunks (long documents) ----------------------------------------------------------------------------------------
@click.group(cls=E5Group)
def chunks():
    """Long documents: an index that splits documents into passages the model can read whole."""


@chunks.command("deploy")
@click.option("--model", "-m", required=True, help="Hub id or a local model directory.")
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
@_mode_option()
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
    from .deploy import DeployRequest, deploy
    from .tasks.chunking import ChunkingSettings

    backend = state.backend
    spec = _resolve_model(model, None, None)
    request = DeployRequest(
        index=index,
        text_field=text_field,
        vector_field=vector_field,
        mode=_chosen_mode(backend, mode, chunked=True),
        index_options=index_options,
        model_id=model_id,
        replicas=replicas,
        chunking=ChunkingSettings(chunk_size=chunk_size, overlap=chunk_overlap, field=passages_field),
        keyword_fields=tuple(keyword_fields) or ("lang",),
    )
    result = deploy(backend, spec, request, dry_run=dry_run)
    if dry_run:
        _echo_dry_run(state, backend, result.planned)
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
@click.option("--chunk-size", type=int)
@click.option("--chunk-overlap", type=int, default=64, show_default=True)
def chunks_split(source, model, chunk_size, chunk_overlap):
    """Show how a text file would be split into passages (JSON Lines: text, start, end, tokens). No cluster.

    \b
    Example:
      e5plugin chunks split chapter1.txt --model intfloat/e5-small-v2 --chunk-size 128
    """
    from .prefixes import Mode, plan_prefixes
    from .tasks.chunking import Chunker, ChunkingSettings

    spec = _resolve_model(model, None, None)
    prefix = plan_prefixes(spec, Mode.CLIENT, cluster_prefix_support=False).passage_prefix  # room kept for it
    chunker = Chunker(spec, ChunkingSettings(chunk_size=chunk_size, overlap=chunk_overlap), prefix)
    text = click.get_text_stream("stdin").read() if source == "-" else Path(source).read_text(encoding="utf-8")
    for passage in chunker(text):
        click.echo(json.dumps({**passage.to_source(), "tokens": passage.tokens}, ensure_ascii=False))


# ---- finetune -------------------------------------------------------------------------------------------------------
@click.command()
@click.option("--model", "-m", required=True, help="The base model: hub id or local directory.")
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
@_mode_option()
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
    from .tasks.finetune import FinetuneConfig, load_pairs
    from .tasks.finetune import finetune as run_finetune

    if do_deploy and not alias:
        raise click.BadParameter("--deploy needs --index (the alias to switch)")
    spec = _resolve_model(model, None, None)
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
        _echo_json(output)
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
    from .ingest import open_input, read_documents
    from .tasks.rollout import rollout

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
        mode=_chosen_mode(backend, mode),
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
@click.option("--alias", "-a", required=True, help="The alias applications search (created on the first rollout).")
@_mode_option()
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
    spec = _resolve_model(model, None, None)
    data = _rollout(state, spec, alias, mode, source, from_index, check_query, delete_old, replicas, as_json)
    if as_json:
        _echo_json(data)
    else:
        _print_rollout(data)


@click.group("alias", cls=E5Group)
def alias_group():
    """Aliases: show where one points, switch it (rollback)."""


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


def register(cli: click.Group) -> None:
    """Add these commands to the main ``e5plugin`` group."""
    cli.add_command(chunks)
    cli.add_command(finetune)
    cli.add_command(rollout)
    cli.add_command(alias_group)
