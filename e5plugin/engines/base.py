"""The small interface every engine backend implements, and engine detection.

Everything that differs between Elasticsearch and OpenSearch (request bodies, APIs, client libraries, error
classes) lives behind :class:`Backend`; the rest of e5plugin asks it, never ``if engine == ...``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import urllib3

from ..config import ConnectionConfig
from ..errors import (
    AuthenticationError,
    ClusterUnreachableError,
    ConflictError,
    DimensionMismatchError,
    E5PluginError,
    IndexNotFoundError,
    MissingCapabilityError,
    RequestRejectedError,
)
from ..models import ModelSpec
from ..prefixes import Mode, PrefixPlan, plan_prefixes


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split("-")[0].split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


@dataclass
class Capabilities:
    engine: str
    version: tuple[int, int, int]
    ml: bool = False  # the cluster can run a text-embedding model
    ml_reason: str = ""  # why not, in one sentence with the fix
    cluster_prefixes: bool = False  # the model config can carry passage/query prefixes
    native_hybrid: bool = False  # the engine fuses BM25 + kNN itself
    ingest_scripts: bool = False  # painless script/set/remove processors are there
    plugins: list[str] = field(default_factory=list)
    licence: str | None = None

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@dataclass
class Hit:
    id: str
    score: float
    source: dict
    index: str = ""
    #: chunked indices: the best-matching passages of this document, best first ({text, start, end, score, offset})
    passages: list[dict] = field(default_factory=list)

    @property
    def passage(self) -> dict | None:
        """The best-matching passage (chunked indices), else None."""
        return self.passages[0] if self.passages else None

    @property
    def similarity(self) -> float:
        """Cosine similarity, recovered from the engines' (1 + cos) / 2 score."""
        return 2.0 * self.score - 1.0


