"""Reliability and security against real nodes: bad input, faults (kill/restart, 429, resets), load, TLS, roles.
Nothing is mocked: each fault is produced on a real node or a real socket."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.errors import (
    ClusterUnreachableError,
    ConflictError,
    ModelNotDeployedError,
    PermissionDeniedError,
)
from e5plugin.ingest import Checkpoint, ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch


def _client_index(backend, spec, index: str):
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    return Embedder(spec, plan=result.setup.plan)


# ---- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.elasticsearch
def test_megabyte_document_duplicate_ids_and_existing_index(es_backend, tiny_e5_bert):
    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(es_backend, spec, "rel-input")
    big = "semantic search " * 65_536  # ~1 MB of text: embedded from its first max_length tokens, stored whole
    docs = [{"id": "big", "text": big}, {"id": "dup", "text": "first"}, {"id": "dup", "text": "second wins"}]
    report = ingest(es_backend, "rel-input", docs, embedder=embedder, refresh=True)
    assert report.ok and report.indexed == 3
    assert es_backend.count("rel-input") == 2  # same id twice in one batch: one document, the last version
    assert es_backend.get_document("rel-input", "dup")["text"] == "second wins"
    assert len(es_backend.get_document("rel-input", "big")["text"]) == len(big)
    es_backend.delete_index("rel-other")
    es_backend.client.indices.create(index="rel-other", mappings={"properties": {"text": {"type": "keyword"}}})
    with pytest.raises(ConflictError, match="without a vector field"):
        deploy(es_backend, spec, DeployRequest(index="rel-other"))


# ---- faults ---------------------------------------------------------------------------------------------------
@pytest.mark.elasticsearch
def test_node_killed_mid_ingest_then_resume_gives_every_document_exactly_once(elasticsearch, tiny_e5_bert, tmp_path):
    if elasticsearch.node is None:
        pytest.skip("needs a node started by the suite (it is killed and restarted)")
    backend = connect(elasticsearch.config(max_retries=1, request_timeout=5), engine="elasticsearch")
    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(backend, spec, "rel-kill")
    docs = [{"text": f"document {i} about search"} for i in range(3000)]
    checkpoint = Checkpoint(tmp_path / "ckpt.json", every=100)
    sent = 0

    def kill_after_some(n: int) -> None:
        nonlocal sent
        sent += n
        if sent == 700:
            elasticsearch.node.kill()  # SIGKILL, as a crash

    with pytest.raises(ClusterUnreachableError):
        ingest(
            backend,
            "rel-kill",
            docs,
            embedder=embedder,
            batch_size=100,
            checkpoint=checkpoint,
            progress=kill_after_some,
            source_name="kill",
        )
    assert 0 < Checkpoint(checkpoint.path).done < len(docs)
    elasticsearch.node.start()
    resumed = Checkpoint(checkpoint.path)
    already = resumed.done
    report = ingest(
        backend,
        "rel-kill",
        docs,
        embedder=embedder,
        batch_size=100,
        checkpoint=resumed,
        source_name="kill",
        refresh=True,
    )
    assert report.ok and report.skipped == already > 0
    assert backend.count("rel-kill") == len(docs)  # all present, none twice (stable ids)


@pytest.fixture(scope="module")
def tiny_queue_elasticsearch():
    """A node whose write thread pool is 1 thread with a queue of 1: concurrent bulks get HTTP 429."""
    from e5plugin.devcluster import start_node

    node = start_node(
        "elasticsearch",
        name=f"rel-429-{id(object())}",
        heap="512m",
        fresh=True,
        extra_settings={"thread_pool.write.size": "1", "thread_pool.write.queue_size": "1"},
    )
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)


@pytest.mark.elasticsearch
def test_bulk_rejections_are_retried_with_backoff_and_nothing_is_lost(tiny_queue_elasticsearch, tiny_e5_bert):
    backend = connect(ConnectionConfig(urls=[tiny_queue_elasticsearch.url]), engine="elasticsearch")
    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(backend, spec, "rel-429")
    backend.delete_index("rel-429-noise")
    docs = [{"id": str(i), "text": f"doc {i}"} for i in range(2000)]
    vectors = embedder.encode_passages([d["text"] for d in docs])
    rejected = []

    def hammer(worker: int) -> None:  # other writers competing for the single write thread
        from elasticsearch import helpers

        for _ in range(4):
            actions = (
                {
                    "_index": "rel-429-noise",
                    "_id": f"w{worker}-{i}",
                    "_source": {"text": "x", "embedding": vectors[i % len(vectors)].tolist()},
                }
                for i in range(300)
            )
            for ok, item in helpers.streaming_bulk(
                backend.client, actions, chunk_size=50, raise_on_error=False, max_retries=20, initial_backoff=0.2
            ):
                if not ok and item["index"]["status"] == 429:
                    rejected.append(1)

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
    for w in workers:
        w.start()
    report = ingest(backend, "rel-429", docs, embedder=embedder, batch_size=50, initial_backoff=0.1, refresh=True)
    for w in workers:
        w.join()
    assert report.ok and report.indexed == len(docs)
    backend.refresh("rel-429")
    assert backend.count("rel-429") == len(docs)
    stats = backend.client.nodes.stats(metric="thread_pool")
    assert sum(n["thread_pool"]["write"]["rejected"] for n in stats["nodes"].values()) > 0  # 429s did happen


def test_connection_resets_give_bounded_retries_then_a_clear_error():
    """A real socket that accepts and resets every connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    stop = threading.Event()

    def reset_all() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=reset_all, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(ClusterUnreachableError, match="Cannot reach"):
            connect(ConnectionConfig(urls=[f"http://127.0.0.1:{port}"], max_retries=2, request_timeout=2))
        backend = connect(
            ConnectionConfig(urls=[f"http://127.0.0.1:{port}"], max_retries=2, request_timeout=2),
            engine="elasticsearch",
        )
        with pytest.raises(ClusterUnreachableError, match="Cannot reach Elasticsearch"):
            backend.index_exists("x")
        assert time.monotonic() - started < 30
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.mark.opensearch
def test_undeployed_model_is_detected_by_doctor_and_redeployed_by_deploy(opensearch, os_backend, tiny_e5_bert):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    os_backend.apply_one_node_ml_settings()
    spec = resolve_model(str(tiny_e5_bert))
    request = DeployRequest(index="rel-undeploy", mode=Mode.SERVER, model_id="rel-tiny", replicas=0)
    model_id = deploy(os_backend, spec, request).model.model_id
    with pytest.raises(ModelNotDeployedError, match="did not finish within"):
        os_backend.undeploy(model_id)
        os_backend.deploy(model_id, timeout=0.0)  # a deployment that times out says what to do
    deadline = time.monotonic() + 120  # the timed-out deployment goes on in the cluster: let it finish first
    while os_backend.model_state(model_id) not in os_backend.DEPLOYED and time.monotonic() < deadline:
        time.sleep(0.5)
    os_backend.undeploy(model_id)  # as after a restart without auto-redeploy
    deadline = time.monotonic() + 120  # undeploy is asynchronous; slow on a loaded machine
    while os_backend.model_state(model_id) in (*os_backend.DEPLOYED, "DEPLOYING") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert os_backend.model_state(model_id) not in os_backend.DEPLOYED
    doctor = CliRunner().invoke(cli, ["--url", opensearch.url, "doctor"])
    assert doctor.exit_code == 1 and model_id in doctor.output and "e5plugin deploy" in doctor.output
    again = deploy(os_backend, spec, request)
    assert again.model.model_id == model_id and again.model.state == "DEPLOYED" and again.model.action == "reused"


