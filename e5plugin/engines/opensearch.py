"""OpenSearch backend (2.x/3.x): opensearch-py client, k-NN, ml-commons models, neural-search."""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import opensearchpy
from opensearchpy import helpers

from .. import errors
from ..bodies import opensearch as bodies
from ..config import ConnectionConfig
from ..models import ModelSpec, ensure_local
from ..packaging import mlcommons, provenance
from ..prefixes import PrefixPlan
from .base import Backend, Capabilities, DeployedModel, DeploymentOptions, Hit, parse_version

HYBRID_PIPELINE = "e5plugin-hybrid-rrf"
#: the text of the test prediction ``deploy`` asks a model for before it calls the model ready
READINESS_TEXT = "e5plugin readiness check"
#: neural-search reads query_prefix / passage_prefix from the ml-commons model config from this version on.
PREFIX_SUPPORT_SINCE = (3, 5, 0)
RRF_SINCE = (2, 19, 0)


class OpenSearchBackend(Backend):
    engine = "opensearch"
    bodies = bodies
    index_options = bodies.INDEX_OPTIONS

    @classmethod
    def connect(cls, config: ConnectionConfig) -> OpenSearchBackend:
        if config.cloud_id:
            raise errors.ConfigurationError("--cloud-id is an Elastic Cloud setting; for OpenSearch pass --url.")
        if config.api_key:
            raise errors.ConfigurationError(
                "OpenSearch has no API keys in the Elasticsearch sense; use --username/--password."
            )
        kwargs = config.client_kwargs()
        kwargs["hosts"] = config.urls
        if config.username:
            kwargs["http_auth"] = (config.username, config.password or "")
        kwargs["timeout"] = kwargs.pop("request_timeout")
        return cls(opensearchpy.OpenSearch(**kwargs), config)

    def _detect_capabilities(self) -> Capabilities:
        info = self.client.info()
        version = parse_version(info["version"]["number"])
        nodes = self.client.nodes.info(node_id="_local", metric="plugins")
        node = next(iter(nodes["nodes"].values()))
        plugins = {p["name"]: p.get("version", "") for p in node.get("plugins", [])}
        modules = {m["name"] for m in node.get("modules", [])}
        has_ml = "opensearch-ml" in plugins
        has_neural = "opensearch-neural-search" in plugins
        neural_version = parse_version(plugins.get("opensearch-neural-search", "0"))
        reason = ""
        if not has_ml:
            reason = (
                "This OpenSearch cluster has no ml-commons plugin (opensearch-ml); install it or use --mode client."
            )
        elif not has_neural:
            reason = (
                "This OpenSearch cluster has ml-commons but no neural-search plugin (needed for the text_embedding "
                "processor and neural query); install opensearch-neural-search or use --mode client."
            )
        return Capabilities(
            engine=self.engine,
            version=version,
            ml=has_ml and has_neural,
            ml_reason=reason,
            cluster_prefixes=has_ml and has_neural and neural_version >= PREFIX_SUPPORT_SINCE,
            native_hybrid=has_neural and version >= RRF_SINCE,
            ingest_scripts={"lang-painless", "ingest-common"} <= modules,
            plugins=sorted(set(plugins) | modules),
        )

    def _map_error(self, exc: Exception) -> errors.E5PluginError | None:
        hosts = ", ".join(self.config.urls)
        if isinstance(exc, opensearchpy.AuthenticationException):
            return errors.AuthenticationError(
                f"OpenSearch at {hosts} refused the credentials (HTTP 401): check --username/--password."
            )
        if isinstance(exc, opensearchpy.AuthorizationException):
            return errors.PermissionDeniedError("OpenSearch denied the request (HTTP 403): " + self._scrub(str(exc)))
        if isinstance(exc, opensearchpy.ConnectionError | opensearchpy.ConnectionTimeout):
            return errors.ClusterUnreachableError(
                f"Cannot reach OpenSearch at {hosts}: {self._scrub(str(exc))}. Check the URL and that it runs."
            )
        return None

    def vector_dims(self, mapping: dict, vector_field: str) -> int | None:
        node = self.field_mapping(mapping, vector_field)
        return node.get("dimension") if node.get("type") == "knn_vector" else None

    def index_option(self, mapping: dict, vector_field: str) -> str | None:
        node = self.field_mapping(mapping, vector_field)
        if node.get("type") != "knn_vector":
            return None
        return "hnsw_sq" if bodies.sq_encoder(node) is not None else "hnsw"

    def _helpers(self) -> ModuleType:
        return helpers

    @staticmethod
    def _filter(filters: list[dict] | None) -> dict | None:
        if not filters:
            return None
        return filters[0] if len(filters) == 1 else {"bool": {"filter": filters}}

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
            query = bodies.exact_query(vector_field=vector_field, vector=vector, filter=self._filter(filters))
        else:
            query = bodies.knn_query(
                vector_field=vector_field,
                k=k,
                vector=vector,
                model_id=model_id,
                text=text,
                filter=self._filter(filters),
            )
        return bodies.search_body(query, size=k, source=source)

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
        inner = bodies.knn_query(
            vector_field=vector_field, k=k, vector=vector, model_id=model_id, text=text, filter=self._filter(filters)
        )
        query = bodies.nested_query(inner, path=path, vector_field=vector_field)
        return bodies.search_body(query, size=k, source=source if source is not None else {"excludes": [path]})

    def chunked_pipeline_body(
        self, model_id: str, plan: PrefixPlan, *, text_field: str, passages_field: str, vector_field: str
    ) -> dict:
        return bodies.chunked_pipeline_body(
            model_id, plan, text_field=text_field, passages_field=passages_field, vector_field=vector_field
        )

    def bm25_body(
        self, text: str, *, text_field: str, size: int, filters: list[dict] | None, source: list[str] | bool | None
    ) -> dict:
        query = bodies.bm25_query(text, text_field=text_field, filter=self._filter(filters))
        return bodies.search_body(query, size=size, source=source)

    def native_hybrid_search(self, index: str, **kwargs: Any) -> list[Hit] | None:
        if not self.capabilities.native_hybrid:
            return None
        filters = kwargs.get("filters")
        knn = bodies.knn_query(
            vector_field=kwargs["vector_field"],
            k=kwargs["window"],
            vector=kwargs.get("vector"),
            model_id=kwargs.get("model_id"),
            text=kwargs.get("text_for_model"),
            filter=self._filter(filters),
        )
        bm25 = bodies.bm25_query(kwargs["text"], text_field=kwargs["text_field"], filter=self._filter(filters))
        body = bodies.search_body(bodies.hybrid_query(bm25, knn), size=kwargs["k"], source=kwargs.get("source"))
        try:
            return self.hits(self.search(index, body, params={"search_pipeline": HYBRID_PIPELINE}))
        except opensearchpy.RequestError as exc:  # an index deployed before deploy made the pipeline: make it once
            if "pipeline" not in str(exc).lower() or "not defined" not in str(exc).lower():
                raise
        try:
            self.put_search_pipeline(HYBRID_PIPELINE, bodies.hybrid_search_pipeline_body("rrf"))
        except errors.PermissionDeniedError as exc:
            raise errors.PermissionDeniedError(
                f"The hybrid search pipeline {HYBRID_PIPELINE!r} is missing and this user may not create it ({exc}); "
                "run `e5plugin deploy` for the index once with an admin user (it creates the pipeline)."
            ) from exc
        return self.hits(self.search(index, body, params={"search_pipeline": HYBRID_PIPELINE}))

    def search_pipelines(self) -> dict[str, dict]:
        """The search pipelines queries use (created by deploy, never per query): hybrid RRF where offered."""
        if not self.capabilities.native_hybrid:
            return {}
        return {HYBRID_PIPELINE: bodies.hybrid_search_pipeline_body("rrf")}

    def put_search_pipeline(self, name: str, body: dict) -> str:
        """Create or update a search pipeline; ``unchanged`` when it is already as wanted (no cluster-state
        update)."""
        with self.errors():
            try:
                current = self.client.transport.perform_request("GET", f"/_search/pipeline/{name}").get(name)
            except opensearchpy.NotFoundError:
                current = None
            if current is not None and all(current.get(key) == value for key, value in body.items()):
                return "unchanged"
            self.client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body=body)
        return "updated" if current is not None else "created"

    # ---- ml-commons models ------------------------------------------------------------------------------------
    ML = "/_plugins/_ml"
    DEPLOYED = ("DEPLOYED", "PARTIALLY_DEPLOYED")

    def _ml(self, method: str, path: str, body: dict | None = None, **params: object) -> dict:
        with self.errors(), warnings.catch_warnings():
            # ml-commons' own search APIs read its system indices; the client warns about that on every call
            warnings.filterwarnings("ignore", message=".*system indices.*")
            return self.client.transport.perform_request(method, self.ML + path, body=body, params=params or None)

    def apply_one_node_ml_settings(self) -> bool:
        """Let ml-commons run models on a one-node cluster (data node = ML node, relaxed memory/disk guards).

        A cluster that has dedicated ``ml`` nodes keeps its ``only_run_on_ml_node`` (default true): models stay on
        the ML nodes instead of being forced onto data nodes."""
        from ..devcluster.opensearch import ML_ONE_NODE_SETTINGS

        settings = dict(ML_ONE_NODE_SETTINGS)
        if self.ml_nodes():
            settings.pop("plugins.ml_commons.only_run_on_ml_node")
        with self.errors():
            self.client.cluster.put_settings(body={"persistent": settings})
        return True

    def cluster_nodes(self) -> dict[str, dict]:
        """Node id -> ``{"name", "roles"}`` for every node of the cluster."""
        with self.errors():
            found = self.client.nodes.info(metric="settings", filter_path="nodes.*.name,nodes.*.roles")
        return {nid: {"name": n.get("name"), "roles": n.get("roles", [])} for nid, n in found.get("nodes", {}).items()}

    def ml_nodes(self) -> dict[str, str]:
        """Node id -> name of the nodes with the ``ml`` role (none on a cluster without dedicated ML nodes)."""
        return {nid: n["name"] for nid, n in self.cluster_nodes().items() if "ml" in n["roles"]}

    def resolve_nodes(self, wanted: tuple[str, ...] | list[str]) -> list[str]:
        """Node ids for node names or ids; an unknown one is refused with the list of nodes."""
        nodes = self.cluster_nodes()
        by_name = {n["name"]: nid for nid, n in nodes.items()}
        ids = []
        for item in wanted:
            if item in nodes:
                ids.append(item)
            elif item in by_name:
                ids.append(by_name[item])
            else:
                known = ", ".join(f"{n['name']} ({'/'.join(n['roles'])})" for n in nodes.values())
                raise errors.ConfigurationError(f"No node {item!r} in this cluster; its nodes: {known}.")
        return ids

    def check_deploy_targets(self, nodes: tuple[str, ...] | list[str]) -> list[str]:
        """Node ids for a custom deployment plan; refused when ``only_run_on_ml_node`` keeps models off a chosen
        node (ml-commons would only answer "no eligible node found")."""
        ids = self.resolve_nodes(nodes)
        key = "plugins.ml_commons.only_run_on_ml_node"
        with self.errors():
            found = self.client.cluster.get_settings(include_defaults=True, flat_settings=True)
        value = next(
            (found[s][key] for s in ("transient", "persistent", "defaults") if key in found.get(s, {})), "true"
        )
        if str(value).lower() == "true":
            all_nodes = self.cluster_nodes()
            not_ml = [all_nodes[nid]["name"] for nid in ids if "ml" not in all_nodes[nid]["roles"]]
            if not_ml:
                raise errors.ConfigurationError(
                    f"{key} is true: ml-commons runs models only on ML nodes, and {', '.join(not_ml)} "
                    f"{'is' if len(not_ml) == 1 else 'are'} not one (ML nodes: "
                    f"{', '.join(self.ml_nodes().values()) or 'none'}). Choose ML nodes, or set {key} to false."
                )
        return ids

    def model_placement(self, model_id: str) -> dict:
        """Where a model runs: ``nodes`` (names of the nodes serving it, from ml-commons' profile API),
        ``planned`` (how many nodes its deployment asked for) and ``planned_nodes`` (their names)."""
        names = {nid: n["name"] for nid, n in self.cluster_nodes().items()}
        try:
            model = self._ml("GET", f"/models/{model_id}")
        except opensearchpy.NotFoundError:
            return {"nodes": [], "planned": 0, "planned_nodes": []}
        planned_ids = model.get("planning_worker_nodes") or []
        serving: list[str] = []
        try:
            profile = self._ml("GET", f"/profile/models/{model_id}")
        except (opensearchpy.TransportError, errors.E5PluginError):
            profile = {}
        for nid, node in (profile.get("nodes") or {}).items():
            state = ((node.get("models") or {}).get(model_id) or {}).get("model_state")
            if state == "DEPLOYED":
                serving.append(names.get(nid, nid))
        return {
            "nodes": sorted(serving),
            "planned": int(model.get("planning_worker_node_count") or len(planned_ids)),
            "planned_nodes": sorted(names.get(nid, nid) for nid in planned_ids),
        }

    def find_models(self, name: str | None = None) -> list[dict]:
        """Registered models (not their chunks) made by e5plugin, optionally of one name."""
        must: list[dict] = [{"match": {"model_config.all_config": mlcommons.PROVENANCE_KEY}}]
        if name:
            must.append({"term": {"name.keyword": name}})
        body = {"query": {"bool": {"must": must, "must_not": [{"exists": {"field": "chunk_number"}}]}}, "size": 1000}
        try:
            found = self._ml("POST", "/models/_search", body)
        except errors.E5PluginError:
            raise
        except opensearchpy.NotFoundError:
            return []
        return [{"model_id": h["_id"], **h["_source"]} for h in found.get("hits", {}).get("hits", [])]

    def model_state(self, model_id: str) -> str:
        try:
            return str(self._ml("GET", f"/models/{model_id}").get("model_state", "unknown"))
        except opensearchpy.NotFoundError:
            return "absent"

    def _model_group(self, name: str) -> str:
        body = {"query": {"term": {"name.keyword": name}}, "size": 1}
        try:
            hits = self._ml("POST", "/model_groups/_search", body).get("hits", {}).get("hits", [])
        except opensearchpy.NotFoundError:
            hits = []
        if hits:
            return hits[0]["_id"]
        return self._ml("POST", "/model_groups/_register", {"name": name, "description": "e5plugin"})["model_group_id"]

    def planned_model_requests(
        self, spec: ModelSpec, plan: PrefixPlan, *, model_id: str, options: DeploymentOptions | None = None
    ) -> list:
        from ..bodies import PlannedRequest

        config = mlcommons.model_config(spec, plan) if spec.local_path else {"(from the checkpoint)": True}
        config.pop("all_config", None)
        return [
            PlannedRequest("POST", f"{self.ML}/model_groups/_register", {"name": model_id}, "unless it exists"),
            PlannedRequest(
                "POST",
                f"{self.ML}/models/_register_meta",
                {
                    "name": model_id,
                    "function_name": "TEXT_EMBEDDING",
                    "model_format": mlcommons.model_format((options or DeploymentOptions()).model_format),
                    "model_config": config,
                },
                "unless a model of that name and fingerprint exists",
            ),
            PlannedRequest("POST", f"{self.ML}/models/<id>/upload_chunk/<n>", None, "zip in 10 MB chunks"),
            PlannedRequest("POST", f"{self.ML}/models/<id>/_deploy", None, "then poll the task until DEPLOYED"),
        ]

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
        """Register (chunk upload) and deploy. Same name + fingerprint: reused (redeployed if needed); ready once
        it answered a prediction."""
        self.require_ml()
        spec = ensure_local(spec)
        chosen = (options or DeploymentOptions()).model_format
        formats = [mlcommons.model_format(chosen)] if chosen else list(mlcommons.DEFAULT_FORMATS)
        config = mlcommons.model_config(spec, plan)
        wanted = {mlcommons.fingerprint(spec, config, fmt) for fmt in formats}  # no packaging needed to compare
        name = model_id
        action = "created"
        existing = self.find_models(name)
        same = [m for m in existing if mlcommons.recorded_provenance(m).get("fingerprint") in wanted]
        if same:
            found_id, action = same[0]["model_id"], "reused"
        else:
            if existing and not replace:
                raise errors.ConflictError(
                    f"An ml-commons model named {name!r} exists with another source or configuration; pass "
                    "--replace to retire it, or choose another --model-id."
                )
            if existing:
                self.refuse_replacing_used(name, [m["model_id"] for m in existing], users_allowed)
            package = mlcommons.package(spec, plan, work_dir, formats[0])
            found_id = self._register(package, name, spec)
            for old in existing:
                self.delete_model(old["model_id"])
                action = "replaced"
        timeout = _seconds((options or DeploymentOptions()).timeout)
        nodes = tuple((options or DeploymentOptions()).nodes)
        if nodes:
            self.check_deploy_targets(nodes)  # before anything is undeployed
        serving = set(self.model_placement(found_id)["nodes"]) if nodes else set()
        if nodes and serving and not serving <= set(self._node_names(nodes)):
            # ml-commons refuses a plan that leaves out a node already serving the model: undeploy it first
            # (the model does not answer until the new deployment is done)
            self._undeploy_and_wait(found_id)
        if self.model_state(found_id) not in self.DEPLOYED or (nodes and serving != set(self._node_names(nodes))):
            self.deploy(found_id, timeout=timeout, nodes=nodes)
        # a model registered with prefixes refuses a prediction without a content type (and one without, with it)
        content_type = "passage" if plan.cluster_adds else None
        vector = self.prove_model_answers(found_id, spec.dims, timeout, content_type=content_type)
        model = DeployedModel(found_id, self.model_state(found_id), provenance(spec), action)
        model.answered_dims = len(vector)
        model.normalized = abs(sum(x * x for x in vector) ** 0.5 - 1.0) <= 1e-3
        return model

    def prove_model_answers(
        self, model_id: str, dims: int, timeout: float, content_type: str | None = None
    ) -> list[float]:
        """A real prediction before the model is called ready. ml-commons may call a model DEPLOYED that no node
        serves (right after a restart, while it redeploys): then the model is deployed again and asked again,
        until ``timeout``. A vector of another size than the index expects is refused."""
        deadline = time.monotonic() + timeout
        redeployed = False
        while True:
            try:
                vector = self.predict(model_id, [READINESS_TEXT], content_type=content_type)[0]
                break
            except (opensearchpy.TransportError, errors.RequestRejectedError) as exc:  # "Model not ready yet"
                last = exc
            if time.monotonic() > deadline:
                raise errors.ModelNotDeployedError(
                    f"Model {model_id!r} is {self.model_state(model_id)} but does not answer a prediction "
                    f"({self._scrub(str(last))}); `e5plugin doctor` shows the node's ML capacity. Re-run deploy "
                    "(a longer --deploy-timeout waits longer)."
                )
            if not redeployed:
                redeployed = True
                with contextlib.suppress(
                    opensearchpy.TransportError, errors.ModelNotDeployedError, errors.RequestRejectedError
                ):
                    self.deploy(model_id, timeout=max(deadline - time.monotonic(), 1.0))
                continue
            time.sleep(1.0)
        return self._expect_dims(model_id, vector, dims)

    def model_ids(self, name: str) -> list[str]:
        return [m["model_id"] for m in self.find_models(name)]

    def _pipeline_bulk_client(self, kwargs: dict[str, Any], timeout: float) -> Any:
        """opensearch-py has no per-request retry switch: a shallow copy of the client with its own transport
        settings (same connection pool), and the timeout as a per-request parameter."""
        client = copy.copy(self.client)
        client.transport = copy.copy(self.client.transport)
        client.transport.retry_on_timeout = False
        kwargs["request_timeout"] = timeout
        client.bulk = _resent_when_a_node_left(client.bulk)  # type: ignore[method-assign]
        return client

    def _register(self, package: mlcommons.MlCommonsPackage, name: str, spec: ModelSpec) -> str:
        group_id = self._model_group(name)
        chunks = package.chunks()
        meta = self._ml(
            "POST",
            "/models/_register_meta",
            {
                "name": name,
                "version": "1",
                "model_group_id": group_id,
                "description": package.description,
                "function_name": "TEXT_EMBEDDING",
                "model_format": package.model_format,
                "model_content_size_in_bytes": package.size,
                "model_content_hash_value": package.zip_sha256,
                "total_chunks": len(chunks),
                "model_config": package.model_config,
            },
        )
        model_id = meta["model_id"]
        connection = self.client.transport.get_connection()
        for number, chunk in enumerate(chunks):
            with self.errors():  # raw bytes: opensearch-py's serializer would refuse them
                connection.perform_request(
                    "POST",
                    f"{self.ML}/models/{model_id}/upload_chunk/{number}",
                    body=chunk,
                    headers={"content-type": "application/json"},
                    timeout=300,
                )
        return model_id

    def deploy(self, model_id: str, timeout: float = 300.0, nodes: tuple[str, ...] | list[str] = ()) -> None:
        """Deploy and wait; ``nodes`` (names or ids) asks ml-commons for exactly those nodes, which needs
        ``plugins.ml_commons.allow_custom_deployment_plan`` (turned on here, as the user asked for a plan)."""
        body = None
        if nodes:
            body = {"node_ids": self.check_deploy_targets(nodes)}
            with self.errors():
                self.client.cluster.put_settings(
                    body={"persistent": {"plugins.ml_commons.allow_custom_deployment_plan": True}}
                )
        task = self._ml("POST", f"/models/{model_id}/_deploy", body)
        self._wait_task(task["task_id"], timeout, what=f"deployment of model {model_id}")

    def _node_names(self, nodes: tuple[str, ...]) -> list[str]:
        names = {nid: n["name"] for nid, n in self.cluster_nodes().items()}
        return [names[nid] for nid in self.resolve_nodes(nodes)]

    def _wait_task(self, task_id: str, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self._ml("GET", f"/tasks/{task_id}")
            state = task.get("state")
            if state == "COMPLETED":
                return task
            if state in ("FAILED", "COMPLETED_WITH_ERROR"):
                raise errors.ModelNotDeployedError(
                    f"The {what} failed: {task.get('error')}. `e5plugin doctor` shows the node's ML capacity."
                )
            if time.monotonic() > deadline:
                raise errors.ModelNotDeployedError(
                    f"The {what} did not finish within {timeout:.0f}s (task {task_id} is {state}); check the "
                    "node's memory and plugins.ml_commons settings, then re-run deploy (it resumes, nothing twice)."
                )
            time.sleep(0.5)

    def undeploy(self, model_id: str) -> None:
        with contextlib.suppress(opensearchpy.NotFoundError):
            self._ml("POST", f"/models/{model_id}/_undeploy")

    def _undeploy_and_wait(self, model_id: str, timeout: float = 30.0) -> None:
        self.undeploy(model_id)
        deadline = time.monotonic() + timeout
        while self.model_state(model_id) in self.DEPLOYED and time.monotonic() < deadline:
            time.sleep(0.5)

    def delete_model(self, model_id: str) -> None:
        self._undeploy_and_wait(model_id)
        with contextlib.suppress(opensearchpy.NotFoundError):
            self._ml("DELETE", f"/models/{model_id}")

    def list_models(self) -> list[DeployedModel]:
        return [
            DeployedModel(
                m["model_id"], str(m.get("model_state")), {"name": m.get("name"), **mlcommons.recorded_provenance(m)}
            )
            for m in self.find_models()
        ]

    def embed_query(self, model_id: str, text: str, cluster_prefix: bool) -> list[float]:
        return self.predict(model_id, [text], content_type="query" if cluster_prefix else None)[0]

    def predict(self, model_id: str, texts: list[str], content_type: str | None = None) -> list[list[float]]:
        """``_predict`` for text embedding (used by tests and doctor to check the model answers)."""
        body: dict = {"text_docs": texts, "return_number": True, "target_response": ["sentence_embedding"]}
        if content_type:
            body["parameters"] = {"content_type": content_type}
        response = self._ml("POST", f"/_predict/text_embedding/{model_id}", body)
        return [r["output"][0]["data"] for r in response["inference_results"]]


#: A bulk request that failed as a whole because a node left while it handled it: OpenSearch forwards a bulk that
#: goes through an ingest pipeline from a node without the ingest role (a dedicated ML or cluster-manager node) to
#: an ingest node and does not retry when that node dies (HTTP 500, no per-document result).
NODE_LEFT_ERRORS = frozenset(
    {
        "node_disconnected_exception",
        "node_not_connected_exception",
        "node_closed_exception",
        "connect_transport_exception",
    }
)
NODE_LEFT_RESENDS = 5  # after 1, 2, 4, 8, 16 s: the cluster has dropped the dead node by then


def _resent_when_a_node_left(bulk: Any) -> Any:
    """``bulk``, sending the same request again when it failed because a node left (:data:`NODE_LEFT_ERRORS`):
    every document carries its id, so what the first attempt stored is overwritten, never duplicated."""

    def send(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(NODE_LEFT_RESENDS + 1):
            try:
                return bulk(*args, **kwargs)
            except opensearchpy.TransportError as exc:
                if attempt == NODE_LEFT_RESENDS or str(exc.error) not in NODE_LEFT_ERRORS:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    return send


def _seconds(duration: str) -> float:
    text = str(duration).strip().lower()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)
