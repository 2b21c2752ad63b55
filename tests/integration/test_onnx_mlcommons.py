"""ml-commons with ``model_format: ONNX`` on the real OpenSearch node: register, deploy, ingest, query.

Stored vectors must equal the local ``passage: `` embedding and query vectors the local ``query: `` embedding
(the same prefixes-exactly-once rule as TorchScript), long texts must be truncated like client-side, and a model
type that gets no ``token_type_ids`` from ml-commons (XLM-RoBERTa) must run too.
"""

from __future__ import annotations

import json
import zipfile

import pytest
from vectors import cosine as _cos

from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines.base import DeploymentOptions
from e5plugin.errors import ConfigurationError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.packaging import mlcommons
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

pytestmark = pytest.mark.opensearch

ONNX = DeploymentOptions(model_format="onnx")
DOCS = [
    {"id": "1", "text": "the quick brown fox jumps over the lazy dog"},
    {"id": "2", "text": "how to reset a password for your account"},
    {"id": "3", "text": "semantic search with a vector embedding model"},
    {"id": "long", "text": " ".join(["semantic search with a vector embedding model"] * 80)},  # > 128 tokens
]


@pytest.fixture
def cleanup(ml_ready):
    """Indices and ml-commons models this test made (undeployed and deleted: node memory is shared)."""
    made: dict[str, list[str]] = {"indices": [], "models": []}
    yield made
    for index in made["indices"]:
        ml_ready.delete_index(index)
    for name in made["models"]:
        for model in ml_ready.find_models(name):
            ml_ready.delete_model(model["model_id"])