@pytest.mark.opensearch
def test_pipeline_referencing_a_deleted_model_keeps_documents_and_backfill_fixes_them(
    opensearch, os_backend, tiny_e5_bert
):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    os_backend.apply_one_node_ml_settings()
    spec = resolve_model(str(tiny_e5_bert))
    os_backend.delete_index("rel-deleted")
    request = DeployRequest(index="rel-deleted", mode=Mode.SERVER, model_id="rel-deleted-model", replicas=0)
    os_backend.delete_model(deploy(os_backend, spec, request).model.model_id)
    report = ingest(os_backend, "rel-deleted", [{"id": "1", "text": "written while the model was gone"}], refresh=True)
    assert (report.indexed, report.failed) == (0, 1) and report.failures[0].id == "1"  # reported as failed
    assert os_backend.get_document("rel-deleted", "1")["e5plugin_error"]["reason"]
    doctor = CliRunner().invoke(cli, ["--url", opensearch.url, "doctor"])
    assert doctor.exit_code == 1 and "rel-deleted" in doctor.output
    redeployed = deploy(os_backend, spec, request)  # registers the model again and points the pipeline at it
    assert redeployed.pipeline_action == "updated"
    backfill = CliRunner().invoke(cli, ["--url", opensearch.url, "reindex", "--index", "rel-deleted"])
    assert backfill.exit_code == 0, backfill.output
    fixed = os_backend.get_document("rel-deleted", "1")
    assert "e5plugin_error" not in fixed and len(fixed["embedding"]) == spec.dims
    assert redeployed.index_action == "updated"  # the index's _meta names the new model id
    hits = SemanticSearch.for_index("rel-deleted", backend=os_backend).search("the model was gone", k=1)
    assert [h.id for h in hits] == ["1"]


