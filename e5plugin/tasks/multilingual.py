"""Multilingual and cross-lingual search with multilingual E5: one index, many languages, language filters.

Multilingual E5 (``intfloat/multilingual-e5-small/base/large``) maps a sentence and its translation close together,
so a query in one language finds passages in another without translating anything. Every document carries its
language code in a ``lang`` field (mapped as ``keyword`` by ``deploy``), and :class:`MultilingualSearch` filters on
it inside the kNN search (pre-filtering: ``k`` hits of the wanted languages, not ``k`` hits filtered afterwards)::

    search = MultilingualSearch.for_index("docs", url="http://localhost:9200")
    search.search("Wie setze ich mein Passwort zurück?", k=5, languages=["en"])      # German query, English docs
    search.search("password reset", k=5, exclude_languages=["en"])                    # English query, other docs

Prefixes are the index's plan as for any search (``query: `` for the query, ``passage: `` at ingest).

:func:`bitext_retrieval` measures it through the cluster the way Tatoeba bitext mining does (MTEB): for every
sentence of a language, its translation is retrieved among the target-language sentences; accuracy@1 and MTEB's F1
(sklearn's weighted F1 over the gold indices) per language.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engines.base import Backend, Hit
from ..search import SemanticSearch

LANG_FIELD = "lang"


def language_filter(languages: str | Sequence[str], field: str = LANG_FIELD) -> dict:
    """A filter clause: documents in one of ``languages`` (codes as stored, e.g. ``en``, ``de``)."""
    codes = [languages] if isinstance(languages, str) else list(languages)
    return {"term": {field: codes[0]}} if len(codes) == 1 else {"terms": {field: codes}}


def exclude_languages_filter(languages: str | Sequence[str], field: str = LANG_FIELD) -> dict:
    return {"bool": {"must_not": [language_filter(languages, field)]}}


class MultilingualSearch:
    """:class:`~e5plugin.search.SemanticSearch` with language filters on the documents' ``lang`` field."""

    def __init__(self, helper: SemanticSearch, lang_field: str = LANG_FIELD) -> None:
        self.helper = helper
        self.lang_field = lang_field

    @classmethod
    def for_index(cls, index: str, *, lang_field: str = LANG_FIELD, **kwargs: object) -> MultilingualSearch:
        """Arguments as :meth:`SemanticSearch.for_index` (``backend=``, ``url=``, ``embedder=``, ...)."""
        return cls(SemanticSearch.for_index(index, **kwargs), lang_field)  # type: ignore[arg-type]

    def filters(
        self,
        languages: str | Sequence[str] | None = None,
        exclude_languages: str | Sequence[str] | None = None,
        filters: list[dict] | dict | None = None,
    ) -> list[dict] | None:
        out = [filters] if isinstance(filters, dict) else list(filters or [])
        if languages:
            out.append(language_filter(languages, self.lang_field))
        if exclude_languages:
            out.append(exclude_languages_filter(exclude_languages, self.lang_field))
        return out or None

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        languages: str | Sequence[str] | None = None,
        exclude_languages: str | Sequence[str] | None = None,
        filters: list[dict] | dict | None = None,
        **options: object,
    ) -> list[Hit]:
        """Top ``k`` documents in ``languages`` (any language when None), whatever the language of ``text``."""
        return self.helper.search(text, k, filters=self.filters(languages, exclude_languages, filters), **options)  # type: ignore[arg-type]

    def search_batch(
        self,
        texts: list[str],
        k: int = 10,
        *,
        languages: str | Sequence[str] | None = None,
        exclude_languages: str | Sequence[str] | None = None,
        filters: list[dict] | dict | None = None,
        **options: object,
    ) -> list[list[Hit]]:
        return self.helper.search_batch(
            texts, k, filters=self.filters(languages, exclude_languages, filters), **options
        )  # type: ignore[arg-type]


# ---- evaluation: bitext retrieval through the cluster (Tatoeba) ------------------------------------------------------
@dataclass
class BitextResult:
    language: str
    pairs: int
    accuracy: float  # accuracy@1: the translation is the top hit
    f1: float  # MTEB's bitext-mining F1 (weighted over the gold sentences)
    query_seconds: float
    predictions: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "language": self.language,
            "pairs": self.pairs,
            "accuracy@1": round(self.accuracy, 4),
            "f1": round(self.f1, 4),
            "query_ms": round(1000 * self.query_seconds / max(self.pairs, 1), 2),
        }


def bitext_scores(gold: Sequence[int], predicted: Sequence[int]) -> tuple[float, float]:
    """(accuracy, F1) as MTEB's bitext mining reports them: F1 per gold class, weighted by its support
    (sklearn ``f1_score(average="weighted")``)."""
    if not gold:
        return 0.0, 0.0
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    support: dict[int, int] = {}
    predicted_count: dict[int, int] = {}
    correct: dict[int, int] = {}
    for g, p in zip(gold, predicted, strict=True):
        support[g] = support.get(g, 0) + 1
        predicted_count[p] = predicted_count.get(p, 0) + 1
        if g == p:
            correct[g] = correct.get(g, 0) + 1
    total = 0.0
    for label, count in support.items():
        tp = correct.get(label, 0)
        denominator = count + predicted_count.get(label, 0)  # 2TP + FP + FN
        total += count * (2 * tp / denominator if denominator else 0.0)
    return accuracy, total / len(gold)


def bitext_documents(
    pair: str, sources: Sequence[str], targets: Sequence[str], *, source_lang: str, target_lang: str
) -> list[dict]:
    """Index documents for one language pair: the target sentences (ids ``<pair>-t-<i>``) and, so that the
    language filter has something to exclude, the source sentences too (``<pair>-s-<i>``)."""
    docs = [{"id": f"{pair}-t-{i}", "text": t, "lang": target_lang, "pair": pair} for i, t in enumerate(targets)]
    docs += [{"id": f"{pair}-s-{i}", "text": s, "lang": source_lang, "pair": pair} for i, s in enumerate(sources)]
    return docs


def bitext_retrieval(
    search: MultilingualSearch,
    pair: str,
    sources: Sequence[str],
    *,
    target_lang: str,
    pair_field: str = "pair",
) -> BitextResult:
    """For each source sentence (a query in its language), the top target-language document of the same pair
    through the cluster; sentence ``i``'s translation is document ``<pair>-t-<i>``."""
    started = time.perf_counter()
    results = search.search_batch(
        list(sources), k=1, languages=target_lang, filters={"term": {pair_field: pair}}, source=False
    )
    seconds = time.perf_counter() - started
    predicted = [_target_index(hits[0].id) if hits else -1 for hits in results]
    gold = list(range(len(sources)))
    accuracy, f1 = bitext_scores(gold, predicted)
    return BitextResult(pair, len(sources), accuracy, f1, seconds, predicted)


def _target_index(doc_id: str) -> int:
    head, _, number = doc_id.rpartition("-t-")
    return int(number) if head and number.isdigit() else -1


def index_languages(backend: Backend, index: str, lang_field: str = LANG_FIELD, size: int = 100) -> dict[str, int]:
    """Documents per language code in an index (a terms aggregation)."""
    body = {"size": 0, "aggs": {"langs": {"terms": {"field": lang_field, "size": size}}}}
    response = backend.search(index, body)
    return {b["key"]: b["doc_count"] for b in response["aggregations"]["langs"]["buckets"]}
