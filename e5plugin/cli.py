"""The `e5plugin` command line: parse options, call the API, print. No logic of its own.

Every option of the top-level group can also come from an environment variable (E5PLUGIN_URL, E5PLUGIN_USERNAME,
E5PLUGIN_PASSWORD, E5PLUGIN_API_KEY, E5PLUGIN_CA_CERTS, ...) or from a config file (--config, default
~/.config/e5plugin/config.json). Errors end with one sentence and a distinct exit code (see ``e5plugin.errors``);
``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import errors
from .config import ConnectionConfig

DEFAULT_CONFIG = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "e5plugin" / "config.json"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
#: `ingest --bulk-settings auto` switches the index to bulk-load settings for input files at least this large.
BULK_SETTINGS_MIN_BYTES = 10 << 20


class UserError(click.ClickException):
    """An e5plugin error shown as one sentence with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class E5Group(click.Group):
    """Turns e5plugin errors into one-line messages with distinct exit codes (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.E5PluginError as exc:
            if _debug(ctx):
                raise
            raise UserError(_scrub(str(exc), ctx), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _debug(ctx):
                raise
            message = f"unexpected {type(exc).__name__}: {exc} (re-run with --debug for the traceback)"
            raise UserError(_scrub(message, ctx), 1) from exc


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return bool(state and state.debug) or os.environ.get("E5PLUGIN_DEBUG") == "1"


def _scrub(text: str, ctx: click.Context) -> str:
    state = ctx.find_object(State)
    for secret in state.config.secrets() if state else []:
        text = text.replace(secret, "****")
    return text


class State:
    def __init__(self, config: ConnectionConfig, engine: str, debug: bool) -> None:
        self.config = config
        self.engine = engine
        self.debug = debug
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            from .engines import connect

            self._backend = connect(self.config, engine=self.engine)
        return self._backend


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    path = Path(value) if value else DEFAULT_CONFIG
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"{path} is not valid JSON: {exc}") from exc
        ctx.default_map = {**data, **(ctx.default_map or {})}
    elif value:
        raise click.BadParameter(f"config file {path} does not exist")
    return value


@click.group(cls=E5Group, context_settings={**CONTEXT, "auto_envvar_prefix": "E5PLUGIN"})
@click.option(
    "--config",
    "config_file",
    callback=_load_config_file,
    is_eager=True,
    expose_value=False,
    help=f"JSON file with option defaults (default {DEFAULT_CONFIG}).",
)
@click.option("--url", "urls", multiple=True, help="Cluster URL; repeat for several. [env: E5PLUGIN_URL]")
@click.option("--cloud-id", help="Elastic Cloud deployment id.")
@click.option("--username", "-u", help="Basic-auth user.")
@click.option("--password", "-p", help="Basic-auth password (prefer the env var E5PLUGIN_PASSWORD).")
@click.option("--api-key", help="Elasticsearch API key (base64 id:key).")
@click.option("--ca-certs", type=click.Path(exists=True, dir_okay=False), help="CA bundle to verify TLS.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (explicit opt-in; avoid).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Request timeout in seconds.")
@click.option("--engine", type=click.Choice(["auto", "elasticsearch", "opensearch"]), default="auto", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="e5plugin")
@click.pass_context
def cli(ctx: click.Context, urls, cloud_id, username, password, api_key, ca_certs, insecure, timeout, engine, debug):
    """Put E5 embedding models to work in Elasticsearch and OpenSearch.

    \b
    Quick start (local node, offline model, sample data, searches):
      e5plugin demo
    Your own cluster:
      export E5PLUGIN_URL=https://search.example.com:9200 E5PLUGIN_USERNAME=... E5PLUGIN_PASSWORD=...
      e5plugin deploy --model intfloat/e5-small-v2 --index docs
      e5plugin ingest docs.jsonl --index docs
      e5plugin search "how do I reset my password" --index docs
    """
    if len(urls) == 1 and "," in urls[0]:
        urls = tuple(u.strip() for u in urls[0].split(",") if u.strip())
    config = ConnectionConfig(
        urls=list(urls) or ["http://localhost:9200"],
        cloud_id=cloud_id,
        username=username,
        password=password,
        api_key=api_key,
        ca_certs=ca_certs,
        verify_certs=not insecure,
        request_timeout=timeout,
    )
    ctx.obj = State(config, engine, debug)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _masked(text: str, state: State) -> str:
    for secret in state.config.secrets():
        text = text.replace(secret, "****")
    return text


def _mode_option(
    default: str = "auto",
    help: str = "server: the cluster embeds (ML); client: e5plugin embeds locally. auto: server when the cluster can.",
):
    return click.option(
        "--mode", type=click.Choice(["auto", "server", "client"]), default=default, show_default=True, help=help
    )


def _chosen_mode(backend, mode: str, chunked: bool = False):
    """server / client; auto: server when the cluster can run the model (and, for chunked indices, embed passages)."""
    from .prefixes import Mode

    if mode != "auto":
        return Mode(mode)
    if not backend.capabilities.ml:
        return Mode.CLIENT
    if chunked:
        from .models import KNOWN_MODELS

        plan = backend.prefix_plan(KNOWN_MODELS["intfloat/e5-small-v2"], Mode.SERVER)
        try:
            backend.chunked_pipeline_body("probe", plan, text_field="text", passages_field="p", vector_field="v")
        except errors.MissingCapabilityError:
            return Mode.CLIENT
    return Mode.SERVER


def _progress_bar(label: str, disable: bool):
    """A rich progress bar on stderr (stdout stays clean for JSON), shown only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=disable or not sys.stderr.isatty(),
        transient=True,
        console=Console(stderr=True),
    )


