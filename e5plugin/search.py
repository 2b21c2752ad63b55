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
from .tasks.chunking import ChunkingSettings

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
    chunking: ChunkingSettings | None = None  # long documents split into nested passages (vector_field inside)

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
        )


class SemanticSearch:
    """kNN / hybrid search over one index, server-side or client-side query embedding."""

    def __init__(self, backend: Backend, index: str, setup: IndexSetup, embedder: Embedder | None = None) -> None:
        self.backend = backend
        self.index = index
        self.setup = setup
        self._embedder = embedder
        self._serving: str | None = None  # the concrete index the setup was read from (``index`` may be an alias)

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
        helper = cls(backend, index, IndexSetup.from_meta(meta), embedder)
        helper._serving = _serving_index(backend, index)
        return helper

    def reload(self) -> None:
        """Re-read the index's setup (after its alias moved to a new model version); a local embedder for another
        model is dropped."""
        setup = IndexSetup.from_meta(self.backend.index_meta(self.index))
        if self._embedder is not None and setup.spec != self.setup.spec:
            self._embedder = None
        self.setup = setup
        self._serving = _serving_index(self.backend, self.index)

    def _switched(self, hit_lists: list[list[Hit]]) -> bool:
        """Whether hits came from another index than the setup was read from: the alias was switched."""
        return bool(self._serving) and any(h.index and h.index != self._serving for hits in hit_lists for h in hits)

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
        """Top ``k`` hits for ``text``. ``filters`` are query clauses (e.g. ``{"term": {"lang": "de"}}``).

        On a chunked index the hits are documents ranked by their best passage, which is in ``hit.passage``. When
        ``index`` is an alias that was switched to a new model version, the helper re-reads the setup and asks
        again, so the query is always embedded by the model of the index that answers it."""
        options = {"num_candidates": num_candidates, "filters": filters, "source": source, "hybrid": hybrid}
        hits = self._search(text, k, exact=exact, **options)
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
            found = [self.backend.hits(r) for r in self.backend.msearch(self.index, bodies)]
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
