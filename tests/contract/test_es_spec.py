"""Tests of the spec-backed request validator itself (``es_spec``), on the endpoints e5plugin uses."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
import tarfile
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from . import es_spec as es_spec_module
from .es_spec import SPEC_VERSION, Spec, SpecUnavailableError, load_spec

# -------------------- helpers


def assert_valid(spec: Spec, endpoint: str, body: Any = None, **kwargs: Any) -> None:
    errors = spec.validate_request(endpoint, body, **kwargs)
    assert errors == [], "\n".join(errors)


def assert_error(spec: Spec, endpoint: str, body: Any, *fragments: str, **kwargs: Any) -> list[str]:
    """The request is invalid, and one error message contains all ``fragments``."""
    errors = spec.validate_request(endpoint, body, **kwargs)
    assert any(all(f in e for f in fragments) for e in errors), f"no error with {fragments} in {errors}"
    return errors


def edited(body: dict, dotted: str, value: Any, *, delete: bool = False) -> dict:
    """Deep copy of ``body`` with ``value`` set at ``dotted`` (list indices as digits), or that key deleted."""
    out = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    else:
        node[key] = value
    return out


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -------------------- loading


def test_load_spec_downloads_once_then_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        spec = load_spec(tmp_path)
    except SpecUnavailableError as exc:
        pytest.skip(f"npm registry unreachable: {exc}")
    assert (tmp_path / f"request-converter-{SPEC_VERSION}-schema.json").is_file()
    assert spec.model["_info"]["title"] == "Elasticsearch Request & Response Specification"
    assert "ml.put_trained_model" in spec.endpoints

    def offline(url: str) -> bytes:
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(es_spec_module, "_fetch", offline)
    assert load_spec(tmp_path) is spec  # cached file, parsed once per process


def test_integrity_mismatch_is_an_error_not_a_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _tarball({"package/dist/schema.json": b'{"types": [], "endpoints": []}'})
    monkeypatch.setattr(es_spec_module, "_fetch", lambda url: fake)
    with pytest.raises(ValueError, match="integrity mismatch"):
        load_spec(tmp_path)
    assert not list(tmp_path.iterdir())


def test_extracts_schema_when_integrity_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _tarball({"package/dist/schema.json": b'{"types": [], "endpoints": [], "_info": {"title": "x"}}'})
    monkeypatch.setattr(es_spec_module, "_fetch", lambda url: fake)
    monkeypatch.setattr(
        es_spec_module, "SPEC_INTEGRITY", "sha512-" + base64.b64encode(hashlib.sha512(fake).digest()).decode()
    )
    assert load_spec(tmp_path).model["_info"] == {"title": "x"}


def test_unreachable_registry_raises_spec_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(es_spec_module.urllib.request, "urlopen", refuse)
    with pytest.raises(SpecUnavailableError, match="connection refused"):
        es_spec_module._fetch(es_spec_module.tarball_url())


def test_tarball_url_is_the_registry_tarball(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("npm_config_registry", raising=False)
    monkeypatch.delenv("NPM_CONFIG_REGISTRY", raising=False)
    assert es_spec_module.tarball_url() == (
        f"https://registry.npmjs.org/@elastic/request-converter/-/request-converter-{SPEC_VERSION}.tgz"
    )


# -------------------- generic checks


def test_unknown_endpoint_is_a_programming_error(es_spec: Spec) -> None:
    with pytest.raises(KeyError, match=re.escape("did you mean 'ml.put_trained_model'")):
        es_spec.validate_request("ml.put_trained_modle", {})


def test_body_presence_rules(es_spec: Spec) -> None:
    assert_error(es_spec, "ml.put_trained_model_vocabulary", None, "body", "required")
    assert_error(es_spec, "indices.delete", {"x": 1}, "takes no request body")
    assert_valid(es_spec, "indices.delete", None, path={"index": "idx"})
    assert_error(es_spec, "ml.put_trained_model", ["not", "an", "object"], "expected object")


def test_common_query_parameters_and_string_forms(es_spec: Spec) -> None:
    query = {"pretty": "", "human": "true", "error_trace": False, "filter_path": "a.b,c"}
    assert_valid(es_spec, "indices.delete", None, query=query)
    assert_error(es_spec, "indices.delete", None, "query.pretty", "expected boolean", query={"pretty": "yes"})


def test_find_endpoint(es_spec: Spec) -> None:
    assert es_spec.find_endpoint("PUT", "/_ml/trained_models/my-e5/definition/3") == (
        "ml.put_trained_model_definition_part",
        {"model_id": "my-e5", "part": "3"},
    )
    assert es_spec.find_endpoint("GET", "/_search") == ("search", {})
    assert es_spec.find_endpoint("POST", "/docs/_search?size=3") == ("search", {"index": "docs"})
    assert es_spec.find_endpoint("PUT", "/docs") == ("indices.create", {"index": "docs"})
    with pytest.raises(LookupError):
        es_spec.find_endpoint("PATCH", "/docs")


# -------------------- ml.put_trained_model

TRAINED_MODEL = {
    "description": "multilingual-e5-small",
    "model_type": "pytorch",
    "input": {"field_names": ["text_field"]},
    "inference_config": {
        "text_embedding": {
            "embedding_size": 384,
            "tokenization": {"bert": {"do_lower_case": True, "max_sequence_length": 512, "truncate": "first"}},
        }
    },
    "prefix_strings": {"ingest": "passage: ", "search": "query: "},
    "metadata": {"source": "e5plugin", "anything": [1, {"nested": None}]},
    "tags": ["e5"],
}


def test_put_trained_model_valid(es_spec: Spec) -> None:
    assert_valid(es_spec, "ml.put_trained_model", TRAINED_MODEL, path={"model_id": "my-e5"})
    assert_valid(es_spec, "ml.put_trained_model", edited(TRAINED_MODEL, "input.field_names", "text_field"))
    xlmr = edited(TRAINED_MODEL, "inference_config.text_embedding.tokenization", {"xlm_roberta": {"span": -1}})
    assert_valid(es_spec, "ml.put_trained_model", xlmr)
    assert_valid(es_spec, "ml.put_trained_model", TRAINED_MODEL, query={"wait_for_completion": True})


@pytest.mark.parametrize(
    ("dotted", "value", "fragments"),
    [
        # misspelled keys, with a suggestion
        ("prefix_string", {"ingest": "passage: "}, ("body.prefix_string", "unknown property", "'prefix_strings'")),
        ("prefix_strings.query", "query: ", ("body.prefix_strings.query", "unknown property")),
        ("inference_config.text_embedding.tokenization.bert.lowercase", True, ("'do_lower_case'",)),
        # wrong types / enum values
        ("inference_config.text_embedding.tokenization.bert.max_sequence_length", "512", ("expected integer",)),
        ("inference_config.text_embedding.tokenization.bert.max_sequence_length", 512.5, ("expected integer",)),
        ("inference_config.text_embedding.tokenization.bert.do_lower_case", "true", ("expected boolean",)),
        ("inference_config.text_embedding.tokenization.bert.truncate", "middle", ("'first'", "TokenizationTruncate")),
        ("model_type", "onnx", ("body.model_type", "'pytorch'")),
        ("prefix_strings", "query: ", ("body.prefix_strings", "expected object (TrainedModelPrefixStrings)")),
        ("input.field_names", [1], ("body.input.field_names[0]", "expected string")),
        ("tags", "e5", ("body.tags", "expected array")),
        # container variants
        ("inference_config.text_embeddings", {}, ("unknown variant", "'text_embedding'")),
        ("inference_config.text_expansion", {}, ("exactly one variant", "text_expansion")),
        ("inference_config.text_embedding.tokenization.roberta", {}, ("exactly one variant",)),
    ],
)
def test_put_trained_model_invalid(es_spec: Spec, dotted: str, value: Any, fragments: tuple[str, ...]) -> None:
    assert_error(es_spec, "ml.put_trained_model", edited(TRAINED_MODEL, dotted, value), *fragments)


def test_put_trained_model_missing_required(es_spec: Spec) -> None:
    body = edited(TRAINED_MODEL, "input.field_names", None, delete=True)
    assert_error(es_spec, "ml.put_trained_model", body, "body.input", "missing required property 'field_names'")
    empty = edited(TRAINED_MODEL, "inference_config", {})
    assert_error(es_spec, "ml.put_trained_model", empty, "body.inference_config", "needs one variant")


# -------------------- vocabulary, parts


def test_put_trained_model_vocabulary(es_spec: Spec) -> None:
    ep = "ml.put_trained_model_vocabulary"
    assert_valid(es_spec, ep, {"vocabulary": ["[PAD]", "[UNK]", "hello"]}, path={"model_id": "my-e5"})
    assert_valid(es_spec, ep, {"vocabulary": ["<s>", "▁a"], "merges": ["▁ a"], "scores": [0.0, -1.5, 3]})
    assert_error(es_spec, ep, {"merges": []}, "missing required property 'vocabulary'")
    assert_error(es_spec, ep, {"vocabulary": ["a"], "scores": ["0.1"]}, "body.scores[0]", "expected number")
    assert_error(es_spec, ep, {"vocabulary": ["a"], "vocab_size": 1}, "body.vocab_size", "unknown property")


def test_put_trained_model_definition_part(es_spec: Spec) -> None:
    ep = "ml.put_trained_model_definition_part"
    body = {
        "definition": "UEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAAUAA4Ac2ltcGxlbW9kZWwvZGF0YS5wa2w=",
        "total_definition_length": 1024,
    }
    body["total_parts"] = 3
    assert_valid(es_spec, ep, body, path={"model_id": "my-e5", "part": 0})
    assert_valid(es_spec, ep, body, path={"model_id": "my-e5", "part": "2"})  # URL string form
    assert_error(es_spec, ep, body, "path.part", "expected integer", path={"model_id": "my-e5", "part": "two"})
    assert_error(es_spec, ep, body, "no URL", "['model_id']", path={"model_id": "my-e5"})
    assert_error(
        es_spec, ep, body, "path.index", "unknown path parameter", path={"model_id": "m", "part": 0, "index": "x"}
    )
    assert_error(es_spec, ep, edited(body, "total_parts", None, delete=True), "missing required property 'total_parts'")
    assert_error(es_spec, ep, edited(body, "total_definition_length", "1024"), "expected integer")


# -------------------- start deployment


def test_start_trained_model_deployment(es_spec: Spec) -> None:
    ep = "ml.start_trained_model_deployment"
    query = {
        "number_of_allocations": 1,
        "threads_per_allocation": 2,
        "priority": "normal",
        "queue_capacity": 1024,
        "wait_for": "fully_allocated",
        "timeout": "2m",
        "deployment_id": "my-e5-search",
        "cache_size": "10mb",
    }
    assert_valid(es_spec, ep, None, path={"model_id": "my-e5"}, query=query)
    assert_valid(es_spec, ep, None, query={k: str(v) for k, v in query.items()})  # as sent in the URL
    adaptive = {
        "adaptive_allocations": {"enabled": True, "min_number_of_allocations": 0, "max_number_of_allocations": 4}
    }
    assert_valid(es_spec, ep, adaptive, query={"threads_per_allocation": 1})

    assert_error(
        es_spec,
        ep,
        None,
        "query.num_allocations",
        "unknown query parameter",
        "'number_of_allocations'",
        query={"num_allocations": 1},
    )
    assert_error(es_spec, ep, None, "query.priority", "'low'", query={"priority": "high"})
    assert_error(es_spec, ep, None, "query.wait_for", "'started'", query={"wait_for": "allocated"})
    assert_error(es_spec, ep, None, "query.timeout", query={"timeout": 30})  # durations need units
    assert_error(es_spec, ep, None, "query.queue_capacity", "expected integer", query={"queue_capacity": "lots"})
    assert_error(
        es_spec, ep, {"adaptive_allocations": {"min_number_of_allocations": 1}}, "missing required property 'enabled'"
    )
    assert_error(es_spec, ep, {"number_of_allocations": 1}, "body.number_of_allocations", "unknown property")


# -------------------- ingest pipeline

PIPELINE = {
    "description": "e5 embeddings",
    "processors": [
        {
            "inference": {
                "model_id": "my-e5",
                "input_output": {"input_field": "body", "output_field": "body_embedding"},
                "tag": "e5",
                "if": "ctx.body != null",
            }
        },
        {"inference": {"model_id": "my-e5", "target_field": "ml.title", "field_map": {"title": "text_field"}}},
        {"remove": {"field": "tmp", "ignore_missing": True}},
    ],
    "on_failure": [
        {"set": {"field": "_index", "value": "failed-{{{ _index }}}"}},
        {"set": {"field": "error.message", "value": "{{ _ingest.on_failure_message }}", "override": True}},
    ],
    "_meta": {"managed_by": "e5plugin"},
    "version": 1,
}


def test_put_pipeline_valid(es_spec: Spec) -> None:
    assert_valid(es_spec, "ingest.put_pipeline", PIPELINE, path={"id": "e5"}, query={"master_timeout": "30s"})
    many = edited(
        PIPELINE,
        "processors.0.inference.input_output",
        [
            {"input_field": "title", "output_field": "title_embedding"},
            {"input_field": "body", "output_field": "body_embedding"},
        ],
    )
    assert_valid(es_spec, "ingest.put_pipeline", many)
    script_if = edited(PIPELINE, "processors.0.inference.if", {"source": "ctx.body != null", "lang": "painless"})
    assert_valid(es_spec, "ingest.put_pipeline", script_if)
    nested = edited(PIPELINE, "processors.0.inference.on_failure", [{"set": {"field": "failed", "value": True}}])
    assert_valid(es_spec, "ingest.put_pipeline", nested)


@pytest.mark.parametrize(
    ("dotted", "value", "fragments"),
    [
        ("processors.0.inference.input_output.output", "x", ("input_output.output", "unknown property")),
        (
            "processors.0.inference.input_output",
            [{"input_field": "body"}],
            ("missing required property 'output_field'",),
        ),
        ("processors.0.inference.input_output", "body", ("input_output", "expected InputConfig | InputConfig[]")),
        ("processors.0.inference.model", "my-e5", ("inference.model", "unknown property", "'model_id'")),
        ("processors.0.inference.ignore_failure", "yes", ("expected boolean",)),
        ("processors.1.inference.field_map", ["title"], ("field_map", "expected Dict")),
        # ingest's InferenceConfig only models regression/classification
        ("processors.1.inference.inference_config", {"text_embedding": {}}, ("unknown variant of InferenceConfig",)),
        ("processors.2.set", {"field": "a", "value": 1}, ("exactly one variant", "'remove', 'set'")),
        ("on_failure.0", {"sett": {"field": "a", "value": 1}}, ("on_failure[0].sett", "unknown variant", "'set'")),
        ("on_failure.1.set.overwrite", True, ("on_failure[1].set.overwrite", "'override'")),
        ("version", "1", ("body.version", "expected integer")),
    ],
)
def test_put_pipeline_invalid(es_spec: Spec, dotted: str, value: Any, fragments: tuple[str, ...]) -> None:
    assert_error(es_spec, "ingest.put_pipeline", edited(PIPELINE, dotted, value), *fragments)


def test_put_pipeline_missing_required_and_open_variants(es_spec: Spec) -> None:
    body = edited(PIPELINE, "processors.0.inference.model_id", None, delete=True)
    assert_error(
        es_spec, "ingest.put_pipeline", body, "processors[0].inference", "missing required property 'model_id'"
    )
    plugin = edited(PIPELINE, "processors.2", {"my_plugin_processor": {"anything": 1}})
    assert_error(es_spec, "ingest.put_pipeline", plugin, "unknown variant of ProcessorContainer")
    # ProcessorContainer is nonExhaustive in the spec: plugin processors pass when explicitly allowed
    lenient = Spec(es_spec.model, allow_unknown_variants=True)
    assert lenient.validate_request("ingest.put_pipeline", plugin) == []


# -------------------- search

KNN = {
    "field": "body_embedding",
    "k": 10,
    "num_candidates": 100,
    "query_vector_builder": {"text_embedding": {"model_id": "my-e5", "model_text": "query: how to bake bread"}},
    "filter": {"bool": {"filter": [{"term": {"lang": "en"}}, {"range": {"published": {"gte": "now-1y"}}}]}},
    "similarity": 0.5,
    "boost": 0.8,
}
HYBRID = {
    "retriever": {
        "rrf": {
            "retrievers": [
                {"standard": {"query": {"match": {"body": "how to bake bread"}}}},
                {"knn": {k: v for k, v in KNN.items() if k != "boost"}},
            ],
            "rank_window_size": 50,
            "rank_constant": 20,
        }
    },
    "size": 10,
    "_source": {"excludes": ["body_embedding"]},
}


def test_search_knn_valid(es_spec: Spec) -> None:
    assert_valid(es_spec, "search", {"knn": KNN, "size": 5}, path={"index": "docs"})
    assert_valid(es_spec, "search", {"knn": [KNN, edited(KNN, "field", "title_embedding")]})  # single or array
    vector = {k: v for k, v in KNN.items() if k != "query_vector_builder"} | {"query_vector": [0.1, -2, 3.5]}
    assert_valid(es_spec, "search", {"knn": vector, "query": {"match": {"body": {"query": "bread", "boost": 0.2}}}})
    range_filter = edited(KNN, "filter", [{"range": {"price": {"gte": 10, "lt": 20.5}}}, {"exists": {"field": "x"}}])
    assert_valid(es_spec, "search", {"knn": range_filter})
    assert_valid(es_spec, "search", None, path={"index": ["a", "b"]}, query={"size": 3, "_source_excludes": "x,y"})


def test_exact_search_body_is_valid_and_keeps_the_field_out_of_the_script(es_spec: Spec) -> None:
    """The product's exact (script_score) body: valid per the spec; a field name, however odd, is a parameter."""
    from e5plugin.bodies.elasticsearch import EXACT_SCORE_SCRIPT, exact_search_body

    odd = "emb') + 1000.0 + ('x"
    body = exact_search_body(
        vector_field=odd, vector=[0.1, -0.2], k=3, filters=[{"term": {"lang": "de"}}], source=["text"]
    )
    assert_valid(es_spec, "search", body, path={"index": "docs"})
    script = body["query"]["script_score"]["script"]
    assert script["source"] == EXACT_SCORE_SCRIPT and script["params"]["field"] == odd and odd not in script["source"]


