"""Elasticsearch backend (8.x/9.x): elasticsearch-py client, trained models through eland."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import elasticsearch
from elasticsearch import helpers

from .. import errors
from ..bodies import elasticsearch as bodies
from ..config import ConnectionConfig
from ..models import ModelSpec
from ..packaging import eland_import
from ..prefixes import PrefixPlan
from .base import Backend, Capabilities, DeployedModel, DeploymentOptions, Hit, parse_version

HYBRID_LICENCES = ("enterprise", "trial")
#: the text of the test prediction ``deploy`` asks a model for before it calls the model ready
READINESS_TEXT = "e5plugin readiness check"
ML_LICENCES = ("platinum", "enterprise", "trial")


class ElasticsearchBackend(Backend):
    engine = "elasticsearch"
    bodies = bodies
    index_options = bodies.INDEX_OPTIONS

    @classmethod
    def connect(cls, config: ConnectionConfig) -> ElasticsearchBackend:
        kwargs = config.client_kwargs()
        if config.cloud_id:
            kwargs["cloud_id"] = config.cloud_id
        else:
            kwargs["hosts"] = config.urls
        if config.api_key:
            kwargs["api_key"] = config.api_key
        elif config.username:
            kwargs["basic_auth"] = (config.username, config.password or "")
        return cls(elasticsearch.Elasticsearch(**kwargs), config)

    def _detect_capabilities(self) -> Capabilities:
        nodes = self.client.nodes.info(node_id="_local", metric="plugins")
        node = next(iter(nodes["nodes"].values()))
        modules = sorted({m["name"] for m in node.get("modules", [])} | {p["name"] for p in node.get("plugins", [])})
        version = parse_version(node["version"])
        licence = None
        with contextlib.suppress(elasticsearch.ApiError):
            licence = self.client.license.get()["license"]["type"]
        has_ml_module = "x-pack-ml" in modules
        ml = has_ml_module and licence in ML_LICENCES
        if not has_ml_module:
            reason = (
                "This Elasticsearch node has no machine-learning module (the integ-test or OSS distribution); "
                "use --mode client, or the default distribution with a trial/platinum licence."
            )
        elif not ml:
            reason = (
                f"Elasticsearch ML needs a platinum, enterprise or trial licence (this cluster: {licence}); "
                "use --mode client, or start a trial: POST _license/start_trial?acknowledge=true."
            )
        else:
            reason = ""
        return Capabilities(
            engine=self.engine,
            version=version,
            ml=ml,
            ml_reason=reason,
            cluster_prefixes=ml and version >= (8, 12, 0),
            native_hybrid="rank-rrf" in modules and licence in HYBRID_LICENCES,
            ingest_scripts={"lang-painless", "ingest-common"} <= set(modules),
            plugins=modules,
            licence=licence,
        )

    def _map_error(self, exc: Exception) -> errors.E5PluginError | None:
        hosts = ", ".join(self.config.urls) if not self.config.cloud_id else "the Elastic Cloud deployment"
        if isinstance(exc, elasticsearch.AuthenticationException):
            return errors.AuthenticationError(
                f"Elasticsearch at {hosts} refused the credentials (HTTP 401): "
                "check --username/--password or --api-key."
            )
        if isinstance(exc, elasticsearch.AuthorizationException):
            return errors.PermissionDeniedError(
                "Elasticsearch denied the request (HTTP 403): " + self._scrub(_reason(exc))
            )
        if isinstance(exc, elasticsearch.ConnectionError | elasticsearch.ConnectionTimeout):
            return errors.ClusterUnreachableError(
                f"Cannot reach Elasticsearch at {hosts}: {self._scrub(str(exc))}. Check the URL and that it runs."
            )
        if isinstance(exc, elasticsearch.ApiError) and exc.meta.status == 402:
            return errors.MissingCapabilityError("The cluster's licence does not allow this: " + _reason(exc))
        return None

    def _with_vectors(self) -> dict:
        return {"source_exclude_vectors": False} if self.capabilities.version >= (9, 1, 0) else {}

    def vector_source(self, vector_field: str) -> dict | list:
        """Elasticsearch 9.1+ leaves vectors out of ``_source`` unless asked (``exclude_vectors: false``)."""
        if self.capabilities.version >= (9, 1, 0):
            return {"includes": [vector_field], "exclude_vectors": False}
        return [vector_field]

    def vector_dims(self, mapping: dict, vector_field: str) -> int | None:
        node = self.field_mapping(mapping, vector_field)
        return node.get("dims") if node.get("type") == "dense_vector" else None

    def index_option(self, mapping: dict, vector_field: str) -> str | None:
        node = self.field_mapping(mapping, vector_field)
        if node.get("type") != "dense_vector":
            return None
        return node.get("index_options", {}).get("type")

    def _helpers(self) -> ModuleType:
        return helpers

    def knn_body(
        self,
        *,
        vector_field: str,
        k: int,
        num_candidates: int,
        vector: list[float] | None = None,
        model_id: str | None = None,
        text: str | None = None,
        filters: list[dict] | None = None,
        source: list[str] | bool | None = None,
        exact: bool = False,
    ) -> dict:
        if exact and vector is not None:
            return bodies.exact_search_body(
                vector_field=vector_field, vector=vector, k=k, filters=filters, source=source
            )
        clause = bodies.knn_clause(
            vector_field=vector_field,
            k=k,
            num_candidates=num_candidates,
            vector=vector,
            model_id=model_id,
            text=text,
            filter=filters,
        )
        return bodies.knn_search_body(clause, source=source)

    def nested_knn_body(
        self,
        *,
        path: str,
        vector_field: str,
        k: int,
        num_candidates: int,
        vector: list[float] | None = None,
        model_id: str | None = None,
        text: str | None = None,
        filters: list[dict] | None = None,
        source: list[str] | bool | None = None,
    ) -> dict:
        clause = bodies.knn_clause(
            vector_field=vector_field,
            k=k,
            num_candidates=num_candidates,
            vector=vector,
            model_id=model_id,
            text=text,
            filter=filters,
        )
        body = bodies.knn_search_body(bodies.nested_knn_clause(clause, path=path))
        body["_source"] = source if source is not None else {"excludes": [path]}
        return body

    def bm25_body(
        self, text: str, *, text_field: str, size: int, filters: list[dict] | None, source: list[str] | bool | None
    ) -> dict:
        return bodies.bm25_search_body(text, text_field=text_field, size=size, filter=filters, source=source)

    def native_hybrid_search(self, index: str, **kwargs: Any) -> list[Hit] | None:
        if not self.capabilities.native_hybrid:
            return None
        knn = bodies.knn_clause(
            vector_field=kwargs["vector_field"],
            k=kwargs["window"],
            num_candidates=kwargs["num_candidates"],
            vector=kwargs.get("vector"),
            model_id=kwargs.get("model_id"),
            text=kwargs.get("text_for_model"),
            filter=kwargs.get("filters"),
        )
        body = bodies.rrf_search_body(
            kwargs["text"],
            knn,
            text_field=kwargs["text_field"],
            size=kwargs["k"],
            filter=kwargs.get("filters"),
            rank_window_size=kwargs["window"],
            source=kwargs.get("source"),
        )
        return self.hits(self.search(index, body))

    # ---- trained models (eland) -----------------------------------------------------------------------------
    def get_model(self, model_id: str) -> dict | None:
        with self.errors():
            try:
                found = self.client.ml.get_trained_models(model_id=model_id)
            except elasticsearch.NotFoundError:
                return None
        configs = found.get("trained_model_configs", [])
        return configs[0] if configs else None

    def model_state(self, model_id: str) -> str:
        with self.errors():
            try:
                stats = self.client.ml.get_trained_models_stats(model_id=model_id)
            except elasticsearch.NotFoundError:
                return "absent"
        items = stats.get("trained_model_stats", [])
        if not items:
            return "absent"
        return items[0].get("deployment_stats", {}).get("state", "not deployed")

    def import_model(
        self,
        spec: ModelSpec,
        plan: PrefixPlan,
        *,
        model_id: str,
        work_dir: Path,
        options: DeploymentOptions | None = None,
        replace: bool = False,
        users_allowed: tuple[str | None, str | None] = (None, None),
    ) -> DeployedModel:
        """Import through eland and start the deployment. Same source: reused. Other source: refused unless
        ``replace``."""
        eland_import.check_supported(spec)  # before any request: a model eland cannot import changes nothing
        if options is not None and (options.model_format or "torchscript").lower() != "torchscript":
            raise errors.ConfigurationError(
                f"--model-format {options.model_format} is an OpenSearch ml-commons choice; Elasticsearch imports "
                "TorchScript through eland (omit --model-format)."
            )
        self.require_ml()
        eland_import.check_eland_matches(self.capabilities.version[0])
        wanted = eland_import.provenance(spec)
        existing = self.get_model(model_id)
        action = "created"
        if existing is not None:
            recorded = (existing.get("metadata") or {}).get("e5plugin", {})
            if (
                recorded.get("weights_sha256") == wanted["weights_sha256"]
                and recorded.get("source") == wanted["source"]
            ):
                action = "reused"
            elif not replace:
                raise errors.ConflictError(
                    f"Trained model {model_id!r} exists with another source ({recorded.get('source')}, sha256 "
                    f"{recorded.get('weights_sha256')}); pass --replace to overwrite it, or choose another --model-id."
                )
            else:
                self.refuse_replacing_used(model_id, [model_id], users_allowed)
                self.delete_model(model_id)
                action = "replaced"
        if action != "reused":
            traced = eland_import.trace(spec, plan, self.capabilities.version, work_dir)
            with self.errors():
                eland_import.upload(self.client, model_id, traced)
            normalized = traced.normalized
        else:
            normalized = ((existing or {}).get("metadata") or {}).get("e5plugin", {}).get("output_normalized")
        options = options or DeploymentOptions()
        self.start_deployment(model_id, options)
        vector = self.prove_model_answers(model_id, spec.dims, options.timeout_seconds)
        if normalized is None:  # imported before e5plugin measured the traced output: the cluster's answer tells
            normalized = eland_import.is_unit_length(vector)
        model = DeployedModel(model_id, self.model_state(model_id), wanted, action)
        model.answered_dims, model.normalized = len(vector), normalized
        return model

    def prove_model_answers(self, model_id: str, dims: int, timeout: float) -> list[float]:
        """A real prediction (``_infer``) before the model is called ready: a started deployment that cannot
        answer yet (allocations still loading) is waited for until ``timeout``; a vector of another size than
        the index expects is refused."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.errors():
                    client = self.client.options(request_timeout=max(self.config.request_timeout, 90.0))
                    answer = client.ml.infer_trained_model(
                        model_id=model_id, docs=[{"text_field": READINESS_TEXT}], timeout="60s"
                    )
                vector = list((answer.get("inference_results") or [{}])[0].get("predicted_value") or [])
                break
            except (elasticsearch.ApiError, errors.RequestRejectedError) as exc:
                status = exc.meta.status if isinstance(exc, elasticsearch.ApiError) else 400
                if status not in (400, 404, 408, 409, 429, 500, 503) or time.monotonic() > deadline:
                    raise errors.ModelNotDeployedError(
                        f"Model {model_id!r} is deployed but does not answer a prediction ({_reason(exc)}); "
                        "`e5plugin doctor` shows its state. Re-run deploy once it is allocated (a longer "
                        "--deploy-timeout waits longer)."
                    ) from exc
            time.sleep(1.0)
        return self._expect_dims(model_id, vector, dims)

    def index_body(self, spec: ModelSpec, *, normalized: bool | None = None, **kwargs: Any) -> dict:
        """The index for ``spec``; ``dot_product`` only where the deployed model's vectors are unit length (an
        eland-traced model normalizes only when the checkpoint has a Normalize module), else ``cosine``."""
        similarity = None if normalized is None else ("dot_product" if normalized else "cosine")
        return bodies.index_body(spec, similarity=similarity, **kwargs)

    def model_ids(self, name: str) -> list[str]:
        return [name] if self.get_model(name) is not None else []

    def _pipeline_bulk_client(self, kwargs: dict[str, Any], timeout: float) -> Any:
        return self.client.options(request_timeout=timeout, retry_on_timeout=False)

    def planned_model_requests(
        self, spec: ModelSpec, plan: PrefixPlan, *, model_id: str, options: DeploymentOptions | None = None
    ) -> list:
        from ..bodies import PlannedRequest

        eland_import.check_supported(spec)  # --dry-run refuses what the real run would refuse
        config: dict = {
            "description": eland_import.description(spec),
            "model_type": "pytorch",
            "inference_config": {"text_embedding": {"tokenization": "(built by eland from the tokenizer)"}},
            "input": {"field_names": ["text_field"]},
            "metadata": {"e5plugin": eland_import.provenance(spec)},
        }
        if plan.cluster_adds:
            config["prefix_strings"] = {"ingest": plan.passage_prefix, "search": plan.query_prefix}
        options = options or DeploymentOptions()
        return [
            PlannedRequest("PUT", f"/_ml/trained_models/{model_id}", config, "unless the same source is there"),
            PlannedRequest("PUT", f"/_ml/trained_models/{model_id}/vocabulary", None, "vocabulary from the tokenizer"),
            PlannedRequest(
                "PUT", f"/_ml/trained_models/{model_id}/definition/<part>", None, "TorchScript, 1 MiB parts"
            ),
            PlannedRequest(
                "POST",
                f"/_ml/trained_models/{model_id}/deployment/_start?number_of_allocations="
                f"{options.number_of_allocations}&threads_per_allocation={options.threads_per_allocation}"
                f"&wait_for={options.wait_for}",
            ),
        ]

    def start_deployment(self, model_id: str, options: DeploymentOptions) -> None:
        with self.errors():
            try:
                # the request waits up to `timeout` in the cluster: the client must wait longer than that
                client = self.client.options(request_timeout=options.timeout_seconds + 30.0, retry_on_timeout=False)
                client.ml.start_trained_model_deployment(
                    model_id=model_id,
                    number_of_allocations=options.number_of_allocations,
                    threads_per_allocation=options.threads_per_allocation,
                    priority=options.priority,
                    queue_capacity=options.queue_capacity,
                    wait_for=options.wait_for,
                    timeout=options.timeout,
                )
            except elasticsearch.ApiError as exc:
                if exc.meta.status == 409:  # already started
                    return
                if exc.meta.status == 408:
                    raise errors.ModelNotDeployedError(
                        f"Deployment of {model_id!r} did not reach {options.wait_for!r} within {options.timeout}; "
                        "check ML node memory (GET _ml/trained_models/_stats), then re-run deploy with a longer "
                        "--deploy-timeout."
                    ) from exc
                raise

    def delete_model(self, model_id: str) -> None:
        with self.errors():
            with contextlib.suppress(elasticsearch.ApiError):
                self.client.ml.stop_trained_model_deployment(model_id=model_id, force=True)
            with contextlib.suppress(elasticsearch.NotFoundError):
                self.client.ml.delete_trained_model(model_id=model_id, force=True)

    def list_models(self) -> list[DeployedModel]:
        with self.errors():
            found = self.client.ml.get_trained_models(model_id="*", size=1000)
        return [
            DeployedModel(c["model_id"], self.model_state(c["model_id"]), (c.get("metadata") or {}).get("e5plugin", {}))
            for c in found.get("trained_model_configs", [])
            if (c.get("metadata") or {}).get("e5plugin")
        ]


def _reason(exc: Exception) -> str:
    info = getattr(exc, "body", None) or {}
    if isinstance(info, dict):
        error = info.get("error", {})
        if isinstance(error, dict):
            return str(error.get("reason") or error.get("type") or exc)
    return str(exc)