class Backend(ABC):
    """One engine. Subclasses set ``engine``, ``bodies`` and implement the abstract methods."""

    engine: str
    bodies: ModuleType
    index_options: tuple[str, ...]

    def __init__(self, client: Any, config: ConnectionConfig) -> None:
        self.client = client
        self.config = config
        self._capabilities: Capabilities | None = None

    # ---- facts ------------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            with self.errors():
                self._capabilities = self._detect_capabilities()
        return self._capabilities

    @abstractmethod
    def _detect_capabilities(self) -> Capabilities: ...

    def prefix_plan(self, spec: ModelSpec, mode: Mode) -> PrefixPlan:
        return plan_prefixes(spec, mode, self.capabilities.cluster_prefixes)

    def require_ml(self) -> None:
        caps = self.capabilities
        if not caps.ml:
            raise MissingCapabilityError(caps.ml_reason or f"This {self.engine} cluster cannot run models.")

    # ---- errors -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Translate the client library's exceptions into e5plugin's one-sentence errors."""
        try:
            yield
        except E5PluginError:
            raise
        except Exception as exc:
            mapped = self._map_error(exc) or _request_error(exc, self.engine, self._scrub)
            if mapped is None:
                raise
            raise mapped from exc

    @abstractmethod
    def _map_error(self, exc: Exception) -> E5PluginError | None: ...

    @staticmethod
    def _expect_dims(model_id: str, vector: list[float], dims: int) -> list[float]:
        """The readiness prediction's vector, refused when its size is not the one the deploy describes."""
        if len(vector) != dims:
            raise DimensionMismatchError(
                f"Model {model_id!r} answers with {len(vector)}-dim vectors where {dims} were expected; it is not "
                "the model this deploy describes (choose another --model-id, or --replace it)."
            )
        return vector

    def _scrub(self, text: str) -> str:
        for secret in self.config.secrets():
            text = text.replace(secret, "****")
        return text

    # ---- indices ----------------------------------------------------------------------------------------------
    def index_body(self, spec: ModelSpec, *, normalized: bool | None = None, **kwargs: Any) -> dict:
        """``normalized``: whether the deployed model's vectors measured unit length (None: not measured)."""
        return self.bodies.index_body(spec, **kwargs)

    def index_exists(self, index: str) -> bool:
        with self.errors():
            return bool(self.client.indices.exists(index=index))

    def get_mapping(self, index: str) -> dict:
        with self.errors():
            response = self.client.indices.get_mapping(index=index)
        data = dict(response)
        return next(iter(data.values()))["mappings"]

    def index_meta(self, index: str) -> dict:
        """What e5plugin recorded about the index (model, mode, fields, prefix plan)."""
        return self.get_mapping(index).get("_meta", {}).get(self.bodies_meta_key, {})

    bodies_meta_key = "e5plugin"

    @staticmethod
    def field_mapping(mapping: dict, field: str) -> dict:
        """The mapping of a (dotted, possibly nested) field; ``{}`` where there is none."""
        node = mapping
        for part in field.split("."):
            node = node.get("properties", {}).get(part, {})
        return node

    @abstractmethod
    def vector_dims(self, mapping: dict, vector_field: str) -> int | None: ...

    @abstractmethod
    def index_option(self, mapping: dict, vector_field: str) -> str | None:
        """Which of :attr:`index_options` the vector field's mapping is (``None``: not a vector field)."""

    def ensure_index(self, index: str, body: dict, *, vector_field: str, dims: int) -> str:
        """Create the index, or check that the existing one fits. Returns ``created`` or ``exists``."""
        if self.index_exists(index):
            existing = self.vector_dims(self.get_mapping(index), vector_field)
            if existing is None:
                raise ConflictError(
                    f"Index {index!r} exists without a vector field {vector_field!r}; choose another index name "
                    f"or --vector-field, or backfill it with `e5plugin reindex`."
                )
            if existing != dims:
                raise DimensionMismatchError(
                    f"Index {index!r} has {existing}-dim vectors in {vector_field!r} but the model makes {dims}; "
                    "use a new index for this model (then switch an alias), or the model the index was built with."
                )
            return "exists"
        with self.errors():
            self.client.indices.create(index=index, body=body)
        return "created"

    def delete_index(self, index: str) -> None:
        with self.errors():
            self.client.indices.delete(index=index, ignore_unavailable=True)

    def refresh(self, index: str) -> None:
        with self.errors():
            self.client.indices.refresh(index=index)

    def index_settings(self, index: str, names: Iterable[str]) -> dict[str, str | None]:
        """The explicitly set values of ``index.<name>`` settings (None where the default applies)."""
        with self.errors():
            response = dict(self.client.indices.get_settings(index=index))
        settings = next(iter(response.values()), {}).get("settings", {}).get("index", {})
        return {name: settings.get(name) for name in names}

    def put_index_settings(self, index: str, settings: dict[str, object]) -> None:
        """Update dynamic index settings; a None value resets the setting to its default."""
        with self.errors():
            self.client.indices.put_settings(index=index, body={"index": settings})

    def count(self, index: str, query: dict | None = None) -> int:
        with self.errors():
            body = {"query": query} if query else None
            return int(self.client.count(index=index, body=body)["count"])

    # ---- pipelines --------------------------------------------------------------------------------------------
    def put_pipeline(self, name: str, body: dict) -> str:
        """Create or update; returns ``created``, ``updated`` or ``unchanged`` (re-runs are no-ops)."""
        current = self.get_pipeline(name)
        if current is not None and _same(current, body):
            return "unchanged"
        with self.errors():
            self.client.ingest.put_pipeline(id=name, body=body)
        return "updated" if current is not None else "created"

    def get_pipeline(self, name: str) -> dict | None:
        with self.errors():
            try:
                return dict(self.client.ingest.get_pipeline(id=name))[name]
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404 or type(exc).__name__ == "NotFoundError":
                    return None
                raise

    # ---- documents --------------------------------------------------------------------------------------------
    def scan(self, index: str, body: dict, size: int = 500) -> Iterator[dict]:
        """Every matching document (scroll), as raw hits."""
        with self.errors():
            yield from self._helpers().scan(self.client, query=body, index=index, size=size, preserve_order=False)

    def scan_ahead(self, index: str, body: dict, size: int = 500) -> Iterator[dict]:
        """Every matching document, like :meth:`scan`, for callers slower than a scroll lives: a thread reads the
        scroll to its end into a temporary file while the caller works through what was read.

        Client-side embedding on CPU can spend minutes on one page (the real e5-small-v2 at ~2 documents/s under
        load: 500 documents > the scroll's 5 minutes), and an expired scroll ends the run with "No search context
        found". Here the scroll never waits for the caller; memory holds one page, the disk the rest."""
        with tempfile.TemporaryDirectory(prefix="e5plugin-scan-") as tmp:
            path = Path(tmp) / "hits.jsonl"
            writer = path.open("wb")
            progress = threading.Condition()
            state: dict[str, Any] = {"bytes": 0, "done": False, "error": None}
            stop = threading.Event()

            def publish(page: list[bytes]) -> None:
                """Append whole lines to the file, then let the caller read up to their end."""
                writer.write(b"".join(page))
                writer.flush()
                with progress:
                    state["bytes"] = writer.tell()
                    progress.notify_all()

            def read() -> None:
                try:
                    page: list[bytes] = []
                    for hit in self.scan(index, body, size=size):
                        if stop.is_set():
                            return
                        page.append(json.dumps(hit, ensure_ascii=False).encode("utf-8") + b"\n")
                        if len(page) >= size:
                            publish(page)
                            page = []
                    publish(page)
                except BaseException as exc:  # handed to the caller's thread
                    with progress:
                        state["error"] = exc
                finally:
                    with progress:
                        state["done"] = True
                        progress.notify_all()

            thread = threading.Thread(target=read, name="e5plugin-scan-ahead", daemon=True)
            thread.start()
            try:
                with path.open("rb") as source:
                    offset = 0
                    while True:
                        with progress:
                            while state["bytes"] == offset and not state["done"]:
                                progress.wait(0.5)
                            available, done, error = state["bytes"], state["done"], state["error"]
                        while offset < available:
                            line = source.readline()
                            offset += len(line)
                            yield json.loads(line)
                        if error is not None:
                            raise error
                        if done and offset >= available:
                            return
            finally:
                stop.set()
                thread.join(timeout=60)
                writer.close()

    @abstractmethod
    def _helpers(self) -> ModuleType:
        """The client library's ``helpers`` module (bulk, scan)."""

    def streaming_bulk(self, actions: Iterable[dict], **kwargs: Any) -> Iterator[tuple[bool, dict]]:
        pending, client = self._bulk_client(iter(actions), kwargs)
        yield from self._helpers().streaming_bulk(client, pending, **kwargs)

    # ---- bulks through an ingest pipeline (model lifecycle: the cluster embeds) ------------------------------
    def _bulk_client(self, actions: Iterator[dict], kwargs: dict[str, Any]) -> tuple[Iterator[dict], Any]:
        """The client for a bulk: where the documents go through an ingest pipeline (``pipeline`` or the index's
        default/final pipeline), one that waits at least :data:`PIPELINE_BULK_TIMEOUT` and never re-sends on a
        timeout (the cluster would still be embedding the first copy: a retry multiplies the ML load)."""
        first = next(actions, None)
        if first is None:
            return iter(()), self.client
        pending = itertools.chain([first], actions)
        index = first.get("_index")
        if kwargs.get("pipeline") or (index and self._has_ingest_pipeline(str(index))):
            return pending, self._pipeline_bulk_client(kwargs, max(self.config.request_timeout, PIPELINE_BULK_TIMEOUT))
        return pending, self.client

    def _has_ingest_pipeline(self, index: str) -> bool:
        settings = self.index_settings(index, ("default_pipeline", "final_pipeline"))
        return any(value not in (None, "_none") for value in settings.values())

    def _pipeline_bulk_client(self, kwargs: dict[str, Any], timeout: float) -> Any:
        """A client (or a view of it) with ``timeout`` and no retry on timeout; may set per-request ``kwargs``."""
        return self.client

    def get_document(self, index: str, doc_id: str) -> dict | None:
        """A stored document's source, vectors included (Elasticsearch 9 leaves them out by default)."""
        with self.errors():
            try:
                return dict(self.client.get(index=index, id=doc_id, **self._with_vectors()))["_source"]
            except Exception as exc:
                if type(exc).__name__ == "NotFoundError":
                    return None
                raise

    def _with_vectors(self) -> dict:
        return {}

    def search(self, index: str, body: dict, **params: Any) -> dict:
        with self.errors():
            return dict(self.client.search(index=index, body=body, **params))

    def msearch(self, index: str, bodies: list[dict]) -> list[dict]:
        """Several searches in one request (``_msearch``); one response per body, in order. A search that fails
        inside the batch raises, naming the cluster's reason."""
        if not bodies:
            return []
        lines: list[dict] = []
        for body in bodies:
            lines += [{}, body]
        with self.errors():
            responses = list(dict(self.client.msearch(index=index, body=lines))["responses"])
        for item in responses:
            if "error" in item:
                error = item["error"]
                reason = error.get("reason") or error.get("type") if isinstance(error, dict) else error
                raise E5PluginError(f"A search in a multi-search on {index!r} failed: {self._scrub(str(reason))}")
        return responses

    # ---- vectors and metadata for the tasks (faq, dedup, calibrate) ----------------------------------------
    def vector_source(self, vector_field: str) -> Any:
        """The ``_source`` filter of a search that returns only the stored vector."""
        return [vector_field]

    def scan_vectors(
        self, index: str, vector_field: str, *, query: dict | None = None, size: int = 500
    ) -> Iterator[tuple[str, list[float]]]:
        """``(id, vector)`` of every document that has a vector (scroll, ``size`` per page): memory stays bounded."""
        body = {"_source": self.vector_source(vector_field), "query": query or {"exists": {"field": vector_field}}}
        for hit in self.scan(index, body, size=size):
            value: Any = hit.get("_source") or {}
            for part in vector_field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value:
                yield hit["_id"], value

    def put_mapping(self, index: str, body: dict) -> None:
        """Add fields or ``_meta`` to an existing index's mapping."""
        with self.errors():
            self.client.indices.put_mapping(index=index, body=body)

    def update_index_meta(self, index: str, updates: dict) -> dict:
        """Merge ``updates`` into the index's ``_meta.e5plugin`` and return the result. ``put_mapping`` replaces
        ``_meta`` as a whole on both engines, so everything else in it is sent back as read."""
        meta = dict(self.get_mapping(index).get("_meta") or {})
        ours = {**(meta.get(self.bodies_meta_key) or {}), **updates}
        meta[self.bodies_meta_key] = ours
        self.put_mapping(index, {"_meta": meta})
        return ours

    @staticmethod
    def hits(response: dict) -> list[Hit]:
        return [
            Hit(
                id=h["_id"],
                score=float(h["_score"] or 0.0),
                source=h.get("_source", {}),
                index=h.get("_index", ""),
                passages=_inner_passages(h),
            )
            for h in response["hits"]["hits"]
        ]

    # ---- search bodies (engine-specific) ----------------------------------------------------------------------
    @abstractmethod
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
    ) -> dict: ...

    @abstractmethod
    def bm25_body(
        self, text: str, *, text_field: str, size: int, filters: list[dict] | None, source: list[str] | bool | None
    ) -> dict: ...

    def native_hybrid_search(self, index: str, **kwargs: Any) -> list[Hit] | None:
        """Hybrid search inside the engine; ``None`` when it cannot (the caller then fuses client-side)."""
        return None

    def search_pipelines(self) -> dict[str, dict]:
        """Search pipelines the queries need (name -> body); deploy creates them (:meth:`put_search_pipeline`)."""
        return {}

    def put_search_pipeline(self, name: str, body: dict) -> str:
        raise MissingCapabilityError(f"{self.engine} has no search pipelines.")

    # ---- chunked indices (nested passages) --------------------------------------------------------------------
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
        """kNN over the passages in the nested field ``path`` (``vector_field`` is the full path): the top ``k``
        parents by their best passage, which comes back in ``inner_hits``. Parent fields can be filtered."""
        raise MissingCapabilityError(f"Chunked (nested) indices are not offered on {self.engine}.")

    def chunked_pipeline_body(
        self, model_id: str, plan: PrefixPlan, *, text_field: str, passages_field: str, vector_field: str
    ) -> dict:
        """The ingest pipeline that embeds every passage of a chunked index in the cluster (server mode)."""
        raise MissingCapabilityError(
            f"Server-side embedding of chunked indices is not offered on {self.engine}: deploy the chunked index with "
            "--mode client (e5plugin splits and embeds the passages at ingest)."
        )

    # ---- aliases (switching an index to a new model version without downtime) -------------------------------
    def alias_indices(self, alias: str) -> list[str]:
        """The indices ``alias`` points to (empty when there is no such alias)."""
        with self.errors():
            if not self.client.indices.exists_alias(name=alias):
                return []
            return sorted(dict(self.client.indices.get_alias(name=alias)))

    def list_indices(self, pattern: str) -> list[str]:
        """Concrete index names matching a wildcard pattern (none: empty)."""
        with self.errors():
            found = self.client.indices.get(index=pattern, allow_no_indices=True, ignore_unavailable=True)
        return sorted(dict(found))

    def is_alias(self, name: str) -> bool:
        with self.errors():
            return bool(self.client.indices.exists_alias(name=name))

    def switch_alias(self, alias: str, index: str) -> list[str]:
        """Point ``alias`` at ``index`` and away from whatever it pointed to, in one atomic ``_aliases`` request
        (searches see the old index or the new one, never neither). Returns the indices it left."""
        from ..bodies import alias_actions_body

        old = [name for name in self.alias_indices(alias) if name != index]
        with self.errors():
            self.client.indices.update_aliases(body=alias_actions_body(alias, index, old))
        return old

    # ---- models (server mode) ---------------------------------------------------------------------------------
    def apply_one_node_ml_settings(self) -> bool:
        """Cluster settings a one-node (test/dev) cluster needs to run models; only applied when asked.
        Returns whether this engine has any."""
        return False

    def embed_query(self, model_id: str, text: str, cluster_prefix: bool) -> list[float]:
        """The deployed model's vector for a query text (exact search in server mode)."""
        raise MissingCapabilityError(f"Exact search in server mode is not offered on {self.engine}; use a flat index.")

    @abstractmethod
    def import_model(
        self,
        spec: ModelSpec,
        plan: PrefixPlan,
        *,
        model_id: str,
        work_dir: Any,
        options: Any = None,
        replace: bool = False,
        users_allowed: tuple[str | None, str | None] = (None, None),
    ) -> Any:
        """Register/import and deploy the model; idempotent (same source: reused). ``replace`` retires a model of
        that name with another source, unless a pipeline other than ``users_allowed`` (pipeline, index) uses it;
        the model is called ready only after it answered a real prediction."""

    @abstractmethod
    def planned_model_requests(
        self, spec: ModelSpec, plan: PrefixPlan, *, model_id: str, options: Any = None
    ) -> list[Any]:
        """What ``import_model`` would send, for ``--dry-run`` (large payloads summarized)."""

    @abstractmethod
    def model_state(self, model_id: str) -> str: ...

    @abstractmethod
    def delete_model(self, model_id: str) -> None: ...

    @abstractmethod
    def list_models(self) -> list[Any]: ...

    # ---- model lifecycle: who uses a model, does it answer ----------------------------------------------------
    def model_ids(self, name: str) -> list[str]:
        """The cluster's ids of the model deployed under ``name`` (Elasticsearch: the name itself, if it exists)."""
        return [name]

    def model_users(self, model_ids: Iterable[str]) -> dict[str, list[str]]:
        """Ingest pipelines whose processors reference one of ``model_ids``, each with the indices that use it as
        their default or final pipeline: ``{pipeline: [index, ...]}``."""
        wanted = set(model_ids)
        if not wanted:
            return {}
        with self.errors():
            try:
                pipelines = dict(self.client.ingest.get_pipeline())
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404 or type(exc).__name__ == "NotFoundError":
                    return {}
                raise
            users = {name: [] for name, body in pipelines.items() if _references_model(body, wanted)}
            if not users:
                return {}
            settings = dict(
                self.client.indices.get_settings(
                    index="*", name="index.default_pipeline,index.final_pipeline", expand_wildcards="all"
                )
            )
        for index, value in sorted(settings.items()):
            own = value.get("settings", {}).get("index", {})
            for key in ("default_pipeline", "final_pipeline"):
                if own.get(key) in users:
                    users[own[key]].append(index)
        return users

    def refuse_replacing_used(self, name: str, model_ids: list[str], allowed: tuple[str | None, str | None]) -> None:
        """Before ``--replace`` deletes ``model_ids`` (the model deployed as ``name``): refuse while a pipeline uses
        them, other than ``allowed`` = (this deploy's pipeline, its index) used by no other index."""
        own_pipeline, own_index = allowed
        users = self.model_users(model_ids)
        others = {pipeline: [i for i in indices if i != own_index] for pipeline, indices in users.items()}
        blocking = {p: indices for p, indices in others.items() if p != own_pipeline or indices}
        if blocking:
            described = describe_model_users(blocking)
            raise ConflictError(
                f"--replace would delete the model {name!r}, which is still in use: {described}. Deploy the new "
                "model under another --model-id (`e5plugin rollout` moves an index to it behind an alias), or "
                "delete those pipelines first."
            )

    def embedding_failures(self, index: str, ids: list[str]) -> dict[str, str]:
        """Of the stored documents ``ids``, those a pipeline kept without a vector because the *model* failed
        (``ERROR_FIELD`` set by another processor than the text check), with the reason. Read with ``mget``
        (real time, no refresh needed), only the marker."""
        from ..bodies import ERROR_FIELD

        if not ids:
            return {}
        with self.errors():
            body = {"docs": [{"_id": doc_id, "_source": [ERROR_FIELD]} for doc_id in ids]}
            response = dict(self.client.mget(index=index, body=body))
        failed: dict[str, str] = {}
        for doc in response.get("docs", []):
            mark = (doc.get("_source") or {}).get(ERROR_FIELD)
            if isinstance(mark, dict) and mark.get("processor") not in TEXT_CHECK_PROCESSORS:
                failed[str(doc["_id"])] = f"not embedded: {mark.get('reason') or 'the model failed'}"
        return failed