def test_search_rrf_retriever_valid(es_spec: Spec) -> None:
    assert_valid(es_spec, "search", HYBRID, path={"index": "docs"})


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"knn": edited(KNN, "field", None, delete=True)}, ("body.knn", "missing required property 'field'")),
        ({"knn": edited(KNN, "num_candidates", "100")}, ("body.knn.num_candidates", "expected integer")),
        ({"knn": edited(KNN, "numCandidates", 100)}, ("body.knn.numCandidates", "'num_candidates'")),
        ({"knn": edited(KNN, "query_vector_builder", {"text_embeding": {"model_text": "q"}})}, ("'text_embedding'",)),
        ({"knn": edited(KNN, "query_vector_builder.text_embedding.text", "q")}, ("text_embedding.text", "unknown")),
        ({"knn": edited(KNN, "query_vector", ["0.1"])}, ("body.knn.query_vector[0]", "expected number")),
        ({"knn": edited(KNN, "filter", {"bool": {"must": {"trem": {"lang": "en"}}}})}, ("unknown variant", "'term'")),
        ({"knn": edited(KNN, "filter", {"term": {"a": 1, "b": 2}})}, ("filter.term", "exactly one key")),
        ({"knnn": KNN}, ("body.knnn", "unknown property", "'knn'")),
        ({"knn": "body_embedding"}, ("body.knn", "expected KnnSearch | KnnSearch[]")),
        (edited(HYBRID, "retriever.rrf.rank_window_size", 10.5), ("rank_window_size", "expected integer")),
        (edited(HYBRID, "retriever.rrf.window_size", 10), ("rrf.window_size", "'rank_window_size'")),
        (edited(HYBRID, "retriever.rrf.retrievers", [{"standart": {}}]), ("retrievers[0].standart", "'standard'")),
        (edited(HYBRID, "retriever.rrf.retrievers.1.knn.k", None, delete=True), ("retrievers[1].knn", "'k'")),
        (edited(HYBRID, "retriever.rrf.retrievers", {"standard": {}}), ("retrievers", "expected array")),
    ],
)
def test_search_invalid(es_spec: Spec, body: dict, fragments: tuple[str, ...]) -> None:
    assert_error(es_spec, "search", body, *fragments)


