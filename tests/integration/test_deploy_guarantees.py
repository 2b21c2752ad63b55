"""Deploy and model lifecycle, from the user's side on real nodes (issue 12, defects 4, 5, 6).

- a failed deploy leaves the live index as it was (pipeline, settings, ``_meta``);
- a model or mode change on a non-empty index is refused (``rollout`` is the way), ``default_pipeline`` and
  ``_meta`` stay consistent;
- ``rollout`` never switches the alias to an empty, vector-less or failed index;
- ``deploy --replace`` refuses to delete a model other indices' pipelines still use;
- ``deploy`` proves the model answers; ingest counts what the pipeline marked as failed (exit 9, with ids).
"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest

from e5plugin.bodies import ERROR_FIELD
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.errors import ConflictError, DimensionMismatchError, IngestFailedError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.tasks.rollout import rollout

DOCS = [{"id": str(i), "text": f"document {i} about a password reset"} for i in range(4)]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup(request):
    """Indices and ml-commons models a test created, removed when it ends (the shared node's memory)."""
    created: dict[str, list] = {"indices": [], "models": [], "pipelines": []}
    yield created
    for backend, index in created["indices"]:
        with contextlib.suppress(Exception):
            backend.delete_index(index)
    for backend, pipeline in created["pipelines"]:
        with contextlib.suppress(Exception):
            backend.client.ingest.delete_pipeline(id=pipeline)
    for backend, name in created["models"]:
        for model in backend.find_models(name):
            with contextlib.suppress(Exception):
                backend.delete_model(model["model_id"])


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """Another tiny BERT, with 48-dim vectors (the usual tiny models make 32)."""
    from tiny_models import build_tiny_bert

    return build_tiny_bert(
        tmp_path_factory.mktemp("wide") / "wide-bert", hidden=48, prompts={"query": "query: ", "passage": "passage: "}
    )


def _settings(backend, index: str) -> dict:
    return backend.index_settings(index, ["default_pipeline"])


# ---- defect 4: a failed deploy changes nothing; model/mode changes are refused -------------------------------------
@pytest.mark.opensearch
def test_failed_deploy_leaves_the_live_pipeline_and_meta_untouched(os_backend, tiny_e5_bert, wide_bert, cleanup):
    os_backend.apply_one_node_ml_settings()
    index, model = _name("dg-fail"), _name("dg-fail-model")
    cleanup["indices"].append((os_backend, index))
    cleanup["pipelines"].append((os_backend, f"e5plugin-{index}"))
    cleanup["models"] += [(os_backend, model), (os_backend, model + "-wide")]
    spec = resolve_model(str(tiny_e5_bert))
    first = deploy(os_backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id=model, replicas=0))
    pipeline_before = os_backend.get_pipeline(first.setup.pipeline)
    meta_before = os_backend.index_meta(index)
    wide = resolve_model(str(wide_bert))
    with pytest.raises(DimensionMismatchError):
        deploy(os_backend, wide, DeployRequest(index=index, mode=Mode.SERVER, model_id=model + "-wide", replicas=0))
    assert os_backend.get_pipeline(first.setup.pipeline) == pipeline_before  # still embeds with the 32-dim model
    assert os_backend.index_meta(index) == meta_before
    assert not os_backend.find_models(model + "-wide")  # nothing imported for a deploy that cannot succeed


@pytest.mark.opensearch
def test_client_to_server_on_a_non_empty_index_is_refused_and_an_empty_one_gets_its_pipeline(
    os_backend, tiny_e5_bert, cleanup
):
    os_backend.apply_one_node_ml_settings()
    index, model = _name("dg-mode"), _name("dg-mode-model")
    cleanup["indices"].append((os_backend, index))
    cleanup["pipelines"].append((os_backend, f"e5plugin-{index}"))
    cleanup["models"].append((os_backend, model))
    spec = resolve_model(str(tiny_e5_bert))
    deploy(os_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    # an empty index may change mode: the default pipeline and _meta then agree
    server = deploy(os_backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id=model, replicas=0))
    assert _settings(os_backend, index)["default_pipeline"] == server.setup.pipeline
    assert os_backend.index_meta(index)["mode"] == "server"
    report = ingest(os_backend, index, DOCS, refresh=True)
    assert report.ok and report.indexed == len(DOCS)
    assert len(os_backend.get_document(index, "0")["embedding"]) == spec.dims
    # now the index holds vectors of the server-side model: going back to client mode is refused
    meta_before = os_backend.index_meta(index)
    with pytest.raises(ConflictError, match="rollout"):
        deploy(os_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    assert os_backend.index_meta(index) == meta_before
    assert _settings(os_backend, index)["default_pipeline"] == server.setup.pipeline


@pytest.mark.elasticsearch
def test_another_model_of_the_same_size_on_a_non_empty_index_is_refused(es_backend, tiny_e5_bert, tiny_bert, cleanup):
    index = _name("dg-model")
    cleanup["indices"].append((es_backend, index))
    spec = resolve_model(str(tiny_e5_bert))
    deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    ingest(es_backend, index, DOCS, embedder=Embedder(spec), refresh=True)
    meta_before = es_backend.index_meta(index)
    other = resolve_model(str(tiny_bert), query_prefix="", passage_prefix="")
    assert other.dims == spec.dims
    with pytest.raises(ConflictError, match="rollout"):
        deploy(es_backend, other, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    assert es_backend.index_meta(index) == meta_before
    again = deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))  # same model: a no-op
    assert again.index_action == "exists" and not again.changed


