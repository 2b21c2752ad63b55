"""`deploy`: model + ingest pipeline + index in one idempotent call (or a printed plan with ``dry_run``)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .engines.base import Backend, DeployedModel, DeploymentOptions
from .errors import ConfigurationError
from .models import ModelSpec
from .prefixes import Mode
from .search import IndexSetup
from .tasks.chunking import Chunker, ChunkingSettings

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
DRY_RUN_MODEL_ID = "<model id assigned at deploy time>"


def validate_name(kind: str, name: str) -> str:
    """Index, pipeline and model names: lowercase letters, digits, ``-``, ``_``, ``.`` (no paths, no wildcards)."""
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ConfigurationError(
            f"Invalid {kind} name {name!r}: use lowercase letters, digits, '-', '_' or '.', starting with a letter "
            "or digit, at most 128 characters."
        )
    return name


@dataclass
class DeployRequest:
    index: str
    text_field: str = "text"
    vector_field: str = "embedding"
    mode: Mode = Mode.CLIENT
    index_options: str = "hnsw"
    model_id: str | None = None  # the name in the cluster; default e5plugin-<model>
    pipeline: str | None = None  # default e5plugin-<index>
    replace_model: bool = False
    replicas: int | None = None
    deployment: DeploymentOptions = field(default_factory=DeploymentOptions)
    #: split long documents into passages (nested vectors); ingest and search then do it for this index
    chunking: ChunkingSettings | None = None
    #: fields mapped as ``keyword`` for exact filters (``lang``: the document's language code)
    keyword_fields: tuple[str, ...] = ("lang",)

    def names(self, spec: ModelSpec) -> tuple[str, str]:
        model_id = self.model_id or f"e5plugin-{spec.short_name}"
        pipeline = self.pipeline or f"e5plugin-{self.index}"
        return validate_name("model", model_id), validate_name("pipeline", pipeline)


@dataclass
class PlannedRequest:
    method: str
    path: str
    body: dict | None = None
    note: str = ""


@dataclass
class DeployResult:
    setup: IndexSetup
    model: DeployedModel | None = None
    pipeline_action: str | None = None
    index_action: str = ""
    planned: list[PlannedRequest] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        actions = [self.pipeline_action, self.index_action, self.model.action if self.model else None]
        return any(a in ("created", "updated", "replaced") for a in actions)


def deploy(backend: Backend, spec: ModelSpec, request: DeployRequest, *, dry_run: bool = False) -> DeployResult:
    """Set up everything for semantic search on ``request.index``. Re-running changes nothing."""
    validate_name("index", request.index)
    if request.index_options not in backend.index_options:
        raise ConfigurationError(
            f"--index-options {request.index_options!r} is not offered on {backend.engine}; "
            f"choose one of: {', '.join(backend.index_options)}."
        )
    mode = request.mode
    plan = backend.prefix_plan(spec, mode)
    model_name, pipeline_name = request.names(spec)
    chunking = _chunking(spec, plan, request.chunking)
    vector_field = chunking.vector_path(request.vector_field) if chunking else request.vector_field
    result = DeployResult(setup=IndexSetup(spec, mode, plan, request.text_field, vector_field, chunking=chunking))
    model_id = None
    if mode is Mode.SERVER:
        backend.require_ml()
        if chunking:  # refuse before importing anything where the engine cannot embed nested passages
            _pipeline_body(backend, DRY_RUN_MODEL_ID, plan, request, chunking)
        if dry_run:
            model_id = DRY_RUN_MODEL_ID
            result.planned += backend.planned_model_requests(spec, plan, model_id=model_name)
        else:
            with tempfile.TemporaryDirectory(prefix="e5plugin-") as tmp:
                result.model = backend.import_model(
                    spec,
                    plan,
                    model_id=model_name,
                    work_dir=Path(tmp),
                    options=request.deployment,
                    replace=request.replace_model,
                )
            model_id = result.model.model_id
        pipeline_body = _pipeline_body(backend, model_id, plan, request, chunking)
        result.planned.append(PlannedRequest("PUT", f"/_ingest/pipeline/{pipeline_name}", pipeline_body))
        if not dry_run:
            result.pipeline_action = backend.put_pipeline(pipeline_name, pipeline_body)
        result.setup.model_id = model_id
        result.setup.pipeline = pipeline_name
    index_body = backend.index_body(
        spec,
        text_field=request.text_field,
        vector_field=vector_field,
        index_options=request.index_options,
        pipeline=result.setup.pipeline,
        meta=result.setup.to_meta(),
        replicas=request.replicas,
        nested=chunking.field if chunking else None,
        keyword_fields=request.keyword_fields,
    )
    result.planned.append(PlannedRequest("PUT", f"/{request.index}", index_body))
    if not dry_run:
        result.index_action = backend.ensure_index(request.index, index_body, vector_field=vector_field, dims=spec.dims)
        # An existing index follows the deployment (a re-registered model has a new id): the query helper reads
        # the index's _meta, so it is brought up to date (other keys, e.g. a calibration, are kept).
        wanted = result.setup.to_meta()
        current = backend.index_meta(request.index) if result.index_action == "exists" else wanted
        if any(current.get(key) != value for key, value in wanted.items()):
            backend.update_index_meta(request.index, wanted)
            result.index_action = "updated"
    return result


def _chunking(spec: ModelSpec, plan, settings: ChunkingSettings | None) -> ChunkingSettings | None:
    """The chunk size checked against what the model reads after its passage prefix (None: the most that fits)."""
    if settings is None:
        return None
    return Chunker(spec, settings, plan.passage_prefix).settings


def _pipeline_body(backend: Backend, model_id: str, plan, request: DeployRequest, chunking) -> dict:
    return pipeline_body(
        backend,
        model_id,
        plan,
        text_field=request.text_field,
        vector_field=request.vector_field,
        passages_field=chunking.field if chunking else None,
    )


def pipeline_body(
    backend: Backend,
    model_id: str,
    plan,
    *,
    text_field: str,
    vector_field: str,
    passages_field: str | None = None,
) -> dict:
    """The ingest pipeline of a server-mode index (``passages_field``: a chunked index embeds every passage)."""
    if passages_field:
        return backend.chunked_pipeline_body(
            model_id, plan, text_field=text_field, passages_field=passages_field, vector_field=vector_field
        )
    return backend.bodies.pipeline_body(model_id, plan, text_field=text_field, vector_field=vector_field)
