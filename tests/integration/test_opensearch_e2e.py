"""OpenSearch end to end on the real node: ml-commons deploy, prefixes exactly once, pipelines, helper."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from vectors import cosine as _cos

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

pytestmark = pytest.mark.opensearch

DOCS = [
    {"id": "1", "text": "the quick brown fox jumps over the lazy dog", "lang": "en"},
    {"id": "2", "text": "how to reset a password for your account", "lang": "en"},
    {"id": "3", "text": "semantic search with a vector embedding model", "lang": "en"},
    {"id": "4", "text": "der schnelle braune fuchs", "lang": "de"},
    {"id": "5", "text": "help with a login error", "lang": "en"},
    {"id": "6", "text": "duplicate document in the index", "lang": "en"},
]


def test_capabilities(os_backend):
    caps = os_backend.capabilities
    assert caps.ml and caps.cluster_prefixes and caps.native_hybrid and caps.ingest_scripts
    assert {"opensearch-ml", "opensearch-knn", "opensearch-neural-search"} <= set(caps.plugins)


def test_tiny_bert_chunk_upload_deploy_predict_matches_local(ml_ready, tiny_bert, tmp_path):
    """Proof test: a model built here, traced, zipped, chunk-uploaded and deployed predicts like Python."""
    spec = resolve_model(str(tiny_bert))
    plan = ml_ready.prefix_plan(spec, Mode.SERVER)
    model = ml_ready.import_model(spec, plan, model_id="proof-tiny-bert", work_dir=tmp_path)
    assert model.state == "DEPLOYED" and model.action in ("created", "reused")
    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "what is a vector embedding model?"]
    remote = ml_ready.predict(model.model_id, texts)
    local = Embedder(spec).encode(texts)
    assert all(_cos(r, v) > 0.999 for r, v in zip(remote, local, strict=True))
    again = ml_ready.import_model(spec, plan, model_id="proof-tiny-bert", work_dir=tmp_path / "again")
    assert (again.model_id, again.action) == (model.model_id, "reused")


@pytest.mark.parametrize("cluster_prefixes", [True, False], ids=["prefixes-in-model-config", "prefixes-in-pipeline"])
def test_server_mode_adds_each_prefix_exactly_once(ml_ready, tiny_e5_bert, cluster_prefixes):
    """On 3.5+ the model config carries the prefixes; on older engines the pipeline and helper do. Both paths run
    here (the second by declaring the engine older), and stored/query vectors equal the local embedding of
    exactly ``passage: `` + text / ``query: `` + text."""
    backend = ml_ready
    original = backend._capabilities
    backend._capabilities = dataclasses.replace(backend.capabilities, cluster_prefixes=cluster_prefixes)
    try:
        spec = resolve_model(str(tiny_e5_bert))
        index = f"e2e-server-{'cluster' if cluster_prefixes else 'pipeline'}"
        backend.delete_index(index)
        result = deploy(
            backend,
            spec,
            DeployRequest(index=index, mode=Mode.SERVER, model_id=f"tiny-e5-{index}", replicas=0),
        )
        plan = result.setup.plan
        assert plan.ingest is (Actor.CLUSTER if cluster_prefixes else Actor.PIPELINE)
        report = ingest(backend, index, DOCS, refresh=True)
        assert report.ok and report.indexed == len(DOCS)
        local = Embedder(spec)  # plain encode: no prefix added by the embedder
        for doc in DOCS:
            stored = backend.get_document(index, doc["id"])
            assert "e5plugin_error" not in stored and "_e5plugin_passage" not in stored
            expected = local.encode(["passage: " + doc["text"]])[0]
            assert _cos(stored["embedding"], expected) > 0.999
            assert _cos(stored["embedding"], local.encode(["passage: passage: " + doc["text"]])[0]) < 0.9999
        helper = SemanticSearch.for_index(index, backend=backend)
        query = "reset my password"
        hits = helper.search(query, k=3)
        q = local.encode(["query: " + query])[0]
        top = backend.get_document(index, hits[0].id)["embedding"]
        assert hits[0].similarity == pytest.approx(_cos(q, top), abs=2e-3)
        # a second deploy changes nothing
        again = deploy(
            backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id=f"tiny-e5-{index}", replicas=0)
        )
        assert not again.changed and again.model.action == "reused" and again.pipeline_action == "unchanged"
    finally:
        backend._capabilities = original


def test_xlmr_sentencepiece_model_in_server_mode(ml_ready, tiny_xlmr):
    spec = resolve_model(str(tiny_xlmr))
    backend = ml_ready
    backend.delete_index("e2e-xlmr")
    deploy(backend, spec, DeployRequest(index="e2e-xlmr", mode=Mode.SERVER, model_id="tiny-xlmr", replicas=0))
    docs = [{"id": "de", "text": "Der schnelle braune Fuchs springt"}, {"id": "ja", "text": "素早い茶色の狐"}]
    assert ingest(backend, "e2e-xlmr", docs, refresh=True).ok
    local = Embedder(spec)
    for doc in docs:
        stored = backend.get_document("e2e-xlmr", doc["id"])["embedding"]
        assert _cos(stored, local.encode(["passage: " + doc["text"]])[0]) > 0.999


def test_failed_embedding_keeps_the_document_with_a_marker(ml_ready, tiny_e5_bert):
    backend = ml_ready
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index("e2e-marker")
    deploy(backend, spec, DeployRequest(index="e2e-marker", mode=Mode.SERVER, model_id="tiny-e5-marker", replicas=0))
    docs = [{"id": "ok", "text": "a good document"}, {"id": "no-text", "title": "no text field at all"}]
    report = ingest(backend, "e2e-marker", docs, refresh=True)
    assert report.indexed == 2
    bad = backend.get_document("e2e-marker", "no-text")
    assert bad["title"] == "no text field at all" and bad["e5plugin_error"]["reason"]
    assert "embedding" not in bad


def test_client_mode_knn_equals_brute_force_filters_and_hybrid(os_backend, tiny_e5_bert):
    backend = os_backend
    spec = resolve_model(str(tiny_e5_bert))
    index = "e2e-client"
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    assert result.setup.plan.ingest is Actor.EMBEDDER
    embedder = Embedder(spec, plan=result.setup.plan)
    report = ingest(backend, index, DOCS, embedder=embedder, refresh=True)
    assert report.ok
    helper = SemanticSearch.for_index(index, backend=backend, embedder=embedder)
    local = Embedder(spec)
    doc_vecs = local.encode(["passage: " + d["text"] for d in DOCS])
    for query in ("reset my password", "brown fox", "vector search"):
        q = local.encode(["query: " + query])[0]
        truth = [DOCS[i]["id"] for i in np.argsort(-(doc_vecs @ q))[:3]]
        assert [h.id for h in helper.search(query, k=3, exact=True)] == truth
        assert [h.id for h in helper.search(query, k=3)] == truth
    german = helper.search("fox", k=5, filters={"term": {"lang": "de"}})
    assert [h.id for h in german] == ["4"]
    hybrid = helper.search("password reset", k=3, hybrid=True)
    assert hybrid and hybrid[0].id == "2"


def test_long_text_is_truncated_the_same_way_on_both_sides(ml_ready, tiny_e5_bert):
    """tokenizer.json carries a truncation block at the model's max length, as sentence-transformers truncates."""
    backend = ml_ready
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index("e2e-long")
    deploy(backend, spec, DeployRequest(index="e2e-long", mode=Mode.SERVER, model_id="tiny-e5-long", replicas=0))
    long_text = " ".join(["semantic search with a vector embedding model"] * 80)  # ~560 tokens > 128
    assert ingest(backend, "e2e-long", [{"id": "long", "text": long_text}], refresh=True).ok
    stored = backend.get_document("e2e-long", "long")["embedding"]
    assert _cos(stored, Embedder(spec).encode(["passage: " + long_text])[0]) > 0.999


