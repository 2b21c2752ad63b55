"""Elasticsearch request bodies (8.x and 9.x): index, inference pipeline, kNN, hybrid."""

from __future__ import annotations

from ..models import ModelSpec
from ..prefixes import Actor, PrefixPlan
from . import (
    PASSAGE_TMP_FIELD,
    add_keyword_fields,
    clear_marker_processor,
    e5plugin_meta,
    index_template,
    nest_passages,
    on_failure_processors,
    rename_fields,
    text_processor,
)

INDEX_OPTIONS = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat")


def index_body(
    spec: ModelSpec,
    *,
    text_field: str = "text",
    vector_field: str = "embedding",
    index_options: str = "hnsw",
    pipeline: str | None = None,
    meta: dict | None = None,
    replicas: int | None = None,
    nested: str | None = None,
    keyword_fields: tuple[str, ...] = (),
    similarity: str | None = None,
) -> dict:
    """``nested``: the passages field of a chunked index (``vector_field`` then lies inside it). ``similarity``:
    what the vectors allow (default: from the spec; ``dot_product`` needs unit-length vectors)."""
    if index_options not in INDEX_OPTIONS:
        raise ValueError(f"index_options must be one of {', '.join(INDEX_OPTIONS)}, not {index_options!r}")
    body = index_template("elasticsearch")
    props = body["mappings"]["properties"]
    vector = props["embedding"]
    vector["dims"] = spec.dims
    vector["similarity"] = similarity or spec.similarity
    options = vector["index_options"]
    options["type"] = index_options
    if "hnsw" not in index_options:
        options.pop("m"), options.pop("ef_construction")
    body["mappings"]["properties"] = rename_fields(props, text_field, vector_field)
    if nested:
        nest_passages(body["mappings"]["properties"], nested)
    add_keyword_fields(body["mappings"]["properties"], keyword_fields)
    body["mappings"]["_meta"] = e5plugin_meta(**(meta or {}))
    if pipeline:
        body["settings"]["index"]["default_pipeline"] = pipeline
    if replicas is not None:
        body["settings"]["index"]["number_of_replicas"] = replicas
    return body


def pipeline_body(
    model_id: str, plan: PrefixPlan, *, text_field: str, vector_field: str, input_output: bool = True
) -> dict:
    """An ``inference`` pipeline. When the cluster adds ``passage: `` (prefix_strings) the text goes in as is;
    otherwise a script writes prefix + text into a temporary field, which is embedded and removed."""
    prefixed_here = plan.ingest is Actor.PIPELINE
    source = PASSAGE_TMP_FIELD if prefixed_here else text_field
    if input_output:
        inference = {"model_id": model_id, "input_output": [{"input_field": source, "output_field": vector_field}]}
    else:
        inference = {
            "model_id": model_id,
            "target_field": f"_e5plugin_inference.{vector_field}",
            "field_map": {source: "text_field"},
        }
    processors: list[dict] = [clear_marker_processor(), text_processor(plan, text_field)]
    processors.append({"inference": inference})
    if not input_output:
        processors += [
            {"rename": {"field": f"_e5plugin_inference.{vector_field}.predicted_value", "target_field": vector_field}},
            {"remove": {"field": "_e5plugin_inference", "ignore_missing": True}},
        ]
    if prefixed_here:
        processors.append({"remove": {"field": PASSAGE_TMP_FIELD, "ignore_missing": True}})
    return {
        "description": f"e5plugin: embed {text_field} into {vector_field} with {model_id}",
        "processors": processors,
        "on_failure": on_failure_processors(),
    }


def knn_clause(
    *,
    vector_field: str,
    k: int,
    num_candidates: int,
    vector: list[float] | None = None,
    model_id: str | None = None,
    text: str | None = None,
    filter: list[dict] | None = None,
) -> dict:
    """``vector`` (client-side) or ``model_id`` + ``text`` (the cluster embeds, adding its search prefix)."""
    clause: dict = {"field": vector_field, "k": k, "num_candidates": max(num_candidates, k)}
    if vector is not None:
        clause["query_vector"] = list(vector)
    else:
        clause["query_vector_builder"] = {"text_embedding": {"model_id": model_id, "model_text": text}}
    if filter:
        clause["filter"] = filter
    return clause


def nested_knn_clause(knn: dict, *, path: str, passages: int = 1) -> dict:
    """kNN on a nested vector: parents ranked by their best passage, the best ``passages`` in ``inner_hits``."""
    inner = {"size": passages, "_source": [f"{path}.text", f"{path}.start", f"{path}.end"]}
    return {**knn, "inner_hits": inner}


def knn_search_body(knn: dict, *, source: list[str] | bool | None = None) -> dict:
    body: dict = {"knn": knn, "size": knn["k"]}
    if source is not None:
        body["_source"] = source
    return body


def bm25_search_body(
    text: str, *, text_field: str, size: int, filter: list[dict] | None = None, source: list[str] | bool | None = None
) -> dict:
    query: dict = {"bool": {"must": [{"match": {text_field: text}}], "filter": filter or []}}
    body: dict = {"query": query, "size": size}
    if source is not None:
        body["_source"] = source
    return body


def rrf_search_body(
    text: str,
    knn: dict,
    *,
    text_field: str,
    size: int,
    filter: list[dict] | None = None,
    rank_window_size: int = 100,
    rank_constant: int = 60,
    source: list[str] | bool | None = None,
) -> dict:
    """Hybrid BM25 + kNN with the ``rrf`` retriever (needs a licence that includes it)."""
    bm25 = {"bool": {"must": [{"match": {text_field: text}}], "filter": filter or []}}
    body: dict = {
        "retriever": {
            "rrf": {
                "retrievers": [{"standard": {"query": bm25}}, {"knn": knn}],
                "rank_window_size": max(rank_window_size, size),
                "rank_constant": rank_constant,
            }
        },
        "size": size,
    }
    if source is not None:
        body["_source"] = source
    return body


#: exact kNN scored like the ``cosine`` similarity of a kNN search, (1 + cos) / 2; the field is a parameter
EXACT_SCORE_SCRIPT = "(cosineSimilarity(params.query_vector, params.field) + 1.0) / 2.0"


def exact_search_body(
    *,
    vector_field: str,
    vector: list[float],
    k: int,
    filters: list[dict] | None = None,
    source: list[str] | bool | None = None,
) -> dict:
    """Brute-force search (a ``script_score`` over every document that passes ``filters``); the vector field
    travels in the script's params, never in its source (needs the ``lang-painless`` module)."""
    script = {"source": EXACT_SCORE_SCRIPT, "params": {"query_vector": list(vector), "field": vector_field}}
    body: dict = {"query": {"script_score": {"query": {"bool": {"filter": filters or []}}, "script": script}}}
    body["size"] = k
    if source is not None:
        body["_source"] = source
    return body
