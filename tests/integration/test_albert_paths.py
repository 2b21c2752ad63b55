"""sentence-transformers/paraphrase-albert-small-v2, the non-E5 model of e5plugin's table, through every path a user
takes, with a tiny random ALBERT (SentencePiece vocabulary, 768 dims, one layer) laid out like a local checkout of
it: max_seq_length 100, mean pooling, no Normalize module, no prompts. No weights of the real model exist offline.

Through the CLI, as a user runs it (``deploy``, ``ingest``, ``search``): OpenSearch server mode (TorchScript and
ONNX), OpenSearch and Elasticsearch client mode. Each time the stored and query vectors equal the local
sentence-transformers embedding of the raw text (never prefixed), a text longer than 100 tokens is cut at 100 tokens
(not at 512), and the index maps 768 dims with cosine (the vectors are not unit length: never dot product / inner
product). Elasticsearch ML refuses ALBERT (eland has no ALBERT tokenizer), offering client mode.

A local checkout of the model declares no prompts and its random weights are no known fingerprint: e5plugin
cannot tell whether it needs E5's prefixes, so the user chooses (``--no-prefixes``), or deploys the directory
``model pull`` made, whose manifest names the hub id (then it is the table's model: never prefixed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from vectors import cosine as _cos

from e5plugin.cli import cli
from e5plugin.errors import MissingCapabilityError, UndecidedPrefixesError, UnsupportedModelError
from e5plugin.search import SemanticSearch

HUB_ID = "sentence-transformers/paraphrase-albert-small-v2"
DIMS = 768
MAX_LENGTH = 100
SAME = 0.9999  # cosine above which two vectors are the same embedding (float32 / ONNX Runtime / libtorch rounding)

#: the head of LONG fills the first 100 tokens; its tail (other words) is read only by a longer truncation
LONG_HEAD = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
LONG_TAIL = " ".join(["password reset account login error help"] * 14)
DOCS = [
    {"id": "fox", "text": "the quick brown fox jumps over the lazy dog"},
    {"id": "password", "text": "how to reset a password for your account"},
    {"id": "search", "text": "semantic search with a vector embedding model"},
    {"id": "long", "text": f"{LONG_HEAD} {LONG_TAIL}"},
]
QUERY = "reset my password"


def run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--url", url, *args], env={})


@pytest.fixture(scope="module")
def albert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_albert_checkout

    return build_albert_checkout(tmp_path_factory.mktemp("albert") / "paraphrase-albert-small-v2", hidden=DIMS)


@pytest.fixture(scope="module")
def pulled_albert(albert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkout as ``model pull`` leaves it: a manifest naming the hub id and every file's sha256."""
    from e5plugin.manifest import write_manifest

    directory = tmp_path_factory.mktemp("pulled") / "paraphrase-albert-small-v2"
    shutil.copytree(albert, directory)
    write_manifest(directory, HUB_ID, "0000000000000000000000000000000000000000")
    return directory


class Reference:
    """sentence-transformers on the checkout, independent of e5plugin: as saved (100 tokens) and cut at 512."""

    def __init__(self, directory: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(directory), device="cpu")
        assert self.model.max_seq_length == MAX_LENGTH
        self.long_model = SentenceTransformer(str(directory), device="cpu")
        self.long_model.max_seq_length = 512

    def __call__(self, text: str) -> np.ndarray:
        return self.model.encode([text], convert_to_numpy=True)[0]

    def at_512(self, text: str) -> np.ndarray:
        return self.long_model.encode([text], convert_to_numpy=True)[0]

    def tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text)["input_ids"])


@pytest.fixture(scope="module")
def reference(albert: Path) -> Reference:
    ref = Reference(albert)
    long_text = DOCS[-1]["text"]
    assert MAX_LENGTH < ref.tokens(long_text) < 512  # the 512 reference reads all of it
    assert ref.tokens(LONG_HEAD) > MAX_LENGTH  # the first 100 tokens are all head
    assert _cos(ref(long_text), ref.at_512(long_text)) < 0.99  # the two truncations are told apart
    assert _cos(ref(long_text), ref(LONG_HEAD)) > SAME  # cut at 100: the tail is never read
    norms = [float(np.linalg.norm(ref(d["text"]))) for d in DOCS]
    assert all(abs(n - 1.0) > 0.01 for n in norms), norms  # not unit length: dot product would be wrong
    return ref


def _jsonl(path: Path) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return str(path)


