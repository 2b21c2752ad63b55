"""Elasticsearch on the real integ-test node: client-side mode end to end (mapping, bulk, kNN, filters, hybrid).

The node from Maven has no ML module, so server mode is refused with a clear error here; the ML path is
contract-tested against the official specification (tests/contract)."""

from __future__ import annotations

import numpy as np
import pytest

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.errors import DimensionMismatchError, MissingCapabilityError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

pytestmark = pytest.mark.elasticsearch

DOCS = [
    {"id": str(i), "text": text, "lang": lang}
    for i, (text, lang) in enumerate(
        [
            ("the quick brown fox jumps over the lazy dog", "en"),
            ("how to reset a password for your account", "en"),
            ("semantic search with a vector embedding model", "en"),
            ("der schnelle braune fuchs", "de"),
            ("help with a login error", "en"),
            ("duplicate document in the index", "en"),
            ("the cluster node has an error", "en"),
            ("a question and an answer", "en"),
        ]
    )
]


def test_capabilities_of_the_integ_test_node(es_backend):
    caps = es_backend.capabilities
    assert caps.engine == "elasticsearch" and caps.version >= (9, 0, 0)
    assert not caps.ml and "machine-learning" in caps.ml_reason and "--mode client" in caps.ml_reason
    assert not caps.cluster_prefixes and not caps.native_hybrid


def test_server_mode_is_refused_with_a_fix(es_backend, tiny_e5_bert):
    spec = resolve_model(str(tiny_e5_bert))
    with pytest.raises(MissingCapabilityError, match="--mode client"):
        deploy(es_backend, spec, DeployRequest(index="refused", mode=Mode.SERVER))
    assert not es_backend.index_exists("refused")  # nothing half-written


@pytest.mark.parametrize("index_options", ["flat", "hnsw", "int8_hnsw"])
def test_client_mode_end_to_end(es_backend, tiny_e5_bert, index_options):
    backend = es_backend
    spec = resolve_model(str(tiny_e5_bert))
    index = f"e2e-client-{index_options.replace('_', '-')}"
    backend.delete_index(index)
    result = deploy(
        backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, index_options=index_options, replicas=0)
    )
    assert result.index_action == "created" and result.setup.plan.ingest is Actor.EMBEDDER
    mapping = backend.get_mapping(index)["properties"]["embedding"]
    assert (mapping["dims"], mapping["similarity"], mapping["index_options"]["type"]) == (
        spec.dims,
        "dot_product",
        index_options,
    )
    embedder = Embedder(spec, plan=result.setup.plan)
    assert ingest(backend, index, DOCS, embedder=embedder, refresh=True).ok
    local = Embedder(spec)
    stored = backend.get_document(index, "1")["embedding"]
    assert np.allclose(stored, local.encode(["passage: " + DOCS[1]["text"]])[0], atol=1e-5)
    helper = SemanticSearch.for_index(index, backend=backend, embedder=embedder)
    doc_vecs = local.encode(["passage: " + d["text"] for d in DOCS])
    for query in ("reset my password", "brown fox", "an error"):
        q = local.encode(["query: " + query])[0]
        truth = [DOCS[i]["id"] for i in np.argsort(-(doc_vecs @ q))[:5]]
        hits = helper.search(query, k=5, num_candidates=len(DOCS))
        assert [h.id for h in hits] == truth
        assert hits[0].similarity == pytest.approx(float(doc_vecs[int(truth[0])] @ q), abs=1e-3)
    assert [h.id for h in helper.search("fox", k=5, filters={"term": {"lang": "de"}})] == ["3"]
    hybrid = helper.search("password reset", k=3, hybrid=True)
    assert hybrid[0].id == "1"
    # idempotent: a second deploy changes nothing; a different model's dims are refused
    assert not deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, index_options=index_options)).changed


def test_dimension_mismatch_is_refused(es_backend, tiny_e5_bert, minilm):
    backend = es_backend
    backend.delete_index("e2e-dims")
    deploy(backend, resolve_model(str(tiny_e5_bert)), DeployRequest(index="e2e-dims", replicas=0))
    with pytest.raises(DimensionMismatchError, match=r"has 32-dim vectors .* the model makes 384"):
        deploy(backend, resolve_model(str(minilm)), DeployRequest(index="e2e-dims"))


def test_bad_documents_are_kept_marked_and_reported(es_backend, tiny_e5_bert):
    backend = es_backend
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index("e2e-bad")
    result = deploy(backend, spec, DeployRequest(index="e2e-bad", replicas=0))
    docs = [
        {"id": "ok", "text": "fine"},
        {"id": "null", "text": None},
        {"id": "missing"},
        {"id": "number", "text": 42},
        {"id": "empty", "text": "   "},
        {"id": "emoji", "text": "ok 👍 مرحبا שלום \u0000 control"},
        {"id": "surrogate", "text": "broken \ud800 half"},
    ]
    report = ingest(backend, "e2e-bad", docs, embedder=Embedder(spec, plan=result.setup.plan), refresh=True)
    assert report.indexed == len(docs) and report.failed == 0 and report.without_vector == 4
    assert backend.count("e2e-bad") == len(docs)
    for doc_id in ("null", "missing", "number", "empty"):
        source = backend.get_document("e2e-bad", doc_id)
        assert source["e5plugin_error"]["reason"] and "embedding" not in source
    for doc_id in ("ok", "emoji", "surrogate"):
        assert len(backend.get_document("e2e-bad", doc_id)["embedding"]) == spec.dims