# ---- defect 5: rollout never switches to a bad index; --replace never breaks other indices -------------------------
@pytest.mark.elasticsearch
@pytest.mark.parametrize("bad", ["empty", "without-vectors"])
def test_rollout_does_not_switch_to_an_empty_or_vector_less_index(es_backend, tiny_e5_bert, cleanup, bad):
    alias = _name("dg-alias")
    spec = resolve_model(str(tiny_e5_bert))
    first = rollout(es_backend, spec, alias, documents=DOCS, request=DeployRequest(index="x", replicas=0))
    cleanup["indices"].append((es_backend, first.index))
    documents = [] if bad == "empty" else [{"id": str(i), "title": "no text field"} for i in range(4)]
    with pytest.raises(IngestFailedError) as raised:
        try:
            rollout(
                es_backend,
                spec,
                alias,
                documents=documents,
                request=DeployRequest(index="x", replicas=0),
                delete_old=True,
            )
        finally:
            cleanup["indices"].append((es_backend, f"{alias}-v2"))
    assert alias in str(raised.value) and first.index in str(raised.value)
    assert es_backend.alias_indices(alias) == [first.index]  # not switched
    assert es_backend.count(first.index) == len(DOCS)  # and the good version was not deleted


@pytest.mark.elasticsearch
def test_rollout_keeps_the_index_option_of_the_current_version(es_backend, tiny_e5_bert, cleanup):
    """A new version built by `rollout` is quantized like the one it replaces (it was silently float hnsw: 4x the
    memory of int8_hnsw, 16x that of bbq_hnsw)."""
    alias = _name("dg-option")
    spec = resolve_model(str(tiny_e5_bert))
    request = DeployRequest(index="x", replicas=0, index_options="int8_hnsw")
    first = rollout(es_backend, spec, alias, documents=DOCS, request=request)
    cleanup["indices"].append((es_backend, first.index))
    second = rollout(es_backend, spec, alias)  # from the alias's current index, settings like it
    cleanup["indices"].append((es_backend, second.index))
    for index in (first.index, second.index):
        options = es_backend.get_mapping(index)["properties"]["embedding"]["index_options"]
        assert options["type"] == "int8_hnsw", (index, options)
    assert es_backend.alias_indices(alias) == [second.index]


@pytest.mark.opensearch
def test_replace_refuses_to_delete_a_model_another_index_uses(os_backend, tiny_e5_bert, tiny_bert, cleanup):
    os_backend.apply_one_node_ml_settings()
    first, second, model = _name("dg-user"), _name("dg-replacer"), _name("dg-shared-model")
    for index in (first, second):
        cleanup["indices"].append((os_backend, index))
        cleanup["pipelines"].append((os_backend, f"e5plugin-{index}"))
    cleanup["models"].append((os_backend, model))
    spec = resolve_model(str(tiny_e5_bert))
    deployed = deploy(os_backend, spec, DeployRequest(index=first, mode=Mode.SERVER, model_id=model, replicas=0))
    other = resolve_model(str(tiny_bert), query_prefix="", passage_prefix="")
    with pytest.raises(ConflictError) as raised:
        deploy(
            os_backend,
            other,
            DeployRequest(index=second, mode=Mode.SERVER, model_id=model, replace_model=True, replicas=0),
        )
    assert first in str(raised.value)
    assert os_backend.model_state(deployed.model.model_id) == "DEPLOYED"  # still there, still serving `first`
    assert not os_backend.index_exists(second)


# ---- defect 6: the model must answer; pipeline-marked documents are failures ---------------------------------------
@pytest.mark.opensearch
def test_ingest_counts_documents_the_pipeline_marked_as_failed(opensearch, os_backend, tiny_e5_bert, cleanup):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    os_backend.apply_one_node_ml_settings()
    index, model = _name("dg-marked"), _name("dg-marked-model")
    cleanup["indices"].append((os_backend, index))
    cleanup["pipelines"].append((os_backend, f"e5plugin-{index}"))
    cleanup["models"].append((os_backend, model))
    spec = resolve_model(str(tiny_e5_bert))
    result = deploy(os_backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id=model, replicas=0))
    os_backend.undeploy(result.model.model_id)  # what a restarted node looks like while it redeploys
    lines = "".join(json.dumps(d) + "\n" for d in DOCS)
    run = CliRunner().invoke(cli, ["--url", opensearch.url, "ingest", "-", "--index", index], input=lines)
    assert run.exit_code == 9, run.output
    for doc in DOCS:
        assert doc["id"] in run.output
        assert os_backend.get_document(index, doc["id"])[ERROR_FIELD]["reason"]  # kept, marked


