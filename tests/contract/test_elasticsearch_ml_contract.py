"""The Elasticsearch ML path (eland import with prefix_strings, deployment, inference pipeline, kNN with
query_vector_builder, rrf) cannot run here (no ML native process in Maven's distribution). Every request it sends
is captured from the real code path and validated against the official Elasticsearch specification."""

from __future__ import annotations

import pytest

from e5plugin.bodies import elasticsearch as es_bodies
from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.engines.base import DeploymentOptions
from e5plugin.engines.elasticsearch import ElasticsearchBackend
from e5plugin.errors import UnsupportedModelError
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

from .recording import RecordingElasticsearch


def _backend(version: str = "9.5.4", licence: str = "trial") -> tuple[ElasticsearchBackend, RecordingElasticsearch]:
    client = RecordingElasticsearch(version, licence)
    return ElasticsearchBackend(client, ConnectionConfig()), client


def _validate_all(es_spec, recorded) -> list[str]:
    problems = []
    for r in recorded:
        name, path_params = es_spec.find_endpoint(r.method, r.path)
        errors = es_spec.validate_request(name, r.body, path=path_params, query=r.params)
        problems += [f"{r.method} {r.path} ({name}): {e}" for e in errors]
    return problems


@pytest.fixture(scope="module")
def deployed(tiny_e5_bert):
    backend, client = _backend()
    spec = resolve_model(str(tiny_e5_bert))
    request = DeployRequest(
        index="docs",
        mode=Mode.SERVER,
        deployment=DeploymentOptions(number_of_allocations=2, threads_per_allocation=2, priority="normal"),
    )
    result = deploy(backend, spec, request)
    return backend, client, spec, result


def test_every_request_of_a_server_deploy_matches_the_spec(es_spec, deployed):
    _, client, _, _ = deployed
    paths = [f"{r.method} {r.path}" for r in client.recorded]
    assert any(p.startswith("PUT /_ml/trained_models/") and p.count("/") == 3 for p in paths)
    assert any(p.endswith("/vocabulary") for p in paths)
    assert any("/definition/0" in p for p in paths)
    assert any(p.endswith("/deployment/_start") for p in paths)
    assert "PUT /_ingest/pipeline/e5plugin-docs" in paths and "PUT /docs" in paths
    assert _validate_all(es_spec, client.recorded) == []


def test_prefix_strings_registered_and_pipeline_does_not_prefix(deployed):
    _, client, _, result = deployed
    config = next(r.body for r in client.recorded if r.method == "PUT" and r.path.count("/") == 3 and "_ml" in r.path)
    assert config["prefix_strings"] == {"ingest": "passage: ", "search": "query: "}
    assert "text_embedding" in config["inference_config"]
    assert config["metadata"]["e5plugin"]["weights_sha256"]
    start = next(r for r in client.recorded if r.path.endswith("/deployment/_start"))
    assert start.params["number_of_allocations"] == 2 and start.params["threads_per_allocation"] == 2
    pipeline = next(
        r.body for r in client.recorded if r.method == "PUT" and r.path == "/_ingest/pipeline/e5plugin-docs"
    )
    assert "passage: " not in str(pipeline["processors"])  # the cluster adds passage: (prefix_strings)
    inference = next(p["inference"] for p in pipeline["processors"] if "inference" in p)
    assert inference["input_output"] == [{"input_field": "text", "output_field": "embedding"}]
    assert result.setup.plan.ingest is Actor.CLUSTER


def test_query_helper_sends_query_vector_builder_without_prefix(es_spec, deployed):
    backend, client, _, result = deployed
    client.recorded.clear()
    helper = SemanticSearch(backend, "docs", result.setup)
    helper.search("reset my password", k=3, filters={"term": {"lang": "en"}})
    helper.search("reset my password", k=3, hybrid=True)
    searches = [r for r in client.recorded if r.path == "/docs/_search"]
    knn = searches[0].body["knn"]
    assert knn["query_vector_builder"]["text_embedding"]["model_text"] == "reset my password"  # cluster prefixes
    rrf = searches[1].body["retriever"]["rrf"]
    assert rrf["retrievers"][1]["knn"]["query_vector_builder"]["text_embedding"]["model_text"] == "reset my password"
    assert _validate_all(es_spec, searches) == []


