"""`deploy` (model + pipeline + index in one idempotent step), `pipeline install|show`, `index create`."""

from __future__ import annotations

import json

import click

from .. import errors
from .common import E5Group, State, chosen_mode, echo_dry_run, echo_json, mode_option, prefix_options, resolve_model_arg


@click.command()
@click.option("--model", "-m", required=True, help="Hub id (intfloat/e5-small-v2) or a local model directory.")
@click.option("--index", "-i", required=True, help="Index to create (or check) for the vectors.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--vector-field", default="embedding", show_default=True)
@mode_option()
@click.option(
    "--index-options",
    default="hnsw",
    show_default=True,
    help="hnsw, int8_hnsw, bbq_hnsw, flat (ES); hnsw, hnsw_sq (OS).",
)
@click.option("--model-id", help="Name of the model in the cluster (default e5plugin-<model>).")
@click.option("--pipeline", help="Ingest pipeline name (default e5plugin-<index>).")
@click.option("--replace", is_flag=True, help="Replace a model of the same name that has another source.")
@click.option("--replicas", type=int, help="number_of_replicas for a new index.")
@click.option(
    "--allow-model-change",
    is_flag=True,
    help="Deploy another model or mode onto an index that holds documents (its vectors stay until `reindex`; "
    "`rollout` is the safe way).",
)
@prefix_options
@click.option("--allocations", type=int, default=1, show_default=True, help="Elasticsearch: number_of_allocations.")
@click.option("--threads", type=int, default=1, show_default=True, help="Elasticsearch: threads_per_allocation.")
@click.option("--deploy-timeout", default="300s", show_default=True)
@click.option(
    "--model-format",
    type=click.Choice(["torchscript", "onnx"]),
    help="OpenSearch ml-commons: the graph format to register (default: onnx for a new model; a model already "
    "registered in either format is reused).",
)
@click.option(
    "--one-node-ml",
    is_flag=True,
    help="OpenSearch: apply the ml-commons cluster settings a single-node (dev/test) cluster needs first.",
)
@click.option(
    "--nodes",
    "target_nodes",
    multiple=True,
    help="OpenSearch: deploy the model on these nodes (names or ids; repeat or comma-separate). Turns on "
    "plugins.ml_commons.allow_custom_deployment_plan. Default: ml-commons chooses (the ML nodes when there are).",
)
@click.option("--dry-run", is_flag=True, help="Print every request it would send; change nothing.")
@click.pass_obj
def deploy(
    state: State,
    model,
    index,
    text_field,
    vector_field,
    mode,
    index_options,
    model_id,
    pipeline,
    replace,
    replicas,
    allow_model_change,
    allocations,
    threads,
    deploy_timeout,
    model_format,
    one_node_ml,
    target_nodes,
    dry_run,
):
    """Model + ingest pipeline + index in one idempotent command.

    \b
    Example:
      e5plugin deploy --model intfloat/e5-small-v2 --index docs --mode server
      e5plugin deploy --model ./models/e5-small-v2 --index docs --mode client --dry-run
    """
    from ..deploy import DeployRequest
    from ..deploy import deploy as run_deploy
    from ..engines.base import DeploymentOptions
    from ..prefixes import Mode

    backend = state.backend
    spec = resolve_model_arg(model)
    chosen = chosen_mode(backend, mode)
    request = DeployRequest(
        index=index,
        text_field=text_field,
        vector_field=vector_field,
        mode=chosen,
        index_options=index_options,
        model_id=model_id,
        pipeline=pipeline,
        replace_model=replace,
        replicas=replicas,
        allow_model_change=allow_model_change,
        deployment=DeploymentOptions(
            number_of_allocations=allocations,
            threads_per_allocation=threads,
            timeout=deploy_timeout,
            **({"model_format": model_format} if model_format else {}),
            nodes=tuple(n.strip() for raw in target_nodes for n in raw.split(",") if n.strip()),
        ),
    )
    if one_node_ml and not dry_run and chosen is Mode.SERVER and backend.apply_one_node_ml_settings():
        click.echo("applied the one-node ML cluster settings")
    result = run_deploy(backend, spec, request, dry_run=dry_run)
    if dry_run:
        echo_dry_run(state, backend, result.planned)
        return
    plan = result.setup.plan
    click.echo(f"engine      {backend.engine} {backend.capabilities.version_text}")
    click.echo(f"mode        {chosen.value}")
    if result.model:
        click.echo(f"model       {result.model.model_id} ({result.model.action}, {result.model.state})")
        placement = getattr(backend, "model_placement", None)
        if placement is not None:
            click.echo(f"runs on     {', '.join(placement(result.model.model_id)['nodes']) or 'no node'}")
    if result.pipeline_action:
        click.echo(f"pipeline    {result.setup.pipeline} ({result.pipeline_action})")
    click.echo(f"index       {index} ({result.index_action})")
    click.echo(f"prefixes    passage added by {plan.ingest.value}, query added by {plan.query.value}")
    if not result.changed:
        click.echo("nothing changed: everything was already in place")