def _echo_dry_run(state: State, backend, planned_requests) -> None:
    """What a ``--dry-run`` would have sent, secrets masked."""
    click.echo(f"# dry run against {backend.engine} {backend.capabilities.version_text}: nothing was sent")
    click.echo(f"# connection: {json.dumps(state.config.masked())}")
    for planned in planned_requests:
        note = f"  # {planned.note}" if planned.note else ""
        click.echo(f"{planned.method} {planned.path}{note}")
        if planned.body is not None:
            click.echo(_masked(json.dumps(planned.body, indent=2, ensure_ascii=False), state))


def _resolve_model(model: str, query_prefix: str | None, passage_prefix: str | None):
    from .models import KNOWN_MODELS, resolve_model

    download = not Path(model).expanduser().is_dir() and model not in KNOWN_MODELS
    return resolve_model(model, query_prefix=query_prefix, passage_prefix=passage_prefix, download=download)


# ---- deploy -------------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--model", "-m", required=True, help="Hub id (intfloat/e5-small-v2) or a local model directory.")
@click.option("--index", "-i", required=True, help="Index to create (or check) for the vectors.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--vector-field", default="embedding", show_default=True)
@_mode_option()
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
@click.option("--query-prefix", help="Override the model's query prefix ('' for none).")
@click.option("--passage-prefix", help="Override the model's passage prefix ('' for none).")
@click.option("--allocations", type=int, default=1, show_default=True, help="Elasticsearch: number_of_allocations.")
@click.option("--threads", type=int, default=1, show_default=True, help="Elasticsearch: threads_per_allocation.")
@click.option("--deploy-timeout", default="300s", show_default=True)
@click.option(
    "--one-node-ml",
    is_flag=True,
    help="OpenSearch: apply the ml-commons cluster settings a single-node (dev/test) cluster needs first.",
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
    query_prefix,
    passage_prefix,
    allocations,
    threads,
    deploy_timeout,
    one_node_ml,
    dry_run,
):
    """Model + ingest pipeline + index in one idempotent command.

    \b
    Example:
      e5plugin deploy --model intfloat/e5-small-v2 --index docs --mode server
      e5plugin deploy --model ./models/e5-small-v2 --index docs --mode client --dry-run
    """
    from .deploy import DeployRequest
    from .deploy import deploy as run_deploy
    from .engines.base import DeploymentOptions
    from .prefixes import Mode

    backend = state.backend
    spec = _resolve_model(model, query_prefix, passage_prefix)
    chosen = _chosen_mode(backend, mode)
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
        deployment=DeploymentOptions(
            number_of_allocations=allocations, threads_per_allocation=threads, timeout=deploy_timeout
        ),
    )
    if one_node_ml and not dry_run and chosen is Mode.SERVER and backend.apply_one_node_ml_settings():
        click.echo("applied the one-node ML cluster settings")
    result = run_deploy(backend, spec, request, dry_run=dry_run)
    if dry_run:
        _echo_dry_run(state, backend, result.planned)
        return
    plan = result.setup.plan
    click.echo(f"engine      {backend.engine} {backend.capabilities.version_text}")
    click.echo(f"mode        {chosen.value}")
    if result.model:
        click.echo(f"model       {result.model.model_id} ({result.model.action}, {result.model.state})")
    if result.pipeline_action:
        click.echo(f"pipeline    {result.setup.pipeline} ({result.pipeline_action})")
    click.echo(f"index       {index} ({result.index_action})")
    click.echo(f"prefixes    passage added by {plan.ingest.value}, query added by {plan.query.value}")
    if not result.changed:
        click.echo("nothing changed: everything was already in place")