def test_before_8_12_the_pipeline_and_helper_prefix(es_spec, tiny_e5_bert):
    backend, _client = _backend(version="8.11.4")
    spec = resolve_model(str(tiny_e5_bert))
    plan = backend.prefix_plan(spec, Mode.SERVER)
    assert (plan.ingest, plan.query) == (Actor.PIPELINE, Actor.HELPER)
    body = es_bodies.pipeline_body("m", plan, text_field="text", vector_field="embedding")
    assert body["processors"][1]["script"]["params"]["prefix"] == "passage: "
    assert body["processors"][2]["inference"]["input_output"][0]["input_field"] == "_e5plugin_passage"
    assert es_spec.validate_request("ingest.put_pipeline", body, path={"id": "p"}) == []
    legacy = es_bodies.pipeline_body("m", plan, text_field="text", vector_field="embedding", input_output=False)
    assert es_spec.validate_request("ingest.put_pipeline", legacy, path={"id": "p"}) == []


@pytest.mark.parametrize("options", ["hnsw", "int8_hnsw", "bbq_hnsw", "flat"])
def test_index_bodies_match_the_spec(es_spec, tiny_e5_bert, options):
    spec = resolve_model(str(tiny_e5_bert))
    body = es_bodies.index_body(spec, index_options=options, pipeline="p", meta={"x": 1})
    assert es_spec.validate_request("indices.create", body, path={"index": "docs"}) == []


def test_albert_is_refused_with_client_mode_offered(tmp_path):
    """eland has no ALBERT tokenizer: a clear error naming the reason and offering client-side mode."""
    from tiny_models import build_tiny_albert

    directory = build_tiny_albert(tmp_path / "albert")
    backend, _ = _backend()
    spec = resolve_model(str(directory))
    with pytest.raises(UnsupportedModelError, match="--mode client"):
        backend.import_model(spec, backend.prefix_plan(spec, Mode.SERVER), model_id="albert", work_dir=tmp_path)


def test_reimport_reuses_same_source_and_refuses_another(tiny_e5_bert, tiny_bert, tmp_path):
    backend, client = _backend()
    spec = resolve_model(str(tiny_e5_bert))
    plan = backend.prefix_plan(spec, Mode.SERVER)
    first = backend.import_model(spec, plan, model_id="m", work_dir=tmp_path / "1")
    parts = sum(1 for r in client.recorded if "/definition/" in r.path)
    again = backend.import_model(spec, plan, model_id="m", work_dir=tmp_path / "2")
    assert (first.action, again.action) == ("created", "reused")
    assert sum(1 for r in client.recorded if "/definition/" in r.path) == parts  # nothing uploaded twice
    other = resolve_model(str(tiny_bert))
    from e5plugin.errors import ConflictError

    with pytest.raises(ConflictError, match="--replace"):
        backend.import_model(other, backend.prefix_plan(other, Mode.SERVER), model_id="m", work_dir=tmp_path / "3")
    replaced = backend.import_model(
        other, backend.prefix_plan(other, Mode.SERVER), model_id="m", work_dir=tmp_path / "4", replace=True
    )
    assert replaced.action == "replaced"
    assert any(r.method == "DELETE" and r.path == "/_ml/trained_models/m" for r in client.recorded)


def test_eland_major_must_match_the_cluster(tiny_e5_bert, tmp_path):
    from e5plugin.errors import MissingCapabilityError

    backend, _ = _backend(version="8.15.0")
    spec = resolve_model(str(tiny_e5_bert))
    with pytest.raises(MissingCapabilityError, match=r"eland\[pytorch\]>=8,<9"):
        backend.import_model(spec, backend.prefix_plan(spec, Mode.SERVER), model_id="m", work_dir=tmp_path)