def _inner_passages(hit: dict) -> list[dict]:
    """The passages in a hit's ``inner_hits`` (chunked indices), best first, with their score and array offset."""
    out: list[dict] = []
    for group in (hit.get("inner_hits") or {}).values():
        for inner in group.get("hits", {}).get("hits", []):
            passage = dict(inner.get("_source") or {})
            passage["score"] = float(inner.get("_score") or 0.0)
            passage["offset"] = (inner.get("_nested") or {}).get("offset")
            out.append(passage)
    return sorted(out, key=lambda p: -p["score"])


#: A bulk through an ingest pipeline runs the model on every document: it may take at least this long (seconds).
PIPELINE_BULK_TIMEOUT = 300.0

#: ``e5plugin_error.processor`` values that mean "the document had no usable text" (a without-vector document, not
#: a failure): the pipeline's text check, and client mode's own marker.
TEXT_CHECK_PROCESSORS = ("script", "e5plugin-client")


def _references_model(node: Any, model_ids: set[str]) -> bool:
    """Whether a pipeline body has a processor with a ``model_id`` in ``model_ids`` (at any depth)."""
    if isinstance(node, dict):
        if node.get("model_id") in model_ids:
            return True
        return any(_references_model(value, model_ids) for value in node.values())
    if isinstance(node, list):
        return any(_references_model(value, model_ids) for value in node)
    return False


