"""The query helper app code imports: semantic (kNN) and hybrid search with the E5 query prefix handled.

    from e5plugin import SemanticSearch
    search = SemanticSearch.for_index("faq", url="http://localhost:9200")
    for hit in search.search("how do I reset my password?", k=5):
        print(hit.score, hit.source["text"])

What the index was built with (model, mode, fields, who adds prefixes) is read from the index's ``_meta``, so
the helper adds ``query: `` exactly when neither the cluster nor anyone else does.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from .bodies import validate_field_name
from .config import ConnectionConfig
from .embed import Embedder, parse_backend_label
from .engines import connect
from .engines.base import Backend, Hit
from .errors import (
    AuthenticationError,
    ClusterUnreachableError,
    ConfigurationError,
    DimensionMismatchError,
    E5PluginError,
    MissingCapabilityError,
    ModelNotDeployedError,
    PermissionDeniedError,
)
from .models import KNOWN_MODELS, ModelSpec, weights_sha256
from .prefixes import Actor, Mode, PrefixPlan
from .tasks.chunking import ChunkingSettings

RRF_RANK_CONSTANT = 60
#: where app servers keep the model of a client-mode index deployed from a local directory on another host
MODEL_DIR_ENV = "E5PLUGIN_MODEL_DIR"
#: search errors a changed index setup cannot explain (anything else, e.g. a 400, makes the helper check for one)
_NOT_A_SETUP_CHANGE = (
    AuthenticationError,
    PermissionDeniedError,
    ClusterUnreachableError,
    ConfigurationError,
    MissingCapabilityError,
    ModelNotDeployedError,
)
EMBED_BACKEND_KEY = "embed_backend"  # _meta.e5plugin: what embedded the documents (client mode)


@dataclass
class IndexSetup:
    """What e5plugin records in an index's ``_meta.e5plugin`` when it creates the index."""

    spec: ModelSpec
    mode: Mode
    plan: PrefixPlan
    text_field: str
    vector_field: str
    model_id: str | None = None  # the cluster's model id in server mode
    pipeline: str | None = None
    chunking: ChunkingSettings | None = None  # long documents split into nested passages (vector_field inside)
    #: client mode: what embedded the documents (torch, onnx, onnx-int8); recorded by ingest, None: torch (fp32).
    #: Not part of :meth:`to_meta` (deploy must not reset it); ingest writes it with :func:`record_embed_backend`.
    embed_backend: str | None = None

    def __post_init__(self) -> None:
        # field names reach mappings, pipelines and (Elasticsearch exact search) painless source: deploy builds the
        # setup before its first request and from_meta reads untrusted _meta, so both are checked here
        validate_field_name("text", self.text_field)
        validate_field_name("vector", self.vector_field)

    def to_meta(self) -> dict:
        spec = {k: v for k, v in self.spec.to_dict().items() if k != "extra"}
        chunking = {"chunking": self.chunking.to_dict()} if self.chunking else {}
        return {
            **chunking,
            "model": spec,
            "mode": self.mode.value,
            "prefixes": self.plan.to_dict(),
            "text_field": self.text_field,
            "vector_field": self.vector_field,
            "model_id": self.model_id,
            "pipeline": self.pipeline,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> IndexSetup:
        return cls(
            spec=ModelSpec(**meta["model"]),
            mode=Mode(meta["mode"]),
            plan=PrefixPlan.from_dict(meta["prefixes"]),
            text_field=meta["text_field"],
            vector_field=meta["vector_field"],
            model_id=meta.get("model_id"),
            pipeline=meta.get("pipeline"),
            chunking=ChunkingSettings.from_dict(meta.get("chunking")),
            embed_backend=meta.get(EMBED_BACKEND_KEY),
        )

    @property
    def embedder_key(self) -> tuple:
        """What a query embedder must match: the model, the prefix plan and the backend that embedded the documents."""
        return (self.spec, self.plan, vector_kind(self.embed_backend))


class SemanticSearch:
    """kNN / hybrid search over one index, server-side or client-side query embedding."""

    def __init__(
        self,
        backend: Backend,
        index: str,
        setup: IndexSetup,
        embedder: Embedder | None = None,
        *,
        model_path: str | None = None,
    ) -> None:
        """``model_path``: where this host keeps the index's model (client mode), see :func:`locate_model`."""
        self.backend = backend
        self.index = index
        self.setup = setup
        self.model_path = model_path
        self._embedder = embedder
        #: the setup the cached embedder was made (or given) for: a setup with another model/backend replaces it
        self._embedder_key: tuple | None = setup.embedder_key if embedder is not None else None
        self._lock = threading.RLock()  # one model load, one reload at a time
        self._serving: str | None = None  # the concrete index the setup was read from (``index`` may be an alias)

    @classmethod
    def for_index(
        cls,
        index: str,
        *,
        backend: Backend | None = None,
        config: ConnectionConfig | None = None,
        embedder: Embedder | None = None,
        model_path: str | None = None,
        **connection: object,
    ) -> SemanticSearch:
        """Connect (``url=...``, ``username=...`` or E5PLUGIN_* variables) and read the index's setup.

        ``model_path`` (or the ``E5PLUGIN_MODEL_DIR`` variable): where this host keeps the model of a client-mode
        index that was deployed from a local directory elsewhere (see :func:`locate_model`)."""
        if backend is None:
            backend = connect(config, **connection)
        meta = backend.index_meta(index)
        if not meta:
            raise ConfigurationError(
                f"Index {index!r} was not set up by e5plugin (no _meta.e5plugin); create it with `e5plugin deploy`."
            )
        helper = cls(backend, index, IndexSetup.from_meta(meta), embedder, model_path=model_path)
        helper._serving = _serving_index(backend, index)
        return helper

    def reload(self) -> None:
        """Re-read the index's setup (after its alias moved to a new model version). The setup is read from the
        concrete index the alias points to now; the next query loads the embedder that setup needs."""
        with self._lock:
            serving = _serving_index(self.backend, self.index)
            meta = self.backend.index_meta(serving or self.index)
            if not meta:
                raise ConfigurationError(
                    f"{self.index!r} now points to {serving!r}, which was not set up by e5plugin (no _meta.e5plugin)."
                )
            self.setup = IndexSetup.from_meta(meta)
            self._serving = serving

    def _switched(self, hit_lists: list[list[Hit]]) -> bool:
        """Whether hits came from another index than the setup was read from: the alias was switched."""
        return bool(self._serving) and any(h.index and h.index != self._serving for hits in hit_lists for h in hits)

    def _setup_changed(self) -> bool:
        """Whether the index (or the alias's target) now has another setup than the one in use."""
        serving = _serving_index(self.backend, self.index)
        if serving != self._serving:
            return True
        meta = self.backend.index_meta(serving or self.index)
        return bool(meta) and IndexSetup.from_meta(meta) != self.setup

    def _retry_after_change(self, exc: Exception) -> None:
        """A search failed: when the index's setup changed under the helper (a rollout with other dims behind the
        alias), reload so the caller can ask again; otherwise raise a clear error (dims) or the original one."""
        if isinstance(exc, _NOT_A_SETUP_CHANGE):
            raise exc  # credentials, permissions, an unreachable cluster, a missing model: nothing to reload
        if self._setup_changed():
            self.reload()
            return
        dims = self.backend.vector_dims(self.backend.get_mapping(self._serving or self.index), self.setup.vector_field)
        if self.setup.mode is Mode.CLIENT and dims is not None and dims != self.setup.spec.dims:
            raise DimensionMismatchError(
                f"Index {self.index!r} holds {dims}-dim vectors in {self.setup.vector_field!r} but its recorded model "
                f"{self.setup.spec.model_id} makes {self.setup.spec.dims}: the index was changed outside e5plugin; "
                "redeploy it (`e5plugin deploy`) or point the alias at a matching index."
            ) from exc
        raise exc

    @property
    def embedder(self) -> Embedder:
        """The local query embedder for the current setup (client mode), loaded once however many threads ask."""
        key = self.setup.embedder_key
        embedder = self._embedder
        if embedder is not None and self._embedder_key == key:
            return embedder
        with self._lock:
            setup = self.setup
            if self._embedder is None or self._embedder_key != setup.embedder_key:
                self._embedder = self._load_embedder(setup)
                self._embedder_key = setup.embedder_key
            return self._embedder

    def _load_embedder(self, setup: IndexSetup) -> Embedder:
        spec = locate_model(setup.spec, self.model_path)
        name, quantize = split_embed_backend(setup.embed_backend)
        return Embedder(spec, plan=setup.plan, backend=name, quantize=quantize)

    # ---- the query vector / text ------------------------------------------------------------------------------
    def _query_input(self, text: str, need_vector: bool = False) -> dict:
        """Either a local vector (client mode) or the text the cluster embeds, prefixed only if the helper must.
        ``need_vector`` (exact search) asks the cluster's model for the vector in server mode."""
        if self.setup.mode is Mode.CLIENT:
            return {"vector": self.query_vector(text)}
        model_text = self.setup.plan.query_text(text, Actor.HELPER)
        if need_vector:
            by_cluster = self.setup.plan.query is Actor.CLUSTER
            return {"vector": self.backend.embed_query(self.setup.model_id, model_text, by_cluster)}
        return {"model_id": self.setup.model_id, "text": model_text}

    def query_vector(self, text: str) -> list[float]:
        return self.embedder.encode_queries([text])[0].tolist()

    # ---- search ---------------------------------------------------------------------------------------------
    def search(
        self,
        text: str,
        k: int = 10,
        *,
        num_candidates: int | None = None,
        filters: list[dict] | dict | None = None,
        source: list[str] | bool | None = None,
        hybrid: bool = False,
        exact: bool = False,
    ) -> list[Hit]:
        """Top ``k`` hits for ``text``. ``filters`` are query clauses (e.g. ``{"term": {"lang": "de"}}``).

        On a chunked index the hits are documents ranked by their best passage, which is in ``hit.passage``. When
        ``index`` is an alias that was switched to a new model version, the helper re-reads the setup and asks
        again, so the query is always embedded by the model of the index that answers it."""
        options = {"num_candidates": num_candidates, "filters": filters, "source": source, "hybrid": hybrid}
        try:
            hits = self._search(text, k, exact=exact, **options)
        except Exception as exc:  # the engine refused the request (e.g. a 400 for a query vector of other dims)
            self._retry_after_change(exc)
            return self._search(text, k, exact=exact, **options)
        if self._switched([hits]):
            self.reload()
            hits = self._search(text, k, exact=exact, **options)
        return hits

    def search_batch(
        self,
        texts: list[str],
        k: int = 10,
        *,
        num_candidates: int | None = None,
        filters: list[dict] | dict | None = None,
        source: list[str] | bool | None = None,
        per_request: int = 100,
    ) -> list[list[Hit]]:
        """``search`` for many texts: query vectors embedded in batches (client mode), searches sent together
        (``_msearch``, ``per_request`` at a time). One list of hits per text, in order."""
        filter_list = [filters] if isinstance(filters, dict) else filters
        candidates = num_candidates or max(100, 10 * k)
        out: list[list[Hit]] = []
        for start in range(0, len(texts), per_request):
            part = texts[start : start + per_request]
            if self.setup.mode is Mode.CLIENT:
                queries = [{"vector": v.tolist()} for v in self.embedder.encode_queries(part)]
            else:
                queries = [self._query_input(text) for text in part]
            bodies = [self._knn_body(q, k, candidates, filter_list, source) for q in queries]
            try:
                found = [self.backend.hits(r) for r in self.backend.msearch(self.index, bodies)]
            except Exception as exc:  # a rollout with other dims behind the alias: reload and ask again
                self._retry_after_change(exc)
                return out + self.search_batch(
                    texts[start:], k, num_candidates=num_candidates, filters=filters, source=source
                )
            if self._switched(found):
                self.reload()
                return out + self.search_batch(
                    texts[start:], k, num_candidates=num_candidates, filters=filters, source=source
                )
            out += found
        return out

    def _knn_body(
        self, query: dict, k: int, candidates: int, filters: list[dict] | None, source, exact: bool = False
    ) -> dict:
        """kNN on the vector field, or on the passages of a chunked index (parents by their best passage)."""
        if self.setup.chunking is not None:
            if exact:
                raise ConfigurationError(
                    f"Exact search is not offered on the chunked index {self.index!r}; use approximate kNN."
                )
            return self.backend.nested_knn_body(
                path=self.setup.chunking.field,
                vector_field=self.setup.vector_field,
                k=k,
                num_candidates=candidates,
                vector=query.get("vector"),
                model_id=query.get("model_id"),
                text=query.get("text"),
                filters=filters,
                source=source,
            )
        return self.backend.knn_body(
            vector_field=self.setup.vector_field,
            k=k,
            num_candidates=candidates,
            vector=query.get("vector"),
            model_id=query.get("model_id"),
            text=query.get("text"),
            filters=filters,
            source=source,
            exact=exact,
        )

    def _search(
        self,
        text: str,
        k: int,
        *,
        num_candidates: int | None,
        filters: list[dict] | dict | None,
        source: list[str] | bool | None,
        hybrid: bool,
        exact: bool,
    ) -> list[Hit]:
        filter_list = [filters] if isinstance(filters, dict) else filters
        candidates = num_candidates or max(100, 10 * k)
        query = self._query_input(text, need_vector=exact)
        if hybrid:
            return self._hybrid(text, query, k, candidates, filter_list, source)
        body = self._knn_body(query, k, candidates, filter_list, source, exact)
        return self.backend.hits(self.backend.search(self.index, body))

    def _hybrid(
        self,
        text: str,
        query: dict,
        k: int,
        candidates: int,
        filters: list[dict] | None,
        source: list[str] | bool | None,
    ) -> list[Hit]:
        window = max(k, min(candidates, 100))
        native = None
        if self.setup.chunking is None:  # engine-side fusion takes a plain vector field; passages fuse client-side
            native = self.backend.native_hybrid_search(
                self.index,
                text=text,
                text_for_model=query.get("text"),
                vector=query.get("vector"),
                model_id=query.get("model_id"),
                text_field=self.setup.text_field,
                vector_field=self.setup.vector_field,
                k=k,
                window=window,
                num_candidates=candidates,
                filters=filters,
                source=source,
            )
        if native is not None:
            return native
        knn_body = self._knn_body(query, window, candidates, filters, source)
        bm25_body = self.backend.bm25_body(
            text, text_field=self.setup.text_field, size=window, filters=filters, source=source
        )
        knn_hits = self.backend.hits(self.backend.search(self.index, knn_body))
        bm25_hits = self.backend.hits(self.backend.search(self.index, bm25_body))
        return reciprocal_rank_fusion([knn_hits, bm25_hits], k=k)


def split_embed_backend(label: str | None) -> tuple[str, str | None]:
    """(backend, quantize) for :class:`Embedder` from a recorded label: ``torch``, ``onnx``, ``onnx-int8``.

    torch and fp32 ONNX give the same vectors (cosine 1.000000), so either label loads ``fp32``: the fastest
    runtime at hand on this host. Only int8 (other vectors) must be matched exactly."""
    name, quantize = parse_backend_label(label or "torch")
    return (name, quantize) if quantize else ("fp32", None)


def vector_kind(label: str | None) -> str:
    """What a recorded backend label means for the vectors: ``fp32`` (torch, onnx) or ``int8`` (onnx-int8)."""
    return "int8" if (label or "").endswith("-int8") else "fp32"


def record_embed_backend(backend: Backend, index: str, embedder: Embedder) -> None:
    """Record in the index's ``_meta`` what embeds its documents (client mode), so the query helper embeds queries
    with the same kind of vectors. Absent means torch: an ingest into an index without a record writes nothing
    (a mapping update an ingest-only role may lack); torch and fp32 ONNX are one (the same vectors), so only a switch
    between fp32 and int8 writes, once per index and switch."""
    meta = backend.index_meta(index)
    if not meta or vector_kind(meta.get(EMBED_BACKEND_KEY, "torch")) == vector_kind(embedder.label):
        return
    try:
        backend.update_index_meta(index, {EMBED_BACKEND_KEY: embedder.label})
    except E5PluginError as exc:
        raise type(exc)(
            f"{exc} Recording that {index!r} is embedded with {embedder.label} (so queries use it too) is a mapping "
            "update (Elasticsearch: the `index` or `manage` privilege); ingest with the recorded backend "
            f"({meta.get(EMBED_BACKEND_KEY, 'torch')}) or let an admin run the first ingest."
        ) from exc


def locate_model(spec: ModelSpec, model_path: str | None = None) -> ModelSpec:
    """The index's model as this host has it, checked against the weights hash the index recorded.

    Looked for, in order: ``model_path`` (argument), then ``E5PLUGIN_MODEL_DIR`` -- either the model directory itself
    or a folder holding it under the recorded directory's name (or the hub id's last part); then the recorded local
    path; then the hub id (from the model pull manifest, or a known model), loaded from the Hugging Face cache or
    downloaded. A directory whose weights differ from the recorded ``weights_sha256`` is refused."""
    given = model_path or os.environ.get(MODEL_DIR_ENV)
    if given:
        base = Path(given).expanduser()
        names = [n for n in (Path(spec.local_path or "").name, spec.model_id.rstrip("/").split("/")[-1]) if n]
        for candidate in [base, *(base / name for name in names)]:
            if (candidate / "config.json").is_file():
                return _checked_copy(spec, candidate)
        source = "model_path" if model_path else MODEL_DIR_ENV
        raise ConfigurationError(
            f"{source}={given} holds no model directory for {spec.model_id} (looked for config.json there and in "
            f"{', '.join(names)})."
        )
    if not spec.local_path:
        return spec
    if (Path(spec.local_path) / "config.json").is_file():
        return _checked_copy(spec, Path(spec.local_path))
    hub_id = spec.model_id if (spec.revision or spec.model_id in KNOWN_MODELS) else None
    if hub_id is None:
        raise ConfigurationError(
            f"The model of this index was deployed from {spec.local_path}, which this host does not have: copy that "
            f"directory here and pass SemanticSearch.for_index(..., model_path=DIR) or set {MODEL_DIR_ENV}=DIR."
        )
    from .models import download_model

    return _checked_copy(spec, download_model(hub_id, revision=spec.revision))


def _checked_copy(spec: ModelSpec, directory: Path) -> ModelSpec:
    """``spec`` loaded from ``directory``, refused when its weights are not the ones the index was built with."""
    if spec.weights_sha256:
        actual = weights_sha256(directory)
        if actual != spec.weights_sha256:
            raise ConfigurationError(
                f"The model at {directory} is not the one the index was built with: weights sha256 "
                f"{(actual or 'none')[:16]}... != recorded {spec.weights_sha256[:16]}...; its query vectors would not "
                "match the stored ones. Use a copy of the deployed model (e.g. `e5plugin model pull` at the recorded "
                "revision)."
            )
    return replace(spec, local_path=str(directory.resolve()))


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, rank_constant: int = RRF_RANK_CONSTANT) -> list[Hit]:
    """Client-side RRF: score = sum over rankings of 1 / (rank_constant + rank)."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (rank_constant + rank)
            first.setdefault(hit.id, hit)
    ordered = sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))[:k]
    return [
        Hit(id=d, score=scores[d], source=first[d].source, index=first[d].index, passages=first[d].passages)
        for d in ordered
    ]


def _serving_index(backend: Backend, index: str) -> str | None:
    """The one concrete index behind ``index`` (itself, or an alias's single target); None for several."""
    targets = backend.alias_indices(index)
    if not targets:
        return index
    return targets[0] if len(targets) == 1 else None
