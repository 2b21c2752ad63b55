"""Hypothesis fuzzing of the ingest path on a real node: random Unicode documents and field shapes.
No crash; every document accepted is retrievable, with a vector when its text is a usable string and with a
failure marker otherwise."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest, text_problem
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode

pytestmark = pytest.mark.elasticsearch

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=50))
text_values = st.one_of(
    st.text(max_size=300),  # any Unicode, including control characters, RTL, emoji, lone surrogates
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=2),
)
documents = st.lists(
    st.fixed_dictionaries(
        {"text": text_values},
        optional={"title": st.text(max_size=40), "n": scalars},
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def fuzz_index(es_backend, tiny_e5_bert):
    spec = resolve_model(str(tiny_e5_bert))
    es_backend.delete_index("fuzz")
    result = deploy(es_backend, spec, DeployRequest(index="fuzz", mode=Mode.CLIENT, replicas=0))
    return es_backend, Embedder(spec, plan=result.setup.plan)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=documents)
def test_random_documents_are_stored_and_retrievable(fuzz_index, docs):
    backend, embedder = fuzz_index
    for i, doc in enumerate(docs):
        doc["id"] = f"d{i}"
    report = ingest(backend, "fuzz", docs, embedder=embedder, refresh=True)
    accepted = {f.id for f in report.failures}
    assert report.indexed + report.failed == len(docs)
    for doc in docs:
        if doc["id"] in accepted:
            continue
        stored = backend.get_document("fuzz", doc["id"])
        assert stored is not None
        if text_problem(doc["text"]) is None:
            assert len(stored["embedding"]) == embedder.spec.dims
        else:
            assert stored["e5plugin_error"]["reason"] and "embedding" not in stored