def test_search_common_shapes_have_no_false_positives(es_spec: Spec) -> None:
    body = {
        "query": {
            "function_score": {
                "query": {"multi_match": {"query": "bread", "fields": ["title^2", "body"]}},
                "functions": [{"filter": {"term": {"lang": "en"}}, "weight": 2}, {"gauss": {"date": {"scale": "10d"}}}],
            }
        },
        "aggs": {"by_tag": {"terms": {"field": "tags", "size": 10}, "aggs": {"avg_price": {"avg": {"field": "p"}}}}},
        "sort": [{"date": {"order": "desc"}}, {"price": "asc"}, "_score"],
        "post_filter": {"terms": {"tag": ["a", "b"], "boost": 2}},
        "highlight": {"fields": {"body": {}}},
        "track_total_hits": 1000,
    }
    assert_valid(es_spec, "search", body)
    both = body | {"aggregations": body["aggs"]}
    assert_error(es_spec, "search", both, "body.aggregations", "duplicates 'aggs'")
    two_fields = edited(body, "post_filter.terms.lang", ["en"])
    assert_error(es_spec, "search", two_fields, "post_filter.terms", "single extra (field) key")


def test_search_query_params(es_spec: Spec) -> None:
    assert_valid(es_spec, "search", HYBRID, query={"size": "10", "track_total_hits": False, "typed_keys": "true"})
    assert_error(es_spec, "search", HYBRID, "query.sizee", "unknown query parameter", "'size'", query={"sizee": 1})
    assert_error(es_spec, "search", None, "query.search_type", query={"search_type": "dfs"})
    assert_error(es_spec, "search", None, "path.idx", "unknown path parameter", path={"idx": "docs"})