def test_onnx_package_layout(tiny_e5_bert, tiny_xlmr, tmp_path):
    """A ``.onnx`` graph + tokenizer.json; token_type_ids exactly for bert/albert; format in the fingerprint."""
    import onnx

    bert = resolve_model(str(tiny_e5_bert))
    plan = mlcommons_plan(bert)
    onnx_pkg = mlcommons.package(bert, plan, tmp_path / "bert", "onnx")
    assert onnx_pkg.model_format == "ONNX"
    with zipfile.ZipFile(onnx_pkg.zip_path) as zf:
        names = sorted(zf.namelist())
        assert names == ["tiny-e5-bert.onnx", "tokenizer.json"]
        graph = onnx.load_from_string(zf.read("tiny-e5-bert.onnx"))
        assert json.loads(zf.read("tokenizer.json"))["truncation"]["max_length"] == bert.max_length
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph.graph.output[0].name == "last_hidden_state" and graph.ir_version <= 8
    torch_fp = mlcommons.fingerprint(bert, mlcommons.model_config(bert, plan))
    assert onnx_pkg.fingerprint != torch_fp  # ONNX and TorchScript registrations are told apart
    xlmr = resolve_model(str(tiny_xlmr))
    xlmr_pkg = mlcommons.package(xlmr, mlcommons_plan(xlmr), tmp_path / "xlmr", "onnx")
    with zipfile.ZipFile(xlmr_pkg.zip_path) as zf:
        graph = onnx.load_from_string(zf.read("tiny-xlmr.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]


def mlcommons_plan(spec):
    from e5plugin.prefixes import plan_prefixes

    return plan_prefixes(spec, Mode.SERVER, cluster_prefix_support=True)


def test_onnx_server_mode_vectors_equal_local_with_prefixes_once(ml_ready, tiny_e5_bert, cleanup):
    backend = ml_ready
    spec = resolve_model(str(tiny_e5_bert))
    index, name = "t-onnx-server-e5", "t-onnx-tiny-e5"
    cleanup["indices"].append(index)
    cleanup["models"].append(name)
    backend.delete_index(index)
    request = DeployRequest(index=index, mode=Mode.SERVER, model_id=name, replicas=0, deployment=ONNX)
    result = deploy(backend, spec, request)
    assert result.model.state == "DEPLOYED"
    assert result.setup.plan.ingest is Actor.CLUSTER and result.setup.plan.query is Actor.CLUSTER
    registered = backend._ml("GET", f"/models/{result.model.model_id}")
    assert registered["model_format"] == "ONNX"
    report = ingest(backend, index, DOCS, refresh=True)
    assert report.ok and report.indexed == len(DOCS)
    local = Embedder(spec)  # plain encode: the test writes the prefixes itself
    for doc in DOCS:
        stored = backend.get_document(index, doc["id"])["embedding"]
        assert _cos(stored, local.encode(["passage: " + doc["text"]])[0]) > 0.999, doc["id"]
        if doc["id"] != "long":  # the doubled prefix is a different vector (for "long" it is cut off)
            assert _cos(stored, local.encode(["passage: passage: " + doc["text"]])[0]) < 0.9999
    query = "reset my password"
    remote_query = backend.embed_query(result.model.model_id, query, cluster_prefix=True)
    assert _cos(remote_query, local.encode(["query: " + query])[0]) > 0.999
    hits = SemanticSearch.for_index(index, backend=backend).search(query, k=3)
    top = backend.get_document(index, hits[0].id)["embedding"]
    assert hits[0].similarity == pytest.approx(_cos(local.encode(["query: " + query])[0], top), abs=2e-3)
    again = deploy(backend, spec, request)  # idempotent: the same ONNX registration is reused
    assert again.model.action == "reused" and again.model.model_id == result.model.model_id


def test_onnx_model_without_token_type_ids(ml_ready, tiny_xlmr, cleanup, tmp_path):
    """XLM-RoBERTa: ml-commons feeds input_ids + attention_mask only; the graph must take exactly those."""
    backend = ml_ready
    spec = resolve_model(str(tiny_xlmr))
    name = "t-onnx-tiny-xlmr"
    cleanup["models"].append(name)
    plan = backend.prefix_plan(spec, Mode.SERVER)
    model = backend.import_model(spec, plan, model_id=name, work_dir=tmp_path, options=ONNX)
    assert model.state == "DEPLOYED"
    texts = ["Der schnelle braune Fuchs springt", "素早い茶色の狐"]
    remote = backend.predict(model.model_id, texts, content_type="passage")  # the model config adds the prefix
    local = Embedder(spec).encode(["passage: " + t for t in texts])
    assert all(_cos(r, v) > 0.999 for r, v in zip(remote, local, strict=True))


@pytest.mark.elasticsearch
def test_onnx_is_refused_by_elasticsearch_and_unknown_formats(es_backend, tiny_e5_bert, tmp_path):
    from e5plugin.errors import UnknownModelError

    spec = resolve_model(str(tiny_e5_bert))
    with pytest.raises(UnknownModelError, match="torchscript, onnx"):
        mlcommons.package(spec, mlcommons_plan(spec), tmp_path, "tensorflow")
    plan = es_backend.prefix_plan(spec, Mode.SERVER)
    with pytest.raises(ConfigurationError, match="OpenSearch ml-commons choice"):
        es_backend.import_model(spec, plan, model_id="t-onnx-refused", work_dir=tmp_path, options=ONNX)


def test_default_format_is_onnx_and_an_existing_torchscript_registration_is_reused(
    ml_ready, tiny_bert, cleanup, tmp_path
):
    """Upgrading e5plugin must not turn a re-run of deploy into a conflict: a model registered as TorchScript (the
    format before ONNX became the default) is reused; a new registration without a chosen format is ONNX."""
    backend = ml_ready
    spec = resolve_model(str(tiny_bert))
    plan = backend.prefix_plan(spec, Mode.SERVER)
    old_name, new_name = "t-onnx-default-upgrade", "t-onnx-default-new"
    cleanup["models"] += [old_name, new_name]
    torch_options = DeploymentOptions(model_format="torchscript")
    first = backend.import_model(spec, plan, model_id=old_name, work_dir=tmp_path / "a", options=torch_options)
    again = backend.import_model(spec, plan, model_id=old_name, work_dir=tmp_path / "b", options=DeploymentOptions())
    assert (again.model_id, again.action) == (first.model_id, "reused")
    assert backend._ml("GET", f"/models/{first.model_id}")["model_format"] == "TORCH_SCRIPT"
    fresh = backend.import_model(spec, plan, model_id=new_name, work_dir=tmp_path / "c", options=DeploymentOptions())
    assert fresh.action == "created" and backend._ml("GET", f"/models/{fresh.model_id}")["model_format"] == "ONNX"