def test_server_mode_hybrid_uses_the_engine_search_pipeline(ml_ready, tiny_e5_bert):
    backend = ml_ready
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index("e2e-hybrid")
    deploy(backend, spec, DeployRequest(index="e2e-hybrid", mode=Mode.SERVER, model_id="tiny-e5-hybrid", replicas=0))
    assert ingest(backend, "e2e-hybrid", DOCS, refresh=True).ok
    helper = SemanticSearch.for_index("e2e-hybrid", backend=backend)
    hits = helper.search("password reset account", k=3, hybrid=True)
    assert hits[0].id == "2"
    assert backend.client.transport.perform_request("GET", "/_search/pipeline/e5plugin-hybrid-rrf")


@pytest.mark.slow
def test_minilm_from_pypi_multi_chunk_upload(ml_ready, minilm):
    """all-MiniLM-L6-v2 (90 MB zip: several 10 MB chunks) deployed and equal to sentence-transformers locally."""
    backend = ml_ready
    spec = resolve_model(str(minilm))
    backend.delete_index("e2e-minilm")
    result = deploy(backend, spec, DeployRequest(index="e2e-minilm", mode=Mode.SERVER, model_id="minilm", replicas=0))
    assert result.setup.plan.ingest is Actor.NOBODY  # no prefixes for this model
    texts = ["A man is playing a guitar.", "The new movie is awesome", "Elasticsearch and OpenSearch"]
    assert ingest(backend, "e2e-minilm", [{"id": str(i), "text": t} for i, t in enumerate(texts)], refresh=True).ok
    local = Embedder(spec).encode(texts)
    for i, vector in enumerate(local):
        assert _cos(backend.get_document("e2e-minilm", str(i))["embedding"], vector) > 0.999