# -------------------- indices.create


def _index_body(index_options: dict) -> dict:
    return {
        "settings": {"index": {"default_pipeline": "e5", "number_of_shards": 1, "number_of_replicas": "0"}},
        "mappings": {
            "dynamic": False,
            "properties": {
                "body": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}},
                "body_embedding": {
                    "type": "dense_vector",
                    "dims": 384,
                    "element_type": "float",
                    "index": True,
                    "similarity": "cosine",
                    "index_options": index_options,
                },
                "meta": {"properties": {"lang": {"type": "keyword"}}},  # no "type": defaults to object
            },
        },
    }


HNSW = {"type": "hnsw", "m": 16, "ef_construction": 100}


@pytest.mark.parametrize(
    "index_options",
    [HNSW, {"type": "int8_hnsw", "m": 32, "ef_construction": 200, "confidence_interval": 0.95}, {"type": "bbq_hnsw"}],
)
def test_indices_create_dense_vector_valid(es_spec: Spec, index_options: dict) -> None:
    assert_valid(es_spec, "indices.create", _index_body(index_options), path={"index": "docs"})


def test_indices_create_settings_forms(es_spec: Spec) -> None:
    flat = edited(_index_body(HNSW), "settings", {"index.default_pipeline": "e5", "index.number_of_shards": 1})
    assert_valid(es_spec, "indices.create", flat)  # IndexSettings is open (AdditionalProperties) in the spec
    nested = edited(_index_body(HNSW), "settings", {"index": {"routing_partition_size": "2"}})
    assert_valid(es_spec, "indices.create", nested)  # Stringified<integer> generic resolves to integer | string
    assert_valid(es_spec, "indices.create", None, query={"wait_for_active_shards": "all", "timeout": "1m"})
    assert_valid(es_spec, "indices.create", None, query={"wait_for_active_shards": 1})


