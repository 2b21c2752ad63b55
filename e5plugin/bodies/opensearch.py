"""OpenSearch request bodies (2.x and 3.x): k-NN index, text_embedding pipeline, neural/knn, hybrid."""

from __future__ import annotations

from ..models import ModelSpec
from ..prefixes import Actor, PrefixPlan
from . import (
    PASSAGE_TMP_FIELD,
    PASSAGES_CLEANUP_SCRIPT,
    PASSAGES_PREFIX_SCRIPT,
    add_keyword_fields,
    clear_marker_processor,
    e5plugin_meta,
    index_template,
    nest_passages,
    on_failure_processors,
    rename_fields,
    text_processor,
)

#: hnsw: Lucene HNSW over float vectors; hnsw_sq: the same with Lucene's int8 scalar quantization (2.16+).
INDEX_OPTIONS = ("hnsw", "hnsw_sq")
#: Lucene's 7-bit scalar quantizer (OpenSearch 3.6+ refuses an sq encoder without ``bits``), its quantiles over
#: the full range of the values: E5's unit vectors sit in a narrow cone, and with Lucene's default interval
#: (1 - 1/(d+1)) merged segments lose recall. e5-small-v2 vectors, recall@10 before -> after a force merge: 100k
#: in 5 segments 0.82 -> 0.69 (default) and 0.95 -> 0.94 (1.0); 1M on 3 shards 0.05 after it (BENCHMARKS section 6).
SQ_ENCODER_PARAMETERS = {"bits": 7, "confidence_interval": 1.0}


def sq_encoder(field_mapping: dict) -> dict | None:
    """The Lucene scalar-quantizer encoder of a ``knn_vector`` field's mapping (``hnsw_sq``); ``None`` without one."""
    encoder = field_mapping.get("method", {}).get("parameters", {}).get("encoder", {})
    return encoder if encoder.get("name") == "sq" else None


SPACE_TYPE = "cosinesimil"  # scores (1 + cos) / 2, the same scale as Elasticsearch's cosine/dot_product


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
) -> dict:
    """``nested``: the passages field of a chunked index (``vector_field`` then lies inside it)."""
    if index_options not in INDEX_OPTIONS:
        raise ValueError(f"index_options must be one of {', '.join(INDEX_OPTIONS)}, not {index_options!r}")
    body = index_template("opensearch")
    props = body["mappings"]["properties"]
    vector = props["embedding"]
    vector["dimension"] = spec.dims
    vector["method"]["space_type"] = SPACE_TYPE
    if index_options == "hnsw_sq":
        vector["method"]["parameters"]["encoder"] = {"name": "sq", "parameters": dict(SQ_ENCODER_PARAMETERS)}
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


#: documents per ml-commons inference call in the ``text_embedding`` processor (OpenSearch's default: 1).
#: Measured (BENCHMARKS.md, server rows): 16 is 3 % faster than 1 on SciFact; 64 is slower (more padding).
PROCESSOR_BATCH_SIZE = 16


def pipeline_body(
    model_id: str,
    plan: PrefixPlan,
    *,
    text_field: str,
    vector_field: str,
    batch_size: int | None = PROCESSOR_BATCH_SIZE,
) -> dict:
    """A ``text_embedding`` pipeline; prefixes into a temporary field only when the cluster cannot."""
    prefixed_here = plan.ingest is Actor.PIPELINE
    source = PASSAGE_TMP_FIELD if prefixed_here else text_field
    embed: dict = {"model_id": model_id, "field_map": {source: vector_field}}
    if batch_size:
        embed["batch_size"] = batch_size
    processors: list[dict] = [clear_marker_processor(), text_processor(plan, text_field)]
    processors.append({"text_embedding": embed})
    if prefixed_here:
        processors.append({"remove": {"field": PASSAGE_TMP_FIELD, "ignore_missing": True}})
    return {
        "description": f"e5plugin: embed {text_field} into {vector_field} with {model_id}",
        "processors": processors,
        "on_failure": on_failure_processors(),
    }