# ---- load -----------------------------------------------------------------------------------------------------
@pytest.mark.elasticsearch
@pytest.mark.slow
def test_query_helper_shared_by_16_threads_for_10000_queries(es_backend, tiny_e5_bert, capsys):
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(es_backend, spec, "rel-load")
    ingest(
        es_backend,
        "rel-load",
        [{"id": str(i), "text": f"document {i} text"} for i in range(500)],
        embedder=embedder,
        refresh=True,
    )
    helper = SemanticSearch.for_index("rel-load", backend=es_backend, embedder=embedder)
    latencies: list[float] = []
    errors: list[Exception] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            assert len(helper.search(f"document {i % 500}", k=5)) == 5
        except Exception as exc:
            errors.append(exc)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(10_000)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    with capsys.disabled():
        print(
            f"\n16 threads x 10,000 queries: {10_000 / wall:.0f} q/s, p50 {np.percentile(ms, 50):.1f} ms, "
            f"p95 {np.percentile(ms, 95):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, errors {len(errors)}"
        )
    assert not errors and len(latencies) == 10_000


# ---- security -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_elasticsearch():
    from e5plugin.devcluster import start_node

    node = start_node("elasticsearch", name=f"rel-tls-{id(object())}", heap="512m", fresh=True, tls=True)
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)


@pytest.mark.secured
def test_tls_verified_by_default_refused_without_ca_accepted_with_it(tls_elasticsearch):
    from click.testing import CliRunner

    from e5plugin.cli import cli

    config = ConnectionConfig(urls=[tls_elasticsearch.url], username="elastic", password=tls_elasticsearch.password)
    with pytest.raises(ClusterUnreachableError, match=r"TLS verification failed.*--ca-certs"):
        connect(config)
    config.ca_certs = str(tls_elasticsearch.ca_certs)
    assert connect(config).capabilities.engine == "elasticsearch"
    env = {"E5PLUGIN_USERNAME": "elastic", "E5PLUGIN_PASSWORD": tls_elasticsearch.password}
    refused = CliRunner().invoke(cli, ["--url", tls_elasticsearch.url, "doctor"], env=env)
    assert refused.exit_code == ClusterUnreachableError.exit_code
    accepted = CliRunner().invoke(
        cli, ["--url", tls_elasticsearch.url, "--ca-certs", str(tls_elasticsearch.ca_certs), "doctor"], env=env
    )
    assert "engine     elasticsearch" in accepted.output
    assert tls_elasticsearch.password not in refused.output + accepted.output


