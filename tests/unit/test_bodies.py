"""Request bodies are pure: built from the spec and the prefix plan, never from ad-hoc strings."""

from __future__ import annotations

from e5plugin.bodies import PASSAGE_TMP_FIELD, TEXT_SCRIPT
from e5plugin.bodies import elasticsearch as es
from e5plugin.bodies import opensearch as os_
from e5plugin.models import KNOWN_MODELS
from e5plugin.prefixes import Mode, plan_prefixes

E5 = KNOWN_MODELS["intfloat/e5-base-v2"]


def test_es_index_body_dims_similarity_pipeline():
    body = es.index_body(E5, text_field="body", vector_field="vec", index_options="int8_hnsw", pipeline="p")
    vec = body["mappings"]["properties"]["vec"]
    assert (vec["type"], vec["dims"], vec["similarity"], vec["index_options"]["type"]) == (
        "dense_vector",
        768,
        "dot_product",
        "int8_hnsw",
    )
    assert body["mappings"]["properties"]["body"] == {"type": "text"}
    assert body["settings"]["index"]["default_pipeline"] == "p"


def test_os_index_body_nested_fields():
    body = os_.index_body(E5, text_field="doc.text", vector_field="doc.vec", index_options="hnsw_sq")
    doc = body["mappings"]["properties"]["doc"]["properties"]
    assert doc["vec"]["dimension"] == 768 and doc["vec"]["method"]["parameters"]["encoder"] == {
        "name": "sq",
        "parameters": {"bits": 7, "confidence_interval": 1.0},
    }
    assert doc["text"] == {"type": "text"}


def test_pipeline_prefixes_only_when_the_cluster_cannot():
    with_support = plan_prefixes(E5, Mode.SERVER, True)
    without = plan_prefixes(E5, Mode.SERVER, False)
    for module in (es, os_):
        plain = module.pipeline_body("m", with_support, text_field="text", vector_field="vec")
        check = plain["processors"][1]["script"]["params"]
        assert check["target"] is None and check["prefix"] == ""  # validates the text, adds nothing
        prefixed = module.pipeline_body("m", without, text_field="text", vector_field="vec")
        script = prefixed["processors"][1]["script"]
        # user-chosen values reach painless only as params, never spliced into the source
        assert script["source"] == TEXT_SCRIPT and script["params"]["prefix"] == "passage: "
        assert prefixed["processors"][-1] == {"remove": {"field": PASSAGE_TMP_FIELD, "ignore_missing": True}}
        assert prefixed["on_failure"][0]["set"]["field"] == "e5plugin_error.reason"


def test_es_knn_with_query_vector_builder():
    clause = es.knn_clause(vector_field="v", k=5, num_candidates=50, model_id="m", text="hello")
    assert clause["query_vector_builder"] == {"text_embedding": {"model_id": "m", "model_text": "hello"}}
    assert clause["num_candidates"] == 50


def test_every_index_option_is_read_back_from_the_mapping_it_makes():
    """What `rollout` relies on to build the next version like the current one (nested fields included)."""
    from e5plugin.engines.elasticsearch import ElasticsearchBackend
    from e5plugin.engines.opensearch import OpenSearchBackend

    for backend_class, module in ((ElasticsearchBackend, es), (OpenSearchBackend, os_)):
        backend = object.__new__(backend_class)  # no client: reading a mapping needs none
        for option in module.INDEX_OPTIONS:
            mappings = module.index_body(E5, vector_field="doc.vec", index_options=option)["mappings"]
            assert backend.index_option(mappings, "doc.vec") == option
            assert backend.index_option(mappings, "doc.text") is None
