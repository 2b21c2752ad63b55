"""Task-aware prefixes on the real nodes: a FAQ's stored question is embedded as a query (symmetric match with the
user's question), its answer as a passage, each prefix exactly once, in server mode (both OpenSearch prefix paths)
and client mode (Elasticsearch)."""

from __future__ import annotations

import dataclasses

import pytest
from vectors import cosine as _cos

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.tasks.faq import FaqSearch, index_faq

ENTRIES = [
    {"id": "pw", "question": "how do I reset my password", "answer": "open the account page and choose reset"},
    {"id": "login", "question": "login error help", "answer": "check the account name and the language"},
    {"id": "fox", "question": "the quick brown fox", "answer": "a fox jumps over the lazy dog"},
]


def _check_vectors(backend, index: str, spec) -> None:
    local = Embedder(spec)  # plain encode: the test writes the prefixes
    for entry in ENTRIES:
        question = backend.get_document(index, f"{entry['id']}::question")
        answer = backend.get_document(index, f"{entry['id']}::answer")
        assert "e5plugin_error" not in question and "e5plugin_error" not in answer
        q_vec = question["embedding"]
        assert _cos(q_vec, local.encode(["query: " + entry["question"]])[0]) > 0.999
        for wrong in ("passage: ", "passage: query: ", "query: query: ", ""):
            assert _cos(q_vec, local.encode([wrong + entry["question"]])[0]) < 0.9999, wrong
        a_vec = answer["embedding"]
        assert _cos(a_vec, local.encode(["passage: " + entry["answer"]])[0]) > 0.999
        assert _cos(a_vec, local.encode(["query: " + entry["answer"]])[0]) < 0.9999


@pytest.mark.opensearch
@pytest.mark.parametrize("cluster_prefixes", [True, False], ids=["prefixes-in-model-config", "prefixes-in-pipeline"])
def test_server_mode_faq_question_stored_as_query_once(os_backend, tiny_e5_bert, cluster_prefixes):
    backend = os_backend
    backend.apply_one_node_ml_settings()
    original = backend._capabilities
    backend._capabilities = dataclasses.replace(backend.capabilities, cluster_prefixes=cluster_prefixes)
    kind = "cluster" if cluster_prefixes else "pipeline"
    index, name = f"t-task-prefix-faq-{kind}", f"t-task-prefix-tiny-e5-{kind}"
    try:
        spec = resolve_model(str(tiny_e5_bert))
        backend.delete_index(index)
        result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id=name, replicas=0))
        assert result.setup.plan.query is (Actor.CLUSTER if cluster_prefixes else Actor.HELPER)
        report = index_faq(backend, index, ENTRIES, embed="both")
        assert report.ok and report.indexed == 2 * len(ENTRIES), report.to_dict()
        _check_vectors(backend, index, spec)
        assert backend.index_meta(index)["faq"]["embedded_as"] == {"question": "query", "answer": "passage"}
        answer = FaqSearch.for_index(index, backend=backend).ask("how do I reset my password", threshold=0.0)
        assert answer.id == "pw" and answer.matched == "question" and answer.confidence > 0.999
    finally:
        backend._capabilities = original
        backend.delete_index(index)
        for model in backend.find_models(name):
            backend.delete_model(model["model_id"])


@pytest.mark.elasticsearch
def test_client_mode_faq_question_stored_as_query_once(es_backend, tiny_e5_bert):
    spec = resolve_model(str(tiny_e5_bert))
    index = "t-task-prefix-faq-client"
    es_backend.delete_index(index)
    try:
        result = deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
        embedder = Embedder(spec, plan=result.setup.plan)
        report = index_faq(es_backend, index, ENTRIES, embed="both", embedder=embedder)
        assert report.ok and report.indexed == 2 * len(ENTRIES), report.to_dict()
        _check_vectors(es_backend, index, spec)
        answer = FaqSearch.for_index(index, backend=es_backend, embedder=embedder).ask(
            "how do I reset my password", threshold=0.0
        )
        assert answer.id == "pw" and answer.matched == "question" and answer.confidence > 0.999
    finally:
        es_backend.delete_index(index)


@pytest.mark.elasticsearch
def test_model_without_prefixes_stores_questions_unprefixed(es_backend, tiny_bert):
    spec = resolve_model(str(tiny_bert))
    index = "t-task-prefix-faq-noprefix"
    es_backend.delete_index(index)
    try:
        result = deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
        embedder = Embedder(spec, plan=result.setup.plan)
        assert index_faq(es_backend, index, ENTRIES, embed="both", embedder=embedder).ok
        assert es_backend.index_meta(index)["faq"]["embedded_as"] == {"question": "passage", "answer": "passage"}
        stored = es_backend.get_document(index, "pw::question")["embedding"]
        assert _cos(stored, Embedder(spec).encode([ENTRIES[0]["question"]])[0]) > 0.999
    finally:
        es_backend.delete_index(index)


@pytest.mark.elasticsearch
def test_entry_is_one_passage_of_question_and_answer(es_backend, tiny_e5_bert):
    spec = resolve_model(str(tiny_e5_bert))
    index = "t-task-prefix-faq-entry"
    es_backend.delete_index(index)
    try:
        result = deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
        embedder = Embedder(spec, plan=result.setup.plan)
        assert index_faq(es_backend, index, ENTRIES, embed="entry", embedder=embedder).ok
        assert es_backend.index_meta(index)["faq"]["embedded_as"] == {"entry": "passage"}
        stored = es_backend.get_document(index, "pw")
        text = f"{ENTRIES[0]['question']} {ENTRIES[0]['answer']}"
        assert stored["text"] == text
        assert _cos(stored["embedding"], Embedder(spec).encode(["passage: " + text])[0]) > 0.999
        answer = FaqSearch.for_index(index, backend=es_backend, embedder=embedder).ask("reset my password", k=3)
        assert {c["id"] for c in answer.candidates} == {"pw", "login", "fox"}  # one document per entry
        assert {c["matched"] for c in answer.candidates} == {"entry"}
    finally:
        es_backend.delete_index(index)