def chunked_pipeline_body(
    model_id: str,
    plan: PrefixPlan,
    *,
    text_field: str,
    passages_field: str,
    vector_field: str,
    batch_size: int | None = None,
) -> dict:
    """A ``text_embedding`` pipeline over the nested passages e5plugin split at ingest (a nested field map: every
    passage's ``text`` into its ``vector_field``). ``passage: `` comes from the model config, or, where the cluster
    cannot add it, from a script that writes prefix + text into a temporary field of each passage."""
    prefixed_here = plan.ingest is Actor.PIPELINE
    check = text_processor(plan, text_field)
    check["script"]["params"].update({"target": None, "prefix": ""})  # validate the whole text only
    source = PASSAGE_TMP_FIELD if prefixed_here else "text"
    params = {"field": passages_field, "target": PASSAGE_TMP_FIELD, "prefix": plan.passage_prefix}
    embed: dict = {"model_id": model_id, "field_map": {passages_field: {source: vector_field}}}
    if batch_size:
        embed["batch_size"] = batch_size
    processors: list[dict] = [clear_marker_processor(), check]
    if prefixed_here:
        processors.append({"script": {"lang": "painless", "source": PASSAGES_PREFIX_SCRIPT, "params": params}})
    processors.append({"text_embedding": embed})
    if prefixed_here:
        processors.append({"script": {"lang": "painless", "source": PASSAGES_CLEANUP_SCRIPT, "params": params}})
    cleanup = {"script": {"lang": "painless", "source": PASSAGES_CLEANUP_SCRIPT, "params": params}}
    return {
        "description": f"e5plugin: embed the passages of {text_field} into {passages_field}.{vector_field} with "
        f"{model_id}",
        "processors": processors,
        "on_failure": on_failure_processors(cleanup if prefixed_here else None),
    }


def knn_query(
    *,
    vector_field: str,
    k: int,
    vector: list[float] | None = None,
    model_id: str | None = None,
    text: str | None = None,
    filter: dict | None = None,
) -> dict:
    """``knn`` with a client-side vector, or ``neural`` where the cluster embeds the text."""
    if vector is not None:
        clause: dict = {"vector": list(vector), "k": k}
        kind = "knn"
    else:
        clause = {"query_text": text, "model_id": model_id, "k": k}
        kind = "neural"
    if filter:
        clause["filter"] = filter
    return {kind: {vector_field: clause}}


def nested_query(query: dict, *, path: str, vector_field: str, passages: int = 1) -> dict:
    """A kNN/neural query on a nested vector (``vector_field``, full path): parents scored by their best passage,
    which ``inner_hits`` returns without its vector."""
    inner = {"size": passages, "_source": {"excludes": [vector_field]}}
    return {"nested": {"path": path, "score_mode": "max", "query": query, "inner_hits": inner}}


def exact_query(*, vector_field: str, vector: list[float], filter: dict | None = None) -> dict:
    """Brute-force scoring with the k-NN plugin's ``knn_score`` script (no approximation)."""
    return {
        "script_score": {
            "query": filter or {"match_all": {}},
            "script": {
                "source": "knn_score",
                "lang": "knn",
                "params": {"field": vector_field, "query_value": list(vector), "space_type": SPACE_TYPE},
            },
        }
    }


def bm25_query(text: str, *, text_field: str, filter: dict | None = None) -> dict:
    return {"bool": {"must": [{"match": {text_field: text}}], "filter": [filter] if filter else []}}


def search_body(query: dict, *, size: int, source: list[str] | bool | None = None) -> dict:
    body: dict = {"query": query, "size": size}
    if source is not None:
        body["_source"] = source
    return body


def hybrid_query(bm25: dict, knn: dict) -> dict:
    return {"hybrid": {"queries": [bm25, knn]}}


def hybrid_search_pipeline_body(technique: str = "rrf", weights: tuple[float, float] = (0.3, 0.7)) -> dict:
    """A search pipeline that fuses the hybrid query's sub-queries: RRF (2.19+) or min-max normalization."""
    if technique == "rrf":
        processor = {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}}
    else:
        processor = {
            "normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": list(weights)}},
            }
        }
    return {"description": "e5plugin: hybrid BM25 + kNN fusion", "phase_results_processors": [processor]}