# ---- ingest -------------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.Path(allow_dash=True))
@click.option("--index", "-i", required=True)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto", show_default=True)
@click.option(
    "--id-field",
    default="id",
    show_default=True,
    help="Field holding the document id (else: derived from file + line).",
)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--resume", is_flag=True, help="Continue after an interrupted run (skips what is safely stored).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the failure report (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--bulk-settings",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Load with refresh_interval -1 and 0 replicas, restored afterwards; auto: on for files of 10 MB or more.",
)
@click.option(
    "--embed-backend",
    type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
    default="torch",
    show_default=True,
    help="Client mode: what runs the model; auto: ONNX int8 where `model check-quantization` accepted it, else torch.",
)
@click.pass_obj
def ingest(
    state: State, source, index, fmt, id_field, batch_size, resume, report_path, as_json, bulk_settings, embed_backend
):
    """Bulk-index a JSON Lines or CSV file (or - for stdin) into an index made by `deploy`.

    \b
    Example:
      e5plugin ingest docs.jsonl --index docs
      cat docs.jsonl | e5plugin ingest - --index docs --resume
    """

    from .ingest import Checkpoint, open_input, read_documents
    from .ingest import ingest as run_ingest
    from .prefixes import Mode
    from .search import IndexSetup

    backend = state.backend
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise errors.ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    setup = IndexSetup.from_meta(meta)
    embedder = None
    if setup.mode is Mode.CLIENT:
        from .embed import Embedder

        backend_name, quantize = {"onnx-int8": ("onnx", "int8")}.get(embed_backend, (embed_backend, None))
        embedder = Embedder(setup.spec, plan=setup.plan, backend=backend_name, quantize=quantize)
    stream, name = open_input(source)
    if bulk_settings == "auto":
        bulk_settings = "on" if source != "-" and Path(source).stat().st_size >= BULK_SETTINGS_MIN_BYTES else "off"
    if fmt == "auto":
        fmt = "csv" if name.endswith(".csv") else "jsonl"
    checkpoint = Checkpoint(_checkpoint_path(index, source if source != "-" else "stdin"))
    if not resume:
        checkpoint.clear()
        checkpoint = Checkpoint(checkpoint.path)
    with _progress_bar("ingest", as_json) as bar:
        task = bar.add_task("ingest", total=None)
        report = run_ingest(
            backend,
            index,
            read_documents(stream, fmt),
            text_field=setup.text_field,
            vector_field=setup.vector_field,
            embedder=embedder,
            id_field=id_field,
            source_name=name,
            batch_size=batch_size,
            checkpoint=checkpoint,
            progress=lambda n: bar.advance(task, n),
            refresh=True,
            bulk_settings=bulk_settings == "on",
        )
    if report.ok:
        checkpoint.clear()
    if report_path:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(
            f"indexed {report.indexed}, without vector {report.without_vector}, failed {report.failed}"
            + (f", skipped (resumed) {report.skipped}" if report.skipped else "")
        )
        for failure in report.failures[:20]:
            where = f"line {failure.line}" if failure.line else f"id {failure.id}"
            click.echo(f"  failed {where}: {failure.reason}", err=True)
        if len(report.failures) > 20:
            click.echo(f"  ... {len(report.failures) - 20} more (use --report FILE)", err=True)
    if not report.ok:
        raise errors.IngestFailedError(
            f"{report.failed} documents failed (see the list above); fix them and re-run, good rows are stored."
        )


def _checkpoint_path(index: str, source: str) -> Path:
    import hashlib

    from .devcluster import default_cache_dir

    key = hashlib.sha1(f"{index}\0{Path(source).resolve() if source != 'stdin' else source}".encode()).hexdigest()
    path = default_cache_dir() / "checkpoints" / f"{index}-{key[:12]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---- search -------------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("text")
@click.option("--index", "-i", required=True)
@click.option("-k", "k", type=int, default=5, show_default=True)
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
    from .search import SemanticSearch

    clauses = []
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--filter {item!r}: use field=value")
        clauses.append({"term": {field: value}})
    helper = SemanticSearch.for_index(index, backend=state.backend)
    hits = helper.search(text, k=k, filters=clauses or None, hybrid=hybrid)
    if as_json:
        _echo_json([{"id": h.id, "score": h.score, "source": _without_vector(h.source, helper)} for h in hits])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{index}: {text}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column(helper.setup.text_field, overflow="fold")
    from .ingest import get_path

    for rank, hit in enumerate(hits, start=1):
        snippet = str(get_path(hit.source, helper.setup.text_field) or "")[:160]
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, snippet)
    Console().print(table)


