"""ONNX Runtime embedding (fp32 and int8), the int8 quality gate and backend choice, on a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e5plugin import onnx_backend, quality
from e5plugin.embed import Embedder, resolve_backend
from e5plugin.errors import ConfigurationError
from e5plugin.models import resolve_model

pytestmark = pytest.mark.skipif(not onnx_backend.available(), reason="needs the onnx extra")

TEXTS = ["the password reset failed", "a vector search engine", "help with login", "the node of a cluster"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("E5PLUGIN_ONNX_CACHE", str(tmp_path / "cache" / "onnx"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny(tiny_e5_bert: Path):
    return resolve_model(str(tiny_e5_bert))


def test_onnx_fp32_matches_torch_and_the_export_is_cached(tiny, cache: Path) -> None:
    torch_vectors = Embedder(tiny).encode_passages(TEXTS)
    onnx = Embedder(tiny, backend="onnx")
    assert onnx.label == "onnx"
    assert np.allclose(onnx.encode_passages(TEXTS), torch_vectors, atol=1e-4)
    exported = onnx_backend.cache_dir(tiny) / onnx_backend.ONNX_FILE
    assert exported.is_file() and str(exported).startswith(str(cache))
    stamp = exported.stat().st_mtime_ns
    Embedder(tiny, backend="onnx")  # a second load reuses the export
    assert exported.stat().st_mtime_ns == stamp


def test_onnx_int8_is_close_to_fp32(tiny, cache: Path) -> None:
    fp32 = Embedder(tiny).encode_passages(TEXTS)
    int8 = Embedder(tiny, backend="onnx", quantize="int8")
    assert int8.label == "onnx-int8"
    assert (onnx_backend.cache_dir(tiny) / onnx_backend.int8_file()).is_file()
    cosine = np.sum(fp32 * int8.encode_passages(TEXTS), axis=1)
    assert cosine.min() > 0.9


def test_auto_uses_int8_only_after_an_accepted_check(tiny, cache: Path) -> None:
    assert resolve_backend(tiny, "auto", None) == ("torch", None)
    onnx_backend.record_check(tiny, {"accepted": False})
    assert resolve_backend(tiny, "auto", None) == ("torch", None)
    assert resolve_backend(tiny, "onnx", "auto") == ("onnx", None)
    onnx_backend.record_check(tiny, {"accepted": True})
    assert resolve_backend(tiny, "auto", None) == ("onnx", "int8")
    assert resolve_backend(tiny, "torch", None) == ("torch", None)  # an explicit choice is kept


def test_bad_backend_choices_are_refused(tiny) -> None:
    with pytest.raises(ConfigurationError):
        resolve_backend(tiny, "tensorflow", None)
    with pytest.raises(ConfigurationError):
        resolve_backend(tiny, "torch", "int8")
    with pytest.raises(ConfigurationError):
        resolve_backend(tiny, "onnx", "int4")


def _beir(directory: Path) -> Path:
    docs = [
        ("d1", "password", "how to reset the password of an account"),
        ("d2", "search", "a semantic vector search engine index"),
        ("d3", "cluster", "the node of the cluster has an error"),
        ("d4", "login", "help with the login of the account"),
    ]
    (directory / "qrels").mkdir(parents=True)
    (directory / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs)
    )
    queries = [("q1", "reset password"), ("q2", "vector search"), ("q3", "cluster node error")]
    (directory / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (directory / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t1\r\nq3\td3\t1\r\n"
    )
    return directory


def test_load_beir_and_ndcg(tmp_path: Path) -> None:
    corpus, queries, qrels = quality.load_beir(_beir(tmp_path / "beir"))
    assert [d["id"] for d in corpus] == ["d1", "d2", "d3", "d4"]
    assert corpus[0]["text"] == "password how to reset the password of an account"
    assert set(queries) == {"q1", "q2", "q3"} and qrels["q1"] == {"d1": 1}
    assert quality.ndcg_at_k({"q1": ["d1"], "q2": ["d2"], "q3": ["d3"]}, qrels) == 1.0
    assert quality.ndcg_at_k({"q1": ["d4", "d1"], "q2": [], "q3": []}, qrels) == pytest.approx((1 / np.log2(3)) / 3)


def test_exact_top_k_is_brute_force() -> None:
    rng = np.random.default_rng(0)
    docs, queries = rng.normal(size=(50, 8)), rng.normal(size=(5, 8))
    top = quality.exact_top_k(queries, docs, k=10)
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ unit.T), axis=1)[:, :10]
    assert (top == expected).all()


def test_check_quantization_records_its_verdict(tiny, cache: Path, tmp_path: Path) -> None:
    result = quality.check_quantization(tiny, _beir(tmp_path / "beir"), tolerance=1.0)
    assert result.docs == 4 and result.queries == 3 and result.accepted
    assert result.mean_cosine_fp32_int8 > 0.9
    assert onnx_backend.recorded_check(tiny)["accepted"] is True
    assert Embedder(tiny, backend="auto").label == "onnx-int8"
    strict = quality.check_quantization(tiny, tmp_path / "beir", tolerance=-1.0)  # nothing can pass
    # refused: fp32 again, on ONNX Runtime since the check left the fp32 export on this machine (same vectors)
    assert not strict.accepted and Embedder(tiny, backend="auto").label == "onnx"


# ---- the default backend: fp32 on ONNX Runtime where the graph is at hand, never a surprise export ----------------
def _with_graph(tiny, graph_of, tmp_path: Path, name: str) -> Path:
    """A copy of ``tiny``'s folder carrying ``graph_of``'s exported fp32 graph as ``onnx/model.onnx`` (the layout
    sentence-transformers and `model pull --source maven` use)."""
    import shutil

    folder = tmp_path / name
    shutil.copytree(tiny.local_path, folder)
    (folder / "onnx").mkdir()
    shutil.copy(onnx_backend.export(graph_of) / onnx_backend.ONNX_FILE, folder / onnx_backend.ONNX_FILE)
    return folder


def test_default_runs_fp32_on_onnx_when_the_folder_carries_the_graph(tiny, cache, tmp_path, monkeypatch) -> None:
    folder = _with_graph(tiny, tiny, tmp_path, "with-graph")
    monkeypatch.setenv("E5PLUGIN_ONNX_CACHE", str(tmp_path / "fresh-cache"))  # nothing exported on this machine
    spec = resolve_model(str(folder))
    embedder = Embedder(spec)
    assert embedder.label == "onnx"
    assert np.allclose(
        embedder.encode_passages(TEXTS), Embedder(tiny, backend="torch").encode_passages(TEXTS), atol=1e-5
    )


def test_default_never_starts_an_export_for_a_folder_without_a_graph(tiny, cache: Path) -> None:
    embedder = Embedder(tiny)
    assert embedder.label == "torch"
    assert not (onnx_backend.cache_dir(tiny) / onnx_backend.ONNX_FILE).exists()
    Embedder(tiny, backend="onnx")  # exported once on request ...
    assert Embedder(tiny).label == "onnx"  # ... then the default uses it


def test_a_bundled_graph_that_disagrees_with_the_weights_is_not_used(tiny, cache, tmp_path, tiny_bert) -> None:
    """A folder whose onnx/model.onnx is another model's graph (a stale file left beside new weights): the vectors
    still come from the folder's weights."""
    folder = _with_graph(tiny, resolve_model(str(tiny_bert)), tmp_path, "stale-graph")
    spec = resolve_model(str(folder))
    vectors = Embedder(spec).encode_passages(TEXTS)
    assert np.allclose(vectors, Embedder(tiny, backend="torch").encode_passages(TEXTS), atol=1e-5)
    assert any(p.name.endswith(".mismatch") for p in onnx_backend.cache_dir(spec).parent.iterdir())