@pytest.mark.secured
def test_read_only_role_can_search_but_not_deploy_or_write(secured_elasticsearch, tiny_e5_bert):
    from e5plugin.devcluster.elasticsearch import add_file_role, add_file_user

    node = secured_elasticsearch.node
    if node is None:
        pytest.skip("needs the suite's secured node (file realm)")
    admin = connect(secured_elasticsearch.config())
    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(admin, spec, "ro-docs")
    ingest(admin, "ro-docs", [{"id": "1", "text": "hello"}], embedder=embedder, refresh=True)
    add_file_role(node, "e5_reader", indices=[{"names": ["ro-*"], "privileges": ["read", "view_index_metadata"]}])
    add_file_user(node, "reader", "reader-Pa55word", ["e5_reader"])
    deadline = time.monotonic() + 30
    while True:  # the file realm reloads within a few seconds
        try:
            reader = connect(secured_elasticsearch.config(username="reader", password="reader-Pa55word"))
            hits = SemanticSearch.for_index("ro-docs", backend=reader, embedder=embedder).search("hello", k=1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert [h.id for h in hits] == ["1"]
    with pytest.raises(PermissionDeniedError, match="403"):
        deploy(reader, spec, DeployRequest(index="ro-new"))
    with pytest.raises(PermissionDeniedError, match="indices:data/write/bulk"):
        ingest(reader, "ro-docs", [{"id": "2", "text": "not allowed"}], embedder=embedder)
    assert admin.count("ro-docs") == 1


@pytest.mark.secured
def test_api_key_is_sent_and_a_refused_key_is_a_clear_error_without_the_key(secured_elasticsearch):
    """A real API key cannot be created on the integ-test distribution (its `.security` index needs the
    analysis-common module): this checks the key reaches the node as `Authorization: ApiKey` and a refused key
    ends in exit 4 with the secret masked everywhere."""
    import base64

    from click.testing import CliRunner

    from e5plugin.cli import cli
    from e5plugin.errors import AuthenticationError

    key = base64.b64encode(b"e5plugin-unknown-id:not-a-real-api-key-Secr3t").decode()
    with pytest.raises(AuthenticationError, match="--api-key") as refused:
        connect(ConnectionConfig(urls=[secured_elasticsearch.url], api_key=key))
    assert key not in str(refused.value)
    result = CliRunner().invoke(cli, ["--url", secured_elasticsearch.url, "--api-key", key, "doctor"])
    assert result.exit_code == AuthenticationError.exit_code and "HTTP 401" in result.output
    assert key not in result.output
    dry = CliRunner().invoke(
        cli, ["--url", secured_elasticsearch.url, "--api-key", key, "deploy", "-m", "x", "-i", "y", "--dry-run"]
    )
    assert key not in dry.output


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_client_ingest_keeps_nothing_per_document_over_100k_documents(es_backend, tiny_e5_bert):
    """100,000 generated documents streamed through client-mode ingest: the Python heap traced by ``tracemalloc``
    after 100k is within 2 MB of the heap after 10k. Anything kept per document (an id, a position, a vector) costs
    at least ~40 bytes, i.e. over 3.5 MB for the 90k documents in between, so a leak fails while the figure does
    not depend on the machine's load or on the allocator (the RSS, which does, is a benchmark:
    benchmarks/memory.py)."""
    import random
    import tracemalloc

    words = ["the", "of", "and", "to", "in", "vector", "search", "engine", "model", "text", "answer", "index"]
    spec = resolve_model(str(tiny_e5_bert))
    embedder = _client_index(es_backend, spec, "rel-memory")
    embedder.encode_passages(["warm up"] * 64)

    def documents(count: int):
        rng = random.Random(11)
        for i in range(count):
            yield {"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(rng.randint(10, 40)))}

    done, heap = [0], {}

    def progress(n: int) -> None:
        done[0] += n
        for mark in (10_000, 100_000):
            if done[0] >= mark and mark not in heap:
                heap[mark] = tracemalloc.get_traced_memory()[0] / 2**20

    tracemalloc.start()
    try:
        report = ingest(
            es_backend, "rel-memory", documents(100_000), embedder=embedder, batch_size=512, progress=progress
        )
    finally:
        tracemalloc.stop()
    assert report.ok and report.indexed == 100_000
    es_backend.refresh("rel-memory")
    assert es_backend.count("rel-memory") == 100_000
    print(f"traced Python heap after 10k: {heap[10_000]:.2f} MB, after 100k: {heap[100_000]:.2f} MB")
    assert heap[100_000] - heap[10_000] < 2, heap
    es_backend.delete_index("rel-memory")
