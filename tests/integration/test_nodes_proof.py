"""Proof that the suite runs real nodes: kNN on both engines equals numpy brute force; auth on secured ES."""

from __future__ import annotations

import numpy as np
import pytest

from e5plugin.engines import connect
from e5plugin.errors import AuthenticationError, ClusterUnreachableError
from e5plugin.models import ModelSpec

DIMS, N_DOCS, N_QUERIES, K = 384, 1000, 20, 10
SPEC = ModelSpec("random-unit-vectors", DIMS, "none", normalize=True)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIMS)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _load(backend, index: str, index_options: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    docs, queries = _unit(rng, N_DOCS), _unit(rng, N_QUERIES)
    backend.delete_index(index)
    body = backend.index_body(SPEC, index_options=index_options, replicas=0)
    backend.ensure_index(index, body, vector_field="embedding", dims=DIMS)
    actions = ({"_index": index, "_id": str(i), "_source": {"embedding": v.tolist()}} for i, v in enumerate(docs))
    results = list(backend.streaming_bulk(actions, chunk_size=200, raise_on_error=True))
    assert len(results) == N_DOCS and all(ok for ok, _ in results)
    backend.refresh(index)
    assert backend.count(index) == N_DOCS
    return docs, queries


def _recall(backend, index: str, docs: np.ndarray, queries: np.ndarray, exact: bool) -> float:
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :K]
    found = 0
    for q, expected in zip(queries, truth, strict=True):
        body = backend.knn_body(vector_field="embedding", k=K, num_candidates=100, vector=q.tolist(), exact=exact)
        ids = [int(h.id) for h in backend.hits(backend.search(index, body))]
        assert len(ids) == K
        found += len(set(ids) & set(expected.tolist()))
    return found / (K * len(queries))


@pytest.mark.opensearch
def test_opensearch_knn_matches_brute_force(os_backend):
    docs, queries = _load(os_backend, "proof-knn", "hnsw")
    assert _recall(os_backend, "proof-knn", docs, queries, exact=True) == 1.0
    assert _recall(os_backend, "proof-knn", docs, queries, exact=False) >= 0.95


@pytest.mark.elasticsearch
def test_elasticsearch_knn_matches_brute_force(es_backend):
    docs, queries = _load(es_backend, "proof-flat", "flat")  # flat = exact kNN (brute force in Lucene)
    assert _recall(es_backend, "proof-flat", docs, queries, exact=False) == 1.0
    docs, queries = _load(es_backend, "proof-hnsw", "hnsw")
    assert _recall(es_backend, "proof-hnsw", docs, queries, exact=False) >= 0.95


@pytest.mark.secured
def test_secured_elasticsearch_credentials(secured_elasticsearch):
    backend = connect(secured_elasticsearch.config(), engine="auto")
    assert backend.engine == "elasticsearch"
    assert backend.capabilities.version >= (9, 0, 0)
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        connect(secured_elasticsearch.config(password="wrong-password"), engine="auto")
    # Naming the engine skips detection: the first real request reports the same clear error.
    backend = connect(secured_elasticsearch.config(password="wrong-password"), engine="elasticsearch")
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        backend.index_exists("anything")


def test_unreachable_cluster_is_a_clear_error():
    from e5plugin.config import ConnectionConfig
    from e5plugin.devcluster.node import free_port

    with pytest.raises(ClusterUnreachableError, match="Cannot reach"):
        connect(ConnectionConfig(urls=[f"http://127.0.0.1:{free_port()}"]), engine="auto")