@pytest.mark.parametrize(
    ("dotted", "value", "fragments"),
    [
        ("mappings.properties.body_embedding.index_options.type", "hnsw_int8", ("index_options.type", "'int8_hnsw'")),
        ("mappings.properties.body_embedding.index_options.ef", 100, ("index_options.ef", "unknown property")),
        ("mappings.properties.body_embedding.index_options.m", "16", ("index_options.m", "expected integer")),
        ("mappings.properties.body_embedding.similarity", "cos", ("similarity", "'cosine'")),
        ("mappings.properties.body_embedding.dim", 384, ("body_embedding.dim", "unknown property", "'dims'")),
        ("mappings.properties.body_embedding.type", "dense_vectr", ("body_embedding.type", "'dense_vector'")),
        ("mappings.properties.body.fields.raw.type", "keywrd", ("fields.raw.type", "'keyword'")),
        ("mappings.properties.body.analyser", "standard", ("properties.body.analyser", "'analyzer'")),
        ("mappings.dynamic", "sometimes", ("mappings.dynamic", "'strict'")),
        ("mappings.propertes", {}, ("mappings.propertes", "'properties'")),
        ("settings.index.number_of_shards", [1], ("number_of_shards", "expected integer | string")),
        ("settings.index.default_pipeline", 7, ("default_pipeline", "expected string")),
    ],
)
def test_indices_create_invalid(es_spec: Spec, dotted: str, value: Any, fragments: tuple[str, ...]) -> None:
    assert_error(es_spec, "indices.create", edited(_index_body(HNSW), dotted, value), *fragments)


