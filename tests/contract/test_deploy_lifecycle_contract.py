"""Elasticsearch server-mode deploy: timeouts, the readiness prediction and the vector similarity (issue 12, defects
6, 14, 15). The requests are captured from the real code path (no ML process in the Maven distribution) and checked
against the Elasticsearch specification; the traced model itself runs here, locally."""

from __future__ import annotations

import shutil

import pytest
from elasticsearch import ApiError

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.engines.base import DeploymentOptions
from e5plugin.engines.elasticsearch import ElasticsearchBackend
from e5plugin.errors import ModelNotDeployedError
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode

from .recording import Recorded, RecordingElasticsearch, _meta


def _backend(client: RecordingElasticsearch | None = None) -> tuple[ElasticsearchBackend, RecordingElasticsearch]:
    client = client or RecordingElasticsearch("9.5.4", "trial")
    return ElasticsearchBackend(client, ConnectionConfig()), client


def _index_similarity(client: RecordingElasticsearch, index: str) -> str:
    body = next(r.body for r in client.recorded if r.method == "PUT" and r.path == f"/{index}")
    return body["mappings"]["properties"]["embedding"]["similarity"]


@pytest.fixture(scope="module")
def bare_transformer(tmp_path_factory, tiny_bert):
    """A checkpoint as many are published: config + weights + tokenizer, no sentence-transformers modules (so no
    Normalize module: eland's trace mean-pools and does not normalize)."""
    directory = tmp_path_factory.mktemp("bare") / "bare-bert"
    directory.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        if (tiny_bert / name).exists():
            shutil.copy(tiny_bert / name, directory / name)
    return directory


def test_start_deployment_waits_longer_on_the_client_than_in_the_cluster(es_spec, tiny_e5_bert, tmp_path):
    backend, client = _backend()
    spec = resolve_model(str(tiny_e5_bert))
    options = DeploymentOptions(timeout="300s")
    backend.import_model(spec, backend.prefix_plan(spec, Mode.SERVER), model_id="m", work_dir=tmp_path, options=options)
    start = next(r for r in client.recorded if r.path.endswith("/deployment/_start"))
    assert start.params["timeout"] == "300s"
    assert isinstance(start.request_timeout, int | float) and start.request_timeout > 300
    assert start.retry_on_timeout is False


def test_deploy_proves_the_model_answers_with_a_spec_valid_infer(es_spec, tiny_e5_bert, tmp_path):
    backend, client = _backend()
    spec = resolve_model(str(tiny_e5_bert))
    model = backend.import_model(spec, backend.prefix_plan(spec, Mode.SERVER), model_id="m", work_dir=tmp_path)
    infer = [r for r in client.recorded if r.path == "/_ml/trained_models/m/_infer"]
    assert len(infer) == 1 and model.answered_dims == spec.dims
    assert es_spec.validate_request("ml.infer_trained_model", infer[0].body, path={"model_id": "m"}) == []


def test_a_deployment_timeout_names_the_deploy_timeout_option(tiny_e5_bert, tmp_path):
    class Slow(RecordingElasticsearch):
        def _answer(self, method, path, body):
            if path.endswith("/deployment/_start"):
                raise ApiError("timeout", _meta(408), {"error": {"type": "timeout_exception"}})
            return super()._answer(method, path, body)

    backend, _ = _backend(Slow())
    spec = resolve_model(str(tiny_e5_bert))
    with pytest.raises(ModelNotDeployedError, match="--deploy-timeout"):
        backend.import_model(spec, backend.prefix_plan(spec, Mode.SERVER), model_id="m", work_dir=tmp_path)


