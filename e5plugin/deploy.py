"""`deploy`: model + ingest pipeline + index in one idempotent call (or a printed plan with ``dry_run``)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .bodies import PlannedRequest
from .engines.base import Backend, DeployedModel, DeploymentOptions, describe_model_users
from .errors import ConfigurationError, ConflictError, DimensionMismatchError
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
    #: deploy another model or mode onto an index that holds documents (its old vectors stay until reindexed)
    allow_model_change: bool = False

    def names(self, spec: ModelSpec) -> tuple[str, str]:
        model_id = self.model_id or f"e5plugin-{spec.short_name}"
        pipeline = self.pipeline or f"e5plugin-{self.index}"
        return validate_name("model", model_id), validate_name("pipeline", pipeline)


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
    """Set up everything for semantic search on ``request.index``. Re-running changes nothing.

    Everything that can be checked is checked before the first write (names, options, an existing index's vector
    field, dimensions, model and mode, the users of a model ``--replace`` would delete), so a refused deploy leaves
    the live index, its pipeline and ``_meta`` as they were. A model or mode change on an index that holds
    documents is refused unless ``request.allow_model_change`` (``rollout`` builds a new index instead)."""
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
    if mode is Mode.SERVER:
        backend.require_ml()
        if chunking:  # refuse before importing anything where the engine cannot embed nested passages
            _pipeline_body(backend, DRY_RUN_MODEL_ID, plan, request, chunking)
    existing = _check_existing_index(backend, request, result.setup, dims=spec.dims)
    model_id = None
    if mode is Mode.SERVER:
        if dry_run:
            model_id = DRY_RUN_MODEL_ID
            result.planned += backend.planned_model_requests(
                spec, plan, model_id=model_name, options=request.deployment
            )
        else:
            with tempfile.TemporaryDirectory(prefix="e5plugin-") as tmp:
                result.model = backend.import_model(
                    spec,
                    plan,
                    model_id=model_name,
                    work_dir=Path(tmp),
                    options=request.deployment,
                    replace=request.replace_model,
                    users_allowed=(pipeline_name, request.index),
                )
            model_id = result.model.model_id
            if existing and existing.similarity == "dot_product" and result.model.normalized is False:
                raise ConflictError(
                    f"Index {request.index!r} maps {result.setup.vector_field!r} with dot_product, which needs unit "
                    f"vectors, but the deployed model {model_id!r} does not normalize its output: every document "
                    "would be rejected. Use a new index (`e5plugin rollout` maps it with cosine and switches an "
                    "alias); the index and its pipeline were left as they were."
                )
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
        normalized=result.model.normalized if result.model else None,
    )
    for name, body in backend.search_pipelines().items():  # e.g. OpenSearch's hybrid RRF: made here, not per query
        result.planned.append(PlannedRequest("PUT", f"/_search/pipeline/{name}", body))
        if not dry_run:
            backend.put_search_pipeline(name, body)
    if existing is None:
        result.planned.append(PlannedRequest("PUT", f"/{request.index}", index_body))
        if not dry_run:
            result.index_action = backend.ensure_index(
                request.index, index_body, vector_field=vector_field, dims=spec.dims
            )
        return result
    # An existing index follows the deployment (a re-registered model has a new id; an allowed mode change moves
    # its default pipeline): the query helper reads _meta and ingest goes through index.default_pipeline, so both
    # are brought up to date together (other _meta keys, e.g. a calibration, are kept).
    updates = _index_updates(backend, request.index, existing, result.setup)
    result.planned += updates
    if dry_run:
        return result
    result.index_action = "exists"
    for update in updates:
        if update.path.endswith("/_settings"):
            backend.put_index_settings(request.index, update.body["index"])  # type: ignore[index]
        else:
            backend.update_index_meta(request.index, result.setup.to_meta())
        result.index_action = "updated"
    return result


#: The index settings that route documents through an ingest pipeline.
_PIPELINES = ("default_pipeline", "final_pipeline")


@dataclass
class _ExistingIndex:
    meta: dict  # its _meta.e5plugin (empty: not made by e5plugin)
    settings: dict  # its explicitly set pipeline settings
    similarity: str | None = None  # Elasticsearch dense_vector similarity (dot_product needs unit vectors)


def _check_existing_index(backend: Backend, request: DeployRequest, setup: IndexSetup, *, dims: int):
    """Refuse, before anything is written, what an existing ``request.index`` cannot take: no or another-sized
    vector field, or (when it holds documents) vectors of another model or mode. None: no such index."""
    index = request.index
    if not backend.index_exists(index):
        return None
    mapping = backend.get_mapping(index)
    existing = backend.vector_dims(mapping, setup.vector_field)
    if existing is None:
        raise ConflictError(
            f"Index {index!r} exists without a vector field {setup.vector_field!r}; choose another index name "
            "or --vector-field, or backfill it with `e5plugin reindex`."
        )
    if existing != dims:
        raise DimensionMismatchError(
            f"Index {index!r} has {existing}-dim vectors in {setup.vector_field!r} but the model makes {dims}; "
            "use a new index for this model (`e5plugin rollout` builds one and switches an alias), or the model "
            "the index was built with."
        )
    meta = mapping.get("_meta", {}).get(backend.bodies_meta_key, {}) or {}
    changes = embedding_changes(meta, setup)
    if changes and not request.allow_model_change:
        documents = backend.count(index)
        if documents:
            raise ConflictError(
                f"Index {index!r} holds {documents} documents embedded {_describe(meta)}; this deploy would change "
                f"{' and '.join(changes)}, so queries and stored vectors would come from different models. Use "
                "`e5plugin rollout --alias <alias> --model ...` (a new index, filled and checked, then the alias "
                "switched), or deploy into a new index; --allow-model-change keeps the old vectors on purpose "
                "(then re-embed them with `e5plugin reindex`)."
            )
    node: dict = mapping
    for part in setup.vector_field.split("."):
        node = node.get("properties", {}).get(part, {})
    return _ExistingIndex(meta, backend.index_settings(index, _PIPELINES), node.get("similarity"))


def embedding_changes(meta: dict, setup: IndexSetup) -> list[str]:
    """What differs between how an index's documents were embedded (its ``_meta.e5plugin``) and ``setup``:
    the model (weights, or id where no weights hash is known), its prefixes and pooling, and the mode."""
    if not meta:
        return ["the model (the index was not made by e5plugin)"]
    changes = []
    old = meta.get("model") or {}
    new = setup.spec
    if old.get("weights_sha256") and new.weights_sha256:
        same_model = old["weights_sha256"] == new.weights_sha256
    else:
        same_model = old.get("model_id") == new.model_id
    if not same_model:
        changes.append(f"the model ({old.get('model_id')} to {new.model_id})")
    for key in ("passage_prefix", "query_prefix", "pooling"):
        if same_model and old.get(key) != getattr(new, key):
            changes.append(f"the model's {key.replace('_', ' ')} ({old.get(key)!r} to {getattr(new, key)!r})")
    if meta.get("mode") != setup.mode.value:
        changes.append(f"the mode ({meta.get('mode')} to {setup.mode.value})")
    return changes


def _describe(meta: dict) -> str:
    if not meta:
        return "by something other than e5plugin"
    return f"with {(meta.get('model') or {}).get('model_id')} ({meta.get('mode')} mode)"


def _index_updates(backend: Backend, index: str, existing: _ExistingIndex, setup: IndexSetup) -> list[PlannedRequest]:
    """The requests that bring an existing index in line with ``setup``: its default pipeline (server mode: the
    deployment's; client mode: none where e5plugin had set one) and its ``_meta.e5plugin``."""
    updates: list[PlannedRequest] = []
    current = existing.settings.get("default_pipeline")
    wanted = setup.pipeline
    ours = current is not None and current == existing.meta.get("pipeline")
    if current != wanted and (wanted is not None or ours):
        updates.append(PlannedRequest("PUT", f"/{index}/_settings", {"index": {"default_pipeline": wanted}}))
    meta = setup.to_meta()
    if any(existing.meta.get(key) != value for key, value in meta.items()):
        updates.append(PlannedRequest("PUT", f"/{index}/_mapping", {"_meta": {backend.bodies_meta_key: meta}}))
    return updates


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


def delete_model(backend: Backend, model: str, *, force: bool = False) -> tuple[list[str], list[str]]:
    """Undeploy and delete the model called ``model`` (the ``--model-id`` it was deployed as, or the cluster's id).
    Returns (the ids deleted, the ingest pipelines that reference it and that no index uses: left in place, named
    so the user can remove them). Nothing by that name: ``([], [])``. Refused with :class:`ConflictError` while an
    index uses it through its default or final pipeline (it would store documents without vectors and its searches
    would fail), unless ``force``."""
    backend.require_ml()
    model_ids = [i for i in backend.model_ids(model) or [model] if backend.model_state(i) != "absent"]
    if not model_ids:
        return [], []
    users = backend.model_users(model_ids)
    in_use = {pipeline: indices for pipeline, indices in users.items() if indices}
    if in_use and not force:
        raise ConflictError(
            f"The model {model!r} is still in use: {describe_model_users(in_use)}. Deploy those indices with another "
            "model (or delete them) first, or pass --force to delete it anyway (their ingest and search then fail)."
        )
    for model_id in model_ids:
        backend.delete_model(model_id)
    return model_ids, sorted(p for p, indices in users.items() if not indices)
