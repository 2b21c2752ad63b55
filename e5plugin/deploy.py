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
    result = DeployResult(setup=IndexSetup(spec, mode, plan, request.text_field, request.vector_field))
    model_id = None
    if mode is Mode.SERVER:
        backend.require_ml()
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
        pipeline_body = backend.bodies.pipeline_body(
            model_id, plan, text_field=request.text_field, vector_field=request.vector_field
        )
        result.planned.append(PlannedRequest("PUT", f"/_ingest/pipeline/{pipeline_name}", pipeline_body))
        if not dry_run:
            result.pipeline_action = backend.put_pipeline(pipeline_name, pipeline_body)
        result.setup.model_id = model_id
        result.setup.pipeline = pipeline_name
    index_body = backend.index_body(
        spec,
        text_field=request.text_field,
        vector_field=request.vector_field,
        index_options=request.index_options,
        pipeline=result.setup.pipeline,
        meta=result.setup.to_meta(),
        replicas=request.replicas,
    )
    result.planned.append(PlannedRequest("PUT", f"/{request.index}", index_body))
    if not dry_run:
        result.index_action = backend.ensure_index(
            request.index, index_body, vector_field=request.vector_field, dims=spec.dims
        )
    return result