def test_the_traced_model_s_norms_decide_dot_product_or_cosine(tiny_e5_bert, bare_transformer, tmp_path):
    """Run what eland traced (the TorchScript Elasticsearch runs) and measure the vectors' norms: a checkpoint
    without a Normalize module gives non-unit vectors, which a ``dot_product`` field would reject."""
    import torch
    from eland.ml.pytorch.transformers import TransformerModel

    from e5plugin.packaging import eland_import

    norms = {}
    for name, directory in (("normalized", tiny_e5_bert), ("bare", bare_transformer)):
        spec = resolve_model(str(directory), query_prefix="query: ", passage_prefix="passage: ")
        model = TransformerModel(model_id=str(directory), task_type="text_embedding", es_version=(9, 5, 4))
        (tmp_path / name).mkdir()
        path, _config, _vocab = model.save(str(tmp_path / name))
        inputs = model._traceable_model._compatible_inputs()
        with torch.no_grad():
            output = torch.jit.load(path)(*inputs)
        norms[name] = float(output.reshape(-1, output.shape[-1]).norm(dim=-1).max())
        plan = _backend()[0].prefix_plan(spec, Mode.SERVER)
        traced = eland_import.trace(spec, plan, (9, 5, 4), tmp_path / f"{name}-e5plugin")
        assert traced.normalized is (abs(norms[name] - 1.0) < 1e-3)
        assert traced.config.metadata["e5plugin"]["output_normalized"] is traced.normalized
    assert abs(norms["normalized"] - 1.0) < 1e-3 and abs(norms["bare"] - 1.0) > 1e-2


@pytest.mark.parametrize(("model", "similarity"), [("tiny_e5_bert", "dot_product"), ("bare_transformer", "cosine")])
def test_server_mode_mapping_follows_what_the_traced_model_outputs(request, model, similarity):
    directory = request.getfixturevalue(model)
    backend, client = _backend()
    spec = resolve_model(str(directory), query_prefix="query: ", passage_prefix="passage: ")
    deploy(backend, spec, DeployRequest(index="docs", mode=Mode.SERVER, model_id="m"))
    assert _index_similarity(client, "docs") == similarity


def test_a_bulk_through_a_pipeline_is_never_resent_on_a_timeout():
    """The cluster keeps embedding a timed-out bulk: a retry would run the model on every document again."""
    backend, client = _backend()
    actions = [{"_index": "docs", "_id": str(i), "_source": {"text": f"doc {i}"}} for i in range(3)]
    list(backend.streaming_bulk(actions, pipeline="e5plugin-docs", raise_on_error=False))
    bulk = next(r for r in client.recorded if r.path.endswith("/_bulk"))
    assert bulk.retry_on_timeout is False
    assert isinstance(bulk.request_timeout, int | float) and bulk.request_timeout >= 300
    client.recorded.clear()
    list(backend.streaming_bulk(actions, raise_on_error=False))  # no pipeline: the connection's settings
    bulk = next(r for r in client.recorded if r.path.endswith("/_bulk"))
    assert bulk.retry_on_timeout is not False


def test_an_existing_dot_product_index_refuses_a_model_that_does_not_normalize(bare_transformer):
    """An index mapped before the fix (dot_product) would reject every vector of a non-normalizing model."""
    from elastic_transport import HeadApiResponse

    from e5plugin.errors import ConflictError

    class Existing(RecordingElasticsearch):
        def perform_request(self, method, path, **kwargs):
            if method == "HEAD" and path == "/docs":
                self.recorded.append(Recorded(method, path, {}, None))
                return HeadApiResponse(meta=_meta(200))
            return super().perform_request(method, path, **kwargs)

        def _answer(self, method, path, body):
            vector = {"type": "dense_vector", "dims": 32, "similarity": "dot_product"}
            if path == "/docs/_mapping":
                return {"docs": {"mappings": {"properties": {"embedding": vector}}}}
            if path == "/docs/_count":
                return {"count": 0}
            return super()._answer(method, path, body)

    backend, client = _backend(Existing())
    spec = resolve_model(str(bare_transformer), query_prefix="query: ", passage_prefix="passage: ")
    with pytest.raises(ConflictError, match="dot_product"):
        deploy(backend, spec, DeployRequest(index="docs", mode=Mode.SERVER, model_id="m"))
    assert not [r for r in client.recorded if r.path.startswith("/_ingest/pipeline/") and r.method == "PUT"]
    assert not [r for r in client.recorded if r.path.startswith("/docs") and r.method == "PUT"]