def _same(current: dict, wanted: dict) -> bool:
    return json.dumps(current, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def detect_engine(config: ConnectionConfig) -> tuple[str, str]:
    """(engine, version) from the first reachable URL, without assuming either client's product checks."""
    if config.cloud_id:
        return "elasticsearch", ""
    headers = {"Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"ApiKey {config.api_key}"
    elif config.username:
        token = base64.b64encode(f"{config.username}:{config.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED" if config.verify_certs else "CERT_NONE",
        ca_certs=config.ca_certs,
        timeout=urllib3.Timeout(connect=5.0, read=config.request_timeout),
        retries=False,
    )
    last: Exception | None = None
    with _quiet_insecure(not config.verify_certs):
        for url in config.urls:
            base = url.rstrip("/")
            try:
                root = pool.request("GET", base + "/", headers=headers)
                if root.status == 401:
                    raise AuthenticationError(
                        f"{base} refused the credentials (HTTP 401): check --username/--password or --api-key."
                    )
                product = root.headers.get("X-elastic-product", "")
                if root.status == 200:
                    info = json.loads(root.data or b"{}")
                    version = info.get("version", {})
                    if version.get("distribution") == "opensearch":
                        return "opensearch", version.get("number", "")
                    return "elasticsearch", version.get("number", "")
                if product == "Elasticsearch":  # the integ-test distribution has no `GET /`
                    nodes = pool.request("GET", base + "/_nodes/_local?filter_path=nodes.*.version", headers=headers)
                    data = json.loads(nodes.data or b"{}")
                    return "elasticsearch", next(iter(data.get("nodes", {}).values()), {}).get("version", "")
                last = ClusterUnreachableError(
                    f"{base} answered HTTP {root.status} and is not Elasticsearch/OpenSearch."
                )
            except urllib3.exceptions.SSLError as exc:
                raise ClusterUnreachableError(
                    f"TLS verification failed for {base} ({exc.reason if hasattr(exc, 'reason') else exc}); "
                    "pass the cluster's CA with --ca-certs (or, knowingly, --insecure)."
                ) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = exc
    raise ClusterUnreachableError(
        f"Cannot reach a cluster at {', '.join(config.urls)} ({type(last).__name__ if last else 'no URL'}); "
        "check the URL (E5PLUGIN_URL), that the cluster runs, and the network. `e5plugin dev-cluster up` starts one."
    )


@contextlib.contextmanager
def _quiet_insecure(active: bool) -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        if active:
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        yield


BackendFactory = Callable[[ConnectionConfig], Backend]


@dataclass
class DeploymentOptions:
    """How the cluster runs the model (Elasticsearch deployment options; OpenSearch uses what applies)."""

    number_of_allocations: int = 1
    threads_per_allocation: int = 1
    priority: str = "normal"
    queue_capacity: int = 1024
    wait_for: str = "started"
    timeout: str = "300s"
    #: OpenSearch ml-commons: ``torchscript`` or ``onnx``; None: ONNX for a new registration, and an existing one of
    #: the same model in either format is reused (``e5plugin.packaging.mlcommons.DEFAULT_FORMATS``)
    model_format: str | None = None
    #: OpenSearch ml-commons: node names or ids to deploy on (a custom deployment plan); empty: ml-commons decides
    nodes: tuple[str, ...] = ()

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` (``300s``, ``5m``, ``1h``, ``500ms`` or bare seconds) in seconds."""
        return duration_seconds(self.timeout)


def duration_seconds(duration: str | float) -> float:
    """An engine duration (``300s``, ``5m``, ``1h``, ``500ms``) or bare seconds, in seconds."""
    text = str(duration).strip().lower()
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _request_error(exc: Exception, engine: str, scrub: Callable[[str], str]) -> E5PluginError | None:
    """Either client's HTTP 404 for a missing index (system indices aside: callers expect those) and HTTP 400, as
    one sentence naming the index or the engine's reason; None for anything else."""
    meta = getattr(exc, "meta", None)  # elasticsearch-py 8+: meta.status and body; opensearch-py: status_code, info
    status = getattr(meta, "status", None) if meta is not None else getattr(exc, "status_code", None)
    body = getattr(exc, "body", None) if meta is not None else getattr(exc, "info", None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(status, int) or not isinstance(error, dict):
        return None
    if status == 404 and error.get("type") == "index_not_found_exception":
        name = str(error.get("index") or error.get("resource.id") or "")
        if name.startswith("."):
            return None
        return IndexNotFoundError(
            f"Index {name!r} does not exist: check the name (`e5plugin doctor` lists the indices e5plugin made), "
            "or create it with `e5plugin deploy`."
        )
    if status == 400:
        cause = (error.get("root_cause") or [error])[0]
        detail = f"{cause.get('type')}: {cause.get('reason')}" if isinstance(cause, dict) else str(error)
        name = {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"}.get(engine, engine)
        return RequestRejectedError(scrub(f"{name} rejected the request (HTTP 400): {detail}"))
    return None


@dataclass
class DeployedModel:
    model_id: str
    state: str  # e.g. started / DEPLOYED / REGISTERED / absent
    provenance: dict = field(default_factory=dict)
    action: str = ""  # created / reused / replaced
    #: what the model answered to a test prediction: the vector's length and whether it had unit length
    answered_dims: int | None = None
    normalized: bool | None = None


def describe_model_users(users: dict[str, list[str]]) -> str:
    """``{pipeline: [index, ...]}`` (as :meth:`Backend.model_users` gives it) in words, for an error message."""
    return "; ".join(
        f"pipeline {pipeline!r}" + (f" (default pipeline of {', '.join(indices)})" if indices else "")
        for pipeline, indices in sorted(users.items())
    )