def _check_index(backend, url: str, index: str, reference: Reference, measured: dict) -> None:
    """Mapping, stored vectors, query vector and ``search`` of an index deployed and ingested through the CLI."""
    field = backend.get_mapping(index)["properties"]["embedding"]
    if backend.engine == "opensearch":
        assert field["type"] == "knn_vector" and field["dimension"] == DIMS
        assert field["method"]["space_type"] == "cosinesimil"
    else:
        assert field["type"] == "dense_vector" and field["dims"] == DIMS
        assert field["similarity"] == "cosine"
    helper = SemanticSearch.for_index(index, backend=backend)
    spec = helper.setup.spec
    assert (spec.query_prefix, spec.passage_prefix, spec.max_length, spec.normalize) == ("", "", MAX_LENGTH, False)
    cosines = {}
    for doc in DOCS:
        stored = backend.get_document(index, doc["id"])["embedding"]
        assert len(stored) == DIMS
        cosines[doc["id"]] = _cos(stored, reference(doc["text"]))
        assert cosines[doc["id"]] > SAME, (doc["id"], cosines[doc["id"]])
        assert _cos(stored, reference("passage: " + doc["text"])) < SAME or doc["id"] == "long"
    long_text = DOCS[-1]["text"]
    stored_long = backend.get_document(index, "long")["embedding"]
    cosines["long_vs_512"] = _cos(stored_long, reference.at_512(long_text))
    assert cosines["long_vs_512"] < 0.99  # cut at 100 tokens, not at 512
    # the query vector the helper searches with: the cluster's (server) or the local embedder's (client)
    query_vector = helper._query_input(QUERY, need_vector=True)["vector"]
    cosines["query"] = _cos(query_vector, reference(QUERY))
    assert cosines["query"] > SAME
    assert _cos(query_vector, reference("query: " + QUERY)) < SAME  # never prefixed
    hits = helper.search(QUERY, k=len(DOCS))
    top = backend.get_document(index, hits[0].id)["embedding"]
    assert hits[0].similarity == pytest.approx(_cos(reference(QUERY), top), abs=2e-3)
    found = run(url, "search", QUERY, "--index", index, "-k", str(len(DOCS)), "--json")
    assert found.exit_code == 0, found.output
    listed = json.loads(found.output)
    assert [h["id"] for h in listed] == [h.id for h in hits]
    assert all("embedding" not in h["source"] for h in listed)
    measured[index] = {k: f"{float(v):.8f}" for k, v in cosines.items()}
    print(f"\n{index}: dims {DIMS}, cosines {measured[index]}")


@pytest.fixture(scope="module")
def measured() -> dict:
    return {}


@pytest.fixture
def os_cleanup(os_backend):
    made: dict[str, list[str]] = {"indices": [], "models": [], "pipelines": []}
    yield made
    for index in made["indices"]:
        os_backend.delete_index(index)
    for pipeline in made["pipelines"]:
        os_backend.client.ingest.delete_pipeline(id=pipeline, ignore=[404])
    for name in made["models"]:
        for model in os_backend.find_models(name):
            os_backend.delete_model(model["model_id"])


# ---- OpenSearch server mode (ml-commons): TorchScript and ONNX --------------------------------------------------
@pytest.mark.opensearch
@pytest.mark.parametrize("model_format", ["torchscript", "onnx"])
def test_opensearch_server_mode(
    opensearch, os_backend, albert, reference, measured, os_cleanup, index_name, model_format, tmp_path
):
    name = f"t-albert-{model_format}"
    os_cleanup["indices"].append(index_name)
    os_cleanup["models"].append(name)
    os_cleanup["pipelines"].append(f"e5plugin-{index_name}")
    os_backend.delete_index(index_name)
    for model in os_backend.find_models(name):  # left by an earlier session on a reused node
        os_backend.delete_model(model["model_id"])
    deploy_args = ["deploy", "-m", str(albert), "-i", index_name, "--mode", "server", "--model-id", name]
    deploy_args += ["--model-format", model_format, "--replicas", "0", "--one-node-ml"]
    refused = run(opensearch.url, *deploy_args)  # a checkout without prompts: the user must choose
    assert refused.exit_code == UndecidedPrefixesError.exit_code, refused.output
    assert "--no-prefixes" in refused.output and not os_backend.index_exists(index_name)
    deployed = run(opensearch.url, *deploy_args, "--no-prefixes")
    assert deployed.exit_code == 0, deployed.output
    assert "mode        server" in deployed.output and "DEPLOYED" in deployed.output
    model_id = SemanticSearch.for_index(index_name, backend=os_backend).setup.model_id
    registered = os_backend._ml("GET", f"/models/{model_id}")
    assert registered["model_format"] == {"torchscript": "TORCH_SCRIPT", "onnx": "ONNX"}[model_format]
    config = registered["model_config"]
    assert config["embedding_dimension"] == DIMS and config["model_type"] == "albert"
    assert not config.get("normalize_result")  # ml-commons leaves out false, its default
    assert not config.get("query_prefix") and not config.get("passage_prefix")
    ingested = run(opensearch.url, "ingest", _jsonl(tmp_path / "docs.jsonl"), "--index", index_name)
    assert ingested.exit_code == 0, ingested.output
    os_backend.refresh(index_name)
    assert os_backend.count(index_name) == len(DOCS)
    _check_index(os_backend, opensearch.url, index_name, reference, measured)
    remote = os_backend.predict(model_id, [DOCS[-1]["text"]])[0]  # the model itself cuts at 100 tokens
    assert _cos(remote, reference(DOCS[-1]["text"])) > SAME