def test_indices_create_missing_index_options_type(es_spec: Spec) -> None:
    body = _index_body({"m": 16})
    assert_error(es_spec, "indices.create", body, "index_options", "missing required property 'type'")


# -------------------- spec examples

# Examples shipped in the spec that the spec's own types reject (the server is more lenient than its spec).
KNOWN_BAD_EXAMPLES = {"SearchRequestExample3": "slice.id is _types.Id (string) in the spec; ES also accepts a number"}
OUR_ENDPOINTS = [  # ml.put_trained_model has no example; ml.put_trained_model_vocabulary's is not valid JSON
    "ml.put_trained_model_definition_part",
    "ml.start_trained_model_deployment",
    "ingest.put_pipeline",
    "search",
    "indices.create",
]


def _examples(spec: Spec, endpoint: str) -> list[tuple[str, str, str, Any, dict[str, str]]]:
    """``(name, method, url path, body, query)`` of the request examples the spec ships for ``endpoint``."""
    out = []
    for name, ex in spec.request_type(endpoint).get("examples", {}).items():
        method, _, url = ex["method_request"].strip().partition(" ")
        parts = urllib.parse.urlsplit("/" + url.strip().lstrip("/"))
        try:
            body = json.loads(ex["value"]) if ex.get("value") else None
        except json.JSONDecodeError:  # NDJSON (bulk, msearch), trailing commas, comments
            continue
        out.append((name, method, parts.path, body, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))))
    return out


@pytest.mark.parametrize("endpoint", OUR_ENDPOINTS)
def test_spec_examples_for_our_endpoints_validate(es_spec: Spec, endpoint: str) -> None:
    examples = _examples(es_spec, endpoint)
    assert examples
    for name, method, url_path, body, query in examples:
        found, path = es_spec.find_endpoint(method, url_path)
        assert found == endpoint, (name, url_path)
        if name in KNOWN_BAD_EXAMPLES:
            assert es_spec.validate_request(endpoint, body, query=query), f"{name} now passes: drop it from the list"
            continue
        assert_valid(es_spec, endpoint, body, path=path, query=query)


def test_validator_handles_every_spec_example(es_spec: Spec) -> None:
    """Smoke test over the whole model: no crash on any construct, and the examples mostly validate."""
    results = [
        not es_spec.validate_request(endpoint, body, query=query)
        for endpoint, ep in es_spec.endpoints.items()
        if ep["request"] is not None
        for _name, _method, _path, body, query in _examples(es_spec, endpoint)
    ]
    assert len(results) > 500
    assert sum(results) / len(results) > 0.9