def _without_vector(source: dict, helper) -> dict:
    return {k: v for k, v in source.items() if k != helper.setup.vector_field.split(".")[0]}


# ---- reindex / backfill -------------------------------------------------------------------------------------------
@cli.command()
@click.option("--index", "-i", required=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.pass_obj
def reindex(state: State, index, batch_size):
    """Backfill: embed documents that have no vector yet or whose embedding failed.

    \b
    Example:
      e5plugin reindex --index docs
    """
    from .backfill import backfill
    from .search import SemanticSearch

    helper = SemanticSearch.for_index(index, backend=state.backend)
    report = backfill(
        state.backend,
        index,
        helper.setup,
        batch_size=batch_size,
        progress=lambda done, total: click.echo(f"\r{done}/{total}", nl=False, err=True),
    )
    click.echo(f"\nre-embedded {report.indexed}, still without vector {report.without_vector}, failed {report.failed}")
    if not report.ok or report.without_vector:
        raise errors.IngestFailedError(f"{report.failed + report.without_vector} documents still have no vector.")


# ---- doctor -------------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def doctor(state: State, as_json):
    """Engine, version, licence, ML plugins, models, e5plugin indices, and what is wrong (with a fix each).

    \b
    Example:
      e5plugin doctor
    """
    from .doctor import diagnose

    report = diagnose(state.backend)
    if as_json:
        _echo_json(report.to_dict())
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
        for model in report.models:
            click.echo(f"model      {model['model_id']}: {model['state']} (source {model.get('source')})")
        for problem in report.problems:
            click.echo(f"PROBLEM    {problem.what}\n  fix:     {problem.fix}")
        if not report.problems:
            click.echo("no problems found")
    if report.problems:
        sys.exit(1)


# ---- model / pipeline / index -------------------------------------------------------------------------------------
@cli.group(cls=E5Group)
def model():
    """Models in the cluster: import, list, status, delete."""


@model.command("import")
@click.option("--model", "-m", "model_name", required=True)
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

    from .deploy import validate_name
    from .prefixes import Mode

    backend = state.backend
    backend.require_ml()
    spec = _resolve_model(model_name, None, None)
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
@click.pass_obj
def model_delete(state: State, model_id, yes):
    """Undeploy and delete a model. Example: e5plugin model delete e5plugin-e5-small-v2 --yes"""
    if not yes:
        click.confirm(f"Delete model {model_id}?", abort=True)
    state.backend.require_ml()
    state.backend.delete_model(model_id)
    click.echo(f"deleted {model_id}")


@model.command("pull")
@click.argument("model_name")
@click.option("--to", "target", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--revision", help="Hub revision (branch, tag or commit) to pin.")
def model_pull(model_name, target, revision):
    """Download a hub model once, with a manifest of file hashes, for air-gapped deploys.

    \b
    Example:
      e5plugin model pull intfloat/e5-small-v2 --to ./models/e5-small-v2
    """
    from .manifest import pull

    manifest = pull(model_name, Path(target), revision=revision)
    click.echo(f"{model_name} @ {manifest['revision']}: {len(manifest['files'])} files in {target}")


@model.command("check-quantization")
@click.option("--model", "model_name", required=True, help="Model directory or hub id.")
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
    from .quality import check_quantization

    spec = _resolve_model(model_name, None, None)
    result = check_quantization(spec, data, split=split, tolerance=tolerance, limit_docs=limit_docs or None)
    info = result.to_dict()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"nDCG@10 fp32 ({result.fp32_backend}) {result.fp32_ndcg:.4f}   onnx int8 {result.int8_ndcg:.4f}")
        click.echo(f"delta {result.delta:+.4f} (tolerance {tolerance}); {result.docs} docs, {result.queries} queries")
        click.echo(f"docs/s fp32 {result.fp32_docs_per_s}   int8 {result.int8_docs_per_s}")
        click.echo("int8 accepted: --embed-backend auto uses it" if result.accepted else "int8 refused: fp32 is kept")


@cli.group(cls=E5Group)
def pipeline():
    """Ingest pipelines: install, show."""


@pipeline.command("install")
@click.option("--index", "-i", required=True, help="An index made by deploy --mode server.")
@click.pass_obj
def pipeline_install(state: State, index):
    """(Re)install the embedding pipeline recorded for an index. Example: e5plugin pipeline install --index docs"""
    from .deploy import pipeline_body
    from .search import SemanticSearch

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
    _echo_json(body)


@cli.group("index", cls=E5Group)
def index_group():
    """Indices: create."""


@index_group.command("create")
@click.option("--model", "-m", required=True)
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
    from .deploy import DeployRequest
    from .deploy import deploy as run_deploy
    from .prefixes import Mode

    spec = _resolve_model(model, None, None)
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


# ---- dev-cluster ---------------------------------------------------------------------------------------------------
@cli.group("dev-cluster", cls=E5Group)
def dev_cluster():
    """A local node assembled from Maven Central (no Docker): up, down, status."""


@dev_cluster.command("up")
@click.option(
    "--engine", "engine", type=click.Choice(["opensearch", "elasticsearch"]), default="opensearch", show_default=True
)
@click.option("--port", type=int, default=9200, show_default=True)
@click.option("--heap", default="1g", show_default=True)
@click.option("--fresh", is_flag=True, help="Wipe the node's data first.")
def dev_cluster_up(engine, port, heap, fresh):
    """Download (once), assemble and start a node on 127.0.0.1.

    \b
    Example:
      e5plugin dev-cluster up --engine opensearch
      export E5PLUGIN_URL=http://127.0.0.1:9200
    """
    from .devcluster import start_node
    from .devcluster.node import port_is_free

    if not port_is_free(port):
        raise errors.ConfigurationError(f"Port {port} is in use: pass --port, or stop what runs there.")
    node = start_node(
        engine, name=f"dev-{engine}", heap=heap, fresh=fresh, http_port=port, progress=lambda m: click.echo(m, err=True)
    )
    if engine == "opensearch":
        from .engines import connect

        connect(ConnectionConfig(urls=[node.url]), engine="opensearch").apply_one_node_ml_settings()
    click.echo(f"{engine} {node.version} running at {node.url} (pid {node.pid}, data {node.data_dir})")
    click.echo(f"export E5PLUGIN_URL={node.url}")


@dev_cluster.command("fetch")
@click.option("--engine", "engine", type=click.Choice(["opensearch", "elasticsearch", "all"]), default="all")
def dev_cluster_fetch(engine):
    """Download and assemble node distributions into the cache without starting them (CI, air-gap prep).

    
    Example:
      e5plugin dev-cluster fetch --engine all
    """
    from .devcluster import ENGINES, default_cache_dir, engine_module

    for name in ENGINES if engine == "all" else (engine,):
        module = engine_module(name)
        home = module.assemble(default_cache_dir(), module.DEFAULT_VERSION, progress=lambda m: click.echo(m, err=True))
        click.echo(f"{name} {module.DEFAULT_VERSION}: {home}")


@dev_cluster.command("down")
@click.option("--engine", "engine", type=click.Choice(["opensearch", "elasticsearch", "all"]), default="all")
def dev_cluster_down(engine):
    """Stop the dev node(s). Example: e5plugin dev-cluster down"""
    from .devcluster import ENGINES, default_cache_dir, node_workdir
    from .devcluster.node import Node

    for name in ENGINES if engine == "all" else (engine,):
        node = Node.load_state(node_workdir(default_cache_dir(), f"dev-{name}"))
        if node and node.is_alive():
            node.stop()
            click.echo(f"stopped {name} ({node.url})")


@dev_cluster.command("status")
def dev_cluster_status():
    """Which dev nodes run. Example: e5plugin dev-cluster status"""
    from .devcluster import ENGINES, default_cache_dir, node_workdir
    from .devcluster.node import Node

    for name in ENGINES:
        node = Node.load_state(node_workdir(default_cache_dir(), f"dev-{name}"))
        running = bool(node and node.is_alive())
        click.echo(f"{name}: " + (f"running at {node.url} (pid {node.pid})" if running else "not running"))


# ---- demo ---------------------------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--model",
    "-m",
    default="intfloat/e5-small-v2",
    show_default=True,
    help="Hub id or local directory; falls back to an offline model when the hub cannot be reached.",
)
@click.option("--port", type=int, default=9200, show_default=True)
def demo(model, port):
    """One command: local OpenSearch node, a model deployed into it, sample FAQ documents, a few searches.

    \b
    Example:
      e5plugin demo
    """
    from .demo import run_demo

    run_demo(model=model, port=port, echo=click.echo)


# The use-case commands (faq, dedup, calibrate, finetune, ...) live in their own modules.
from . import cli_tasks, cli_tasks2  # noqa: E402

cli_tasks.register(cli)
cli_tasks2.register(cli)


def main() -> None:
    cli(prog_name="e5plugin")


if __name__ == "__main__":
    main()