# ---- client mode: OpenSearch and Elasticsearch ------------------------------------------------------------------
@pytest.mark.opensearch
def test_opensearch_client_mode(opensearch, os_backend, albert, reference, measured, index_name, tmp_path):
    os_backend.delete_index(index_name)
    try:
        deployed = run(
            opensearch.url, "deploy", "-m", str(albert), "-i", index_name, "--mode", "client", "--no-prefixes"
        )
        assert deployed.exit_code == 0, deployed.output
        assert "mode        client" in deployed.output
        ingested = run(opensearch.url, "ingest", _jsonl(tmp_path / "docs.jsonl"), "--index", index_name)
        assert ingested.exit_code == 0, ingested.output
        os_backend.refresh(index_name)
        assert os_backend.count(index_name) == len(DOCS)
        _check_index(os_backend, opensearch.url, index_name, reference, measured)
    finally:
        os_backend.delete_index(index_name)


@pytest.mark.elasticsearch
def test_elasticsearch_client_mode_from_a_pulled_checkout(
    elasticsearch, es_backend, pulled_albert, reference, measured, index_name, tmp_path
):
    """The directory ``model pull`` made: its manifest names the hub id, so no prefix choice is asked for."""
    es_backend.delete_index(index_name)
    try:
        deployed = run(elasticsearch.url, "deploy", "-m", str(pulled_albert), "-i", index_name, "--mode", "client")
        assert deployed.exit_code == 0, deployed.output
        assert "mode        client" in deployed.output
        setup = SemanticSearch.for_index(index_name, backend=es_backend).setup
        assert setup.spec.model_id == HUB_ID and setup.spec.family == "plain"
        assert "manifest" in setup.spec.family_source
        ingested = run(elasticsearch.url, "ingest", _jsonl(tmp_path / "docs.jsonl"), "--index", index_name)
        assert ingested.exit_code == 0, ingested.output
        es_backend.refresh(index_name)
        assert es_backend.count(index_name) == len(DOCS)
        _check_index(es_backend, elasticsearch.url, index_name, reference, measured)
    finally:
        es_backend.delete_index(index_name)


# ---- Elasticsearch ML: refused, client mode offered -------------------------------------------------------------
@pytest.mark.elasticsearch
def test_elasticsearch_server_mode_is_refused_with_client_mode_offered(elasticsearch, es_backend, albert, index_name):
    """On this node (no ML module) the refusal is the missing ML; the ALBERT-specific refusal on a cluster with ML
    is tests/contract/test_elasticsearch_ml_contract.py::test_albert_is_refused_with_client_mode_offered. Both
    offer client mode, and nothing is created."""
    es_backend.delete_index(index_name)
    args = ["deploy", "-m", str(albert), "-i", index_name, "--mode", "server", "--no-prefixes"]
    refused = run(elasticsearch.url, *args)
    assert refused.exit_code in (MissingCapabilityError.exit_code, UnsupportedModelError.exit_code), refused.output
    assert "--mode client" in refused.output and "Traceback" not in refused.output
    assert not es_backend.index_exists(index_name)
    assert es_backend.get_pipeline(f"e5plugin-{index_name}") is None


def test_elasticsearch_ml_refuses_albert_before_any_model_request(tiny_bert, tmp_path):
    """On a cluster with ML (recorded, as in tests/contract): the ALBERT refusal comes before e5plugin touches the
    cluster's models, so ``--replace`` cannot delete the model that holds the name first, a dry run refuses as
    the real run would, and the message names the reason and offers client mode in a sentence."""
    from contract.recording import RecordingElasticsearch
    from tiny_models import build_tiny_albert

    from e5plugin.config import ConnectionConfig
    from e5plugin.deploy import DeployRequest, deploy
    from e5plugin.engines.elasticsearch import ElasticsearchBackend
    from e5plugin.models import resolve_model
    from e5plugin.prefixes import Mode

    client = RecordingElasticsearch("9.5.4", "trial")
    backend = ElasticsearchBackend(client, ConnectionConfig())
    bert = resolve_model(str(tiny_bert))
    backend.import_model(bert, backend.prefix_plan(bert, Mode.SERVER), model_id="m", work_dir=tmp_path / "bert")
    spec = resolve_model(str(build_tiny_albert(tmp_path / "albert")), no_prefixes=True)
    assert spec.model_type == "albert"
    for dry_run in (True, False):
        client.recorded.clear()
        request = DeployRequest(index="docs", mode=Mode.SERVER, model_id="m", replace_model=True)
        with pytest.raises(UnsupportedModelError) as refused:
            deploy(backend, spec, request, dry_run=dry_run)
        message = str(refused.value)
        assert "--mode client" in message and "AlbertTokenizer" in message and len(message) < 600, message
        touched = [
            f"{r.method} {r.path}" for r in client.recorded if "/_ml/" in r.path or r.method not in ("GET", "HEAD")
        ]
        assert touched == [], touched
