"""The query helper (`SemanticSearch`) from the app developer's side: one model load for many threads, an alias
switch never leaves the old model in use, a dims change behind an alias is followed, the model is found on another
host, the ingest's embed backend is used for queries, and OpenSearch exact search reports the cosine similarity
(OpenSearch 3.6's ``knn_score`` returns (1 + cos) / 2, like its HNSW scores: measured, so ``Hit.similarity`` needs no
engine-specific conversion)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import e5plugin.search as search_module
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.errors import ConfigurationError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import MODEL_DIR_ENV, SemanticSearch

DOCS = [
    {"id": "1", "text": "how to reset a password"},
    {"id": "2", "text": "the quick brown fox jumps over the lazy dog"},
    {"id": "3", "text": "duplicate documents in the index"},
]


def _e5_model(directory: Path, *, seed: int, hidden: int = 32) -> Path:
    from tiny_models import build_tiny_bert

    return build_tiny_bert(directory, hidden=hidden, seed=seed, prompts={"query": "query: ", "passage": "passage: "})


def _client_index(engine, model_dir: Path, index: str, docs=DOCS, **embedder_options) -> Embedder:
    spec = resolve_model(str(model_dir))
    engine.delete_index(index)
    deploy(engine, spec, DeployRequest(index=index, mode=Mode.CLIENT))
    embedder = Embedder(spec, **embedder_options)
    report = ingest(engine, index, list(docs), embedder=embedder, refresh=True)
    assert report.ok and report.indexed == len(docs)
    return embedder


class _CountingEmbedder(Embedder):
    """The real Embedder, counting loads; the first load can be held until ``release`` is set."""

    loads: ClassVar[list] = []
    hold_first = False
    release = threading.Event()

    def __init__(self, spec, **kwargs) -> None:
        type(self).loads.append(spec.weights_sha256)
        if type(self).hold_first and len(type(self).loads) == 1:
            assert type(self).release.wait(60)
        time.sleep(0.2)  # widen the window in which a second thread could start its own load
        super().__init__(spec, **kwargs)


@pytest.fixture
def counting(monkeypatch):
    class Counting(_CountingEmbedder):
        loads: ClassVar[list] = []
        hold_first = False
        release = threading.Event()

    monkeypatch.setattr(search_module, "Embedder", Counting)
    return Counting


@pytest.mark.elasticsearch
def test_eight_threads_share_one_model_load(es_backend, tiny_e5_bert, index_name, counting) -> None:
    _client_index(es_backend, tiny_e5_bert, index_name)
    helper = SemanticSearch.for_index(index_name, backend=es_backend)
    barrier = threading.Barrier(8)
    results: list = []
    errors: list = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append([h.id for h in helper.search("reset password", k=1)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 8
    assert len(counting.loads) == 1, f"{len(counting.loads)} model loads for 8 threads"
    es_backend.delete_index(index_name)


@pytest.mark.elasticsearch
def test_alias_switch_never_keeps_the_old_model(es_backend, tmp_path, index_name, counting) -> None:
    old_dir, new_dir = _e5_model(tmp_path / "v1", seed=11), _e5_model(tmp_path / "v2", seed=12)
    v1, v2, alias = f"{index_name}-v1", f"{index_name}-v2", index_name
    _client_index(es_backend, old_dir, v1)
    new_embedder = _client_index(es_backend, new_dir, v2)
    es_backend.switch_alias(alias, v1)
    try:
        helper = SemanticSearch.for_index(alias, backend=es_backend)
        counting.hold_first = True
        # a request thread starts loading the v1 model (slow), the alias moves to v2, another request follows it
        slow = threading.Thread(target=lambda: helper.search("reset password", k=1))
        slow.start()
        time.sleep(0.5)
        es_backend.switch_alias(alias, v2)
        follower = threading.Thread(target=lambda: helper.search("reset password", k=1))
        follower.start()
        time.sleep(1.0)
        counting.release.set()
        slow.join(120)
        follower.join(120)
        hits = helper.search("reset password", k=1)
        assert hits and all(h.index == v2 for h in hits)
        expected = new_embedder.encode_queries(["reset password"])[0]
        assert np.allclose(helper.query_vector("reset password"), expected, atol=1e-5), "old model still in use"
    finally:
        for name in (v1, v2):
            es_backend.delete_index(name)


@pytest.mark.elasticsearch
def test_a_dims_change_behind_the_alias_is_followed_not_a_raw_400(es_backend, tmp_path, index_name) -> None:
    v1, v2, alias = f"{index_name}-v1", f"{index_name}-v2", index_name
    _client_index(es_backend, _e5_model(tmp_path / "d32", seed=1, hidden=32), v1)
    _client_index(es_backend, _e5_model(tmp_path / "d16", seed=2, hidden=16), v2)
    es_backend.switch_alias(alias, v1)
    try:
        helper = SemanticSearch.for_index(alias, backend=es_backend)
        assert helper.search("reset password", k=1)[0].index == v1
        es_backend.switch_alias(alias, v2)  # rollout of a model with other dims
        hits = helper.search("reset password", k=2)
        assert hits and all(h.index == v2 for h in hits)
        batch = helper.search_batch(["reset password", "fox"], k=1)
        assert [b[0].index for b in batch] == [v2, v2]
    finally:
        for name in (v1, v2):
            es_backend.delete_index(name)


@pytest.mark.elasticsearch
def test_model_deployed_from_a_local_dir_is_found_on_another_host(
    es_backend, tiny_e5_bert, tmp_path, index_name, monkeypatch
) -> None:
    deployed_from = tmp_path / "build-host" / "e5-tiny"
    shutil.copytree(tiny_e5_bert, deployed_from)
    embedder = _client_index(es_backend, deployed_from, index_name)
    expected = embedder.encode_queries(["reset password"])[0]
    app_copy = tmp_path / "app-host" / "models" / "e5-tiny"
    shutil.copytree(deployed_from, app_copy)
    shutil.rmtree(tmp_path / "build-host")  # the recorded absolute path does not exist on the app server
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    try:
        with pytest.raises(ConfigurationError, match=MODEL_DIR_ENV):
            SemanticSearch.for_index(index_name, backend=es_backend).search("reset password", k=1)
        by_argument = SemanticSearch.for_index(index_name, backend=es_backend, model_path=str(app_copy))
        assert np.allclose(by_argument.query_vector("reset password"), expected, atol=1e-5)
        assert by_argument.search("reset password", k=1)[0].id == "1"
        monkeypatch.setenv(MODEL_DIR_ENV, str(app_copy.parent))  # a folder of models, found by directory name
        by_env = SemanticSearch.for_index(index_name, backend=es_backend)
        assert np.allclose(by_env.query_vector("reset password"), expected, atol=1e-5)
        other = _e5_model(tmp_path / "other" / "e5-tiny", seed=99)  # same name and shape, other weights
        wrong = SemanticSearch.for_index(index_name, backend=es_backend, model_path=str(other))
        with pytest.raises(ConfigurationError, match="sha256"):
            wrong.search("reset password", k=1)
    finally:
        es_backend.delete_index(index_name)


@pytest.mark.elasticsearch
def test_the_ingest_embed_backend_is_recorded_and_used_for_queries(es_backend, tiny_e5_bert, index_name) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("optimum.onnxruntime")
    embedder = _client_index(es_backend, tiny_e5_bert, index_name, backend="onnx", quantize="int8")
    try:
        assert es_backend.index_meta(index_name).get("embed_backend") == "onnx-int8"
        helper = SemanticSearch.for_index(index_name, backend=es_backend)
        assert helper.embedder.label == "onnx-int8"
        expected = embedder.encode_queries(["reset password"])[0]
        assert np.allclose(helper.query_vector("reset password"), expected, atol=1e-6)
    finally:
        es_backend.delete_index(index_name)


@pytest.mark.opensearch
def test_opensearch_exact_search_reports_the_cosine_similarity(os_backend, tiny_e5_bert, index_name) -> None:
    embedder = _client_index(os_backend, tiny_e5_bert, index_name)
    try:
        helper = SemanticSearch.for_index(index_name, backend=os_backend, embedder=embedder)
        query = embedder.encode_queries(["reset password"])[0]
        passages = embedder.encode_passages([d["text"] for d in DOCS])
        cosines = {d["id"]: float(np.dot(query, p)) for d, p in zip(DOCS, passages, strict=True)}
        for exact in (True, False):
            hits = helper.search("reset password", k=3, exact=exact)
            assert len(hits) == 3
            for hit in hits:
                assert hit.similarity == pytest.approx(cosines[hit.id], abs=1e-3), (exact, hit.id)
    finally:
        os_backend.delete_index(index_name)


@pytest.mark.opensearch
def test_opensearch_hybrid_search_sends_only_searches_the_pipeline_comes_from_deploy(
    os_backend, tiny_e5_bert, index_name
) -> None:
    """A PUT of the search pipeline per query is a cluster-state update each time, and a 403 for a role that may
    only read: deploy creates the pipeline, queries only search."""
    spec = resolve_model(str(tiny_e5_bert))
    planned = deploy(os_backend, spec, DeployRequest(index=index_name, mode=Mode.CLIENT), dry_run=True).planned
    assert any(p.method == "PUT" and p.path.startswith("/_search/pipeline/") for p in planned)
    embedder = _client_index(os_backend, tiny_e5_bert, index_name)
    helper = SemanticSearch.for_index(index_name, backend=os_backend, embedder=embedder)
    sent: list[tuple[str, str]] = []
    transport = os_backend.client.transport
    original = transport.perform_request

    def recording(method, url, *args, **kwargs):
        sent.append((method, url))
        return original(method, url, *args, **kwargs)

    transport.perform_request = recording
    try:
        for _ in range(3):
            hits = helper.search("reset password", k=2, hybrid=True)
            assert hits and hits[0].id == "1"
    finally:
        del transport.perform_request
        os_backend.delete_index(index_name)
    assert sent and all(url.endswith("/_search") for _, url in sent), sent


@pytest.mark.elasticsearch
def test_calibrations_honour_their_side_and_each_task_has_its_own(es_backend, tiny_e5_bert, index_name, tmp_path):
    from click.testing import CliRunner

    from e5plugin.cli import cli
    from e5plugin.tasks.calibrate import Calibration, default_threshold, store_calibration
    from e5plugin.tasks.dedup import find_duplicates

    _client_index(es_backend, tiny_e5_bert, index_name)
    try:
        # a symmetric query-side calibration (STS style) does not measure what dedup compares (stored passages)
        store_calibration(es_backend, index_name, Calibration(0.5, 0.9, 0.9, 0.9, "max_f1", 10, 5, "query", "m"))
        report = find_duplicates(es_backend, index_name)
        assert report.threshold != 0.5 and report.threshold_source.startswith("default"), report.threshold_source
        assert default_threshold(es_backend.index_meta(index_name), "faq") == (0.5, "calibration")
        # each task its own slot, through the CLI
        pairs = tmp_path / "pairs.jsonl"
        texts = [d["text"] for d in DOCS]
        rows = [{"text1": a, "text2": b, "label": int(a == b)} for a in texts for b in texts]
        pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
        env = {"E5PLUGIN_URL": es_backend.config.urls[0], "HF_HUB_OFFLINE": "1"}
        base = ["calibrate", "--index", index_name, "--pairs", str(pairs), "--json"]
        dedup = CliRunner().invoke(cli, [*base, "--side", "passage", "--task", "dedup"], env=env)
        assert dedup.exit_code == 0, dedup.output
        faq = CliRunner().invoke(cli, [*base, "--side", "query-passage", "--task", "faq"], env=env)
        assert faq.exit_code == 0, faq.output
        wrong = CliRunner().invoke(cli, [*base, "--side", "query", "--task", "dedup"], env=env)
        assert wrong.exit_code == 2 and "--side passage" in wrong.output
        meta = es_backend.index_meta(index_name)
        dedup_t = meta["calibrations"]["dedup"]["threshold"]
        faq_t = meta["calibrations"]["faq"]["threshold"]
        assert meta["calibrations"]["dedup"]["side"] == "passage" and meta["calibration"]["threshold"] == 0.5
        assert find_duplicates(es_backend, index_name).threshold == dedup_t
        assert default_threshold(es_backend.index_meta(index_name), "faq") == (faq_t, "calibration (faq)")
    finally:
        es_backend.delete_index(index_name)
