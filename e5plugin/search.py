"""The query helper app code imports: semantic (kNN) and hybrid search with the E5 query prefix handled.

    from e5plugin import SemanticSearch
    search = SemanticSearch.for_index("faq", url="http://localhost:9200")
    for hit in search.search("how do I reset my password?", k=5):
        print(hit.score, hit.source["text"])

What the index was built with (model, mode, fields, who adds prefixes) is read from the index's ``_meta``, so
the helper adds ``query: `` exactly when neither the cluster nor anyone else does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConnectionConfig
from .embed import Embedder
from .engines import connect
from .engines.base import Backend, Hit
from .errors import ConfigurationError
from .models import ModelSpec
from .prefixes import Actor, Mode, PrefixPlan

RRF_RANK_CONSTANT = 60


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

    def to_meta(self) -> dict:
        spec = {k: v for k, v in self.spec.to_dict().items() if k != "extra"}
        return {
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
        )


class SemanticSearch:
    """kNN / hybrid search over one index, server-side or client-side query embedding."""

    def __init__(self, backend: Backend, index: str, setup: IndexSetup, embedder: Embedder | None = None) -> None:
        self.backend = backend
        self.index = index
        self.setup = setup
        self._embedder = embedder

    @classmethod
    def for_index(
        cls,
        index: str,
        *,
        backend: Backend | None = None,
        config: ConnectionConfig | None = None,
        embedder: Embedder | None = None,
        **connection: object,
    ) -> SemanticSearch:
        """Connect (``url=...``, ``username=...`` or E5PLUGIN_* variables) and read the index's setup."""
        if backend is None:
            if "url" in connection:
                connection["urls"] = [connection.pop("url")]
            backend = connect(config, **connection)
        meta = backend.index_meta(index)
        if not meta:
            raise ConfigurationError(
                f"Index {index!r} was not set up by e5plugin (no _meta.e5plugin); create it with `e5plugin deploy`."
            )
        return cls(backend, index, IndexSetup.from_meta(meta), embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.setup.spec, plan=self.setup.plan)
        return self._embedder

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
        """Top ``k`` hits for ``text``. ``filters`` are query clauses (e.g. ``{"term": {"lang": "de"}}``)."""
        filter_list = [filters] if isinstance(filters, dict) else filters
        candidates = num_candidates or max(100, 10 * k)
        query = self._query_input(text, need_vector=exact)
        if hybrid:
            return self._hybrid(text, query, k, candidates, filter_list, source)
        body = self.backend.knn_body(
            vector_field=self.setup.vector_field,
            k=k,
            num_candidates=candidates,
            vector=query.get("vector"),
            model_id=query.get("model_id"),
            text=query.get("text"),
            filters=filter_list,
            source=source,
            exact=exact,
        )
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
        knn_body = self.backend.knn_body(
            vector_field=self.setup.vector_field,
            k=window,
            num_candidates=candidates,
            vector=query.get("vector"),
            model_id=query.get("model_id"),
            text=query.get("text"),
            filters=filters,
            source=source,
        )
        bm25_body = self.backend.bm25_body(
            text, text_field=self.setup.text_field, size=window, filters=filters, source=source
        )
        knn_hits = self.backend.hits(self.backend.search(self.index, knn_body))
        bm25_hits = self.backend.hits(self.backend.search(self.index, bm25_body))
        return reciprocal_rank_fusion([bm25_hits, knn_hits], k=k)


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, rank_constant: int = RRF_RANK_CONSTANT) -> list[Hit]:
    """Client-side RRF: score = sum over rankings of 1 / (rank_constant + rank)."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (rank_constant + rank)
            first.setdefault(hit.id, hit)
    ordered = sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))[:k]
    return [Hit(id=d, score=scores[d], source=first[d].source, index=first[d].index) for d in ordered]