@click.group(cls=E5Group)
def pipeline():
    """Ingest pipelines: install, show.

    \b
    Example:
      e5plugin pipeline install --index docs
      e5plugin pipeline show e5plugin-docs
    """


@pipeline.command("install")
@click.option("--index", "-i", required=True, help="An index made by deploy --mode server.")
@click.pass_obj
def pipeline_install(state: State, index):
    """(Re)install the embedding pipeline recorded for an index. Example: e5plugin pipeline install --index docs"""
    from ..deploy import pipeline_body
    from ..search import SemanticSearch

    setup = SemanticSearch.for_index(index, backend=state.backend).setup
    if not setup.pipeline:
        raise errors.ConfigurationError(f"Index {index!r} is in client mode: it has no ingest pipeline.")
    passages = setup.chunking.field if setup.chunking else None
    body = pipeline_body(
        state.backend,
        setup.model_id,
        setup.plan,
        text_field=setup.text_field,
        vector_field=setup.vector_field.removeprefix(f"{passages}.") if passages else setup.vector_field,
        passages_field=passages,
    )
    click.echo(f"{setup.pipeline}: {state.backend.put_pipeline(setup.pipeline, body)}")


@pipeline.command("show")
@click.argument("name")
@click.pass_obj
def pipeline_show(state: State, name):
    """Print a pipeline. Example: e5plugin pipeline show e5plugin-docs"""
    body = state.backend.get_pipeline(name)
    if body is None:
        raise errors.ConfigurationError(f"No pipeline named {name!r}.")
    echo_json(body)


@click.group("index", cls=E5Group)
def index_group():
    """Indices: create.

    \b
    Example:
      e5plugin index create --model intfloat/e5-small-v2 --index docs
    """


@index_group.command("create")
@click.option("--model", "-m", required=True)
@prefix_options
@click.option("--index", "-i", required=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--vector-field", default="embedding", show_default=True)
@click.option("--index-options", default="hnsw", show_default=True)
@click.option("--dry-run", is_flag=True)
@click.pass_obj
def index_create(state: State, model, index, text_field, vector_field, index_options, dry_run):
    """Create a client-mode index for a model (dims and similarity from the model).

    \b
    Example:
      e5plugin index create --model intfloat/e5-small-v2 --index docs
    """
    from ..deploy import DeployRequest
    from ..deploy import deploy as run_deploy
    from ..prefixes import Mode

    spec = resolve_model_arg(model)
    result = run_deploy(
        state.backend,
        spec,
        DeployRequest(
            index=index, text_field=text_field, vector_field=vector_field, mode=Mode.CLIENT, index_options=index_options
        ),
        dry_run=dry_run,
    )
    if dry_run:
        for planned in result.planned:
            click.echo(f"{planned.method} {planned.path}\n{json.dumps(planned.body, indent=2)}")
    else:
        click.echo(f"{index}: {result.index_action}")


COMMANDS = (deploy, pipeline, index_group)