@pytest.mark.opensearch
def test_deploy_proves_the_model_answers_before_calling_it_ready(os_backend, tiny_e5_bert, cleanup, monkeypatch):
    """After a restart ml-commons reports the model DEPLOYED while it still loads it: deploy must not trust that."""
    os_backend.apply_one_node_ml_settings()
    index, model = _name("dg-ready"), _name("dg-ready-model")
    cleanup["indices"].append((os_backend, index))
    cleanup["pipelines"].append((os_backend, f"e5plugin-{index}"))
    cleanup["models"].append((os_backend, model))
    spec = resolve_model(str(tiny_e5_bert))
    request = DeployRequest(index=index, mode=Mode.SERVER, model_id=model, replicas=0)
    deployed = deploy(os_backend, spec, request)
    os_backend.undeploy(deployed.model.model_id)
    real_state = type(os_backend).model_state
    # the model index still says DEPLOYED (as right after a node restart), the node does not serve it
    monkeypatch.setattr(
        os_backend,
        "model_state",
        lambda model_id: "DEPLOYED" if model_id == deployed.model.model_id else real_state(os_backend, model_id),
    )
    again = deploy(os_backend, spec, request)
    monkeypatch.undo()
    assert again.model.model_id == deployed.model.model_id
    report = ingest(os_backend, index, DOCS[:1], refresh=True)
    assert report.ok, report.to_dict()
    assert len(os_backend.get_document(index, "0")["embedding"]) == spec.dims


@pytest.mark.elasticsearch
def test_cli_names_rollout_and_allow_model_change_is_explicit(
    elasticsearch, es_backend, tiny_e5_bert, tiny_bert, cleanup
):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    index = _name("dg-cli")
    cleanup["indices"].append((es_backend, index))
    spec = resolve_model(str(tiny_e5_bert))
    base = ["--url", elasticsearch.url, "deploy", "-i", index, "--replicas", "0", "--mode", "client"]
    assert CliRunner().invoke(cli, [*base, "-m", str(tiny_e5_bert)]).exit_code == 0
    ingest(es_backend, index, DOCS, embedder=Embedder(spec), refresh=True)
    other = [*base, "-m", str(tiny_bert), "--no-prefixes"]
    refused = CliRunner().invoke(cli, other)
    assert refused.exit_code == ConflictError.exit_code and "rollout" in refused.output, refused.output
    allowed = CliRunner().invoke(cli, [*other, "--allow-model-change"])
    assert allowed.exit_code == 0, allowed.output
    assert (
        es_backend.index_meta(index)["model"]["weights_sha256"]
        == resolve_model(str(tiny_bert), no_prefixes=True).weights_sha256
    )


# ---- defect 15: a bulk through an ingest pipeline is never re-sent on a timeout ------------------------------------
class _SlowBulkProxy:
    """A real HTTP proxy in front of a node that answers every ``_bulk`` only after ``delay`` seconds (as a bulk
    that runs a model on each document does) and counts the bulk requests it receives."""

    def __init__(self, target: str, delay: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import urllib3

        pool = urllib3.PoolManager()
        self.bulks = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def forward(self) -> None:
                import time

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if "/_bulk" in self.path:
                    proxy.bulks += 1
                    time.sleep(delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = pool.request(self.command, target + self.path, body=body, headers=headers, retries=False)
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        if key.lower() in ("content-type", "x-elastic-product"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer.data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(answer.data)
                except OSError:  # the client gave up waiting
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("elasticsearch", marks=pytest.mark.elasticsearch),
        pytest.param("opensearch", marks=pytest.mark.opensearch),
    ],
)
def test_a_slow_bulk_through_a_pipeline_is_sent_once_not_retried(request, engine, tiny_e5_bert, cleanup):
    from e5plugin.engines import connect

    cluster = request.getfixturevalue(engine)
    admin = request.getfixturevalue("es_backend" if engine == "elasticsearch" else "os_backend")
    index, pipeline = _name("dg-slow"), _name("dg-slow-pipeline")
    cleanup["indices"].append((admin, index))
    cleanup["pipelines"].append((admin, pipeline))
    spec = resolve_model(str(tiny_e5_bert))
    deploy(admin, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    admin.client.ingest.put_pipeline(id=pipeline, body={"processors": []})  # this node has no ingest-common module
    admin.put_index_settings(index, {"default_pipeline": pipeline})
    proxy = _SlowBulkProxy(cluster.url, delay=3.0)
    try:
        backend = connect(cluster.config(urls=[proxy.url], request_timeout=1.0, max_retries=3), engine)
        report = ingest(backend, index, DOCS, embedder=Embedder(spec), refresh=True)
    finally:
        proxy.close()
    assert proxy.bulks == 1  # waited for it, never re-sent
    assert report.ok and report.indexed == len(DOCS) and admin.count(index) == len(DOCS)
