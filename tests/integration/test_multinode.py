"""Faults on a real 3-node OpenSearch cluster (two cluster_manager+data nodes, one cluster_manager+ml node): a data
node SIGKILLed mid client-mode and mid server-mode ingest, the ML node SIGKILLed mid server-side ingest, a full
cluster restart (all nodes killed, then started together), a rolling restart while the query helper runs 16 threads;
and on a real 3-node Elasticsearch cluster (default roles, client mode) a data node SIGKILLed mid-ingest.

Every test leaves all three nodes running. Figures (seconds, counts) are printed with the prefix ``FIGURES``
(``pytest -s -m multinode`` shows them)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.devcluster.cluster import Cluster, start_all, wait_for_nodes
from e5plugin.devcluster.node import Node
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.engines.opensearch import OpenSearchBackend
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

#: query threads during the rolling restart (issue 14)
QUERY_THREADS = 16
#: each query thread pauses this long between queries (a user's think time): 16 threads without a pause keep a
#: 2-core machine so busy that one node restart took over 2 minutes at load 20
QUERY_THINK_SECONDS = 0.1
#: how long the full-restart test waits for ml-commons' auto-redeploy before it repairs the model with deploy
AUTO_REDEPLOY_WAIT_SECONDS = 120


def _figures(name: str, **values: object) -> None:
    print(f"FIGURES {name} {json.dumps(values)}", flush=True)


def _backend(cluster: Cluster) -> OpenSearchBackend:
    """A client that knows every node's URL: a request to a dead node is retried on another."""
    config = ConnectionConfig(urls=cluster.urls, max_retries=5, request_timeout=60)
    return connect(config, engine=cluster.engine)  # type: ignore[return-value]


def _cli(cluster: Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``e5plugin --url <every node> ARGS`` in its own process, as a user runs it."""
    return subprocess.run(_cli_command(cluster, *args), capture_output=True, text=True, timeout=timeout)


def _cli_command(cluster: Cluster, *args: str) -> list[str]:
    code = "from e5plugin.cli import main; main()"
    return [sys.executable, "-c", code, "--url", ",".join(cluster.urls), *args]


def _write_docs(path: Path, count: int, text: str) -> list[str]:
    ids = [f"doc-{i}" for i in range(count)]
    with path.open("w") as out:
        for i, doc_id in enumerate(ids):
            out.write(json.dumps({"id": doc_id, "text": text.format(i=i)}) + "\n")
    return ids


def _ingest_killing(cluster: Cluster, backend, index: str, source: Path, victim: Node, kill_at: int) -> dict:
    """``e5plugin ingest SOURCE --index INDEX --json`` (no --resume) in its own process; ``victim`` is SIGKILLed once
    ``kill_at`` documents are searchable in the index. The CLI's summary, exit status and timings."""
    started = time.monotonic()
    proc = subprocess.Popen(
        _cli_command(cluster, "ingest", str(source), "--index", index, "--batch-size", "100", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    count_at_kill = None
    try:
        while proc.poll() is None and killed_at is None:
            try:
                count = backend.count(index)
            except Exception:  # the index may not answer for a moment: try again
                count = 0
            if count >= kill_at:
                victim.kill()  # SIGKILL, as a crash: its primaries' replicas on another data node take over
                killed_at, count_at_kill = time.monotonic(), count
            time.sleep(0.2)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = time.monotonic()
    assert killed_at is not None, f"the ingest finished before {kill_at} documents were searchable:\n{out}\n{err}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return {
        "summary": json.loads(out[out.index("{") :]),
        "stderr": err,
        "seconds_total": round(finished - started, 1),
        "seconds_after_kill": round(finished - killed_at, 1),
        "searchable_at_kill": count_at_kill,
    }


def _members(cluster: Cluster) -> tuple[list[Node], Node]:
    data = [n for n in cluster.nodes if "data" in cluster.roles(n)]
    ml = [n for n in cluster.nodes if "ml" in cluster.roles(n)]
    assert len(data) == 2 and len(ml) == 1, [cluster.roles(n) for n in cluster.nodes]
    return data, ml[0]


def _heal(cluster: Cluster, backend: OpenSearchBackend) -> None:
    """Start any member that is down and wait until all three are in and every shard is assigned."""
    for node in cluster.nodes:
        if not node.is_alive():
            node.start(timeout=240)
    wait_for_nodes(cluster.nodes[0], len(cluster.nodes), timeout=120)
    _green(backend)


def _green(backend: OpenSearchBackend, index: str | None = None, timeout: float = 120.0) -> None:
    """Wait until every shard (of ``index``) is assigned."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = backend.client.cluster.health(index=index).get("status")
        if status == "green":
            return
        time.sleep(1)
    raise AssertionError(f"cluster health {status} after {timeout:.0f}s")


def _primary_holder(cluster: Cluster, backend, index: str) -> Node:
    """The member holding a primary shard of ``index``: killing it makes the cluster promote the replica."""
    primaries = {s["node"] for s in backend.client.cat.shards(index=index, format="json") if s["prirep"] == "p"}
    return cluster.node(sorted(primaries)[0])


def _ids(backend, index: str) -> list[str]:
    scan = backend._helpers().scan  # the engine's client helpers (opensearch-py or elasticsearch-py)
    return [hit["_id"] for hit in scan(backend.client, index=index, query={"_source": False}, size=1000)]


def test_cluster_has_two_data_nodes_and_a_dedicated_ml_node(opensearch_cluster):
    backend = _backend(opensearch_cluster)
    roles = {n["name"]: sorted(n["roles"]) for n in backend.cluster_nodes().values()}
    data, ml = _members(opensearch_cluster)
    assert roles[ml.name] == ["cluster_manager", "ml"]
    assert all("data" in roles[n.name] and "ml" not in roles[n.name] for n in data)
    assert backend.ml_nodes() == {nid: ml.name for nid, n in backend.cluster_nodes().items() if n["name"] == ml.name}
    # the one-node ML settings must not force models onto data nodes when the cluster has ML nodes
    backend.apply_one_node_ml_settings()
    settings = backend.client.cluster.get_settings(flat_settings=True)["persistent"]
    assert "plugins.ml_commons.only_run_on_ml_node" not in settings


def test_data_node_killed_mid_client_ingest_every_document_exactly_once(opensearch_cluster, tiny_e5_bert):
    backend = _backend(opensearch_cluster)
    data, _ml = _members(opensearch_cluster)
    victim = data[0]
    index = "mn-kill-data"
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=1))
    embedder = Embedder(spec, plan=result.setup.plan)
    _green(backend, index)
    docs = [{"id": f"doc-{i}", "text": f"document {i} about multi node search"} for i in range(3000)]
    sent = 0
    killed_at: float | None = None

    def kill_after_some(n: int) -> None:
        nonlocal sent, killed_at
        sent += n
        if killed_at is None and sent >= 700:
            victim.kill()  # SIGKILL, as a crash: its primaries' replicas on the other data node take over
            killed_at = time.monotonic()

    started = time.monotonic()
    try:
        report = ingest(backend, index, docs, embedder=embedder, batch_size=100, progress=kill_after_some, refresh=True)
        finished = time.monotonic()
        assert killed_at is not None and not victim.is_alive()
        assert report.ok and report.failed == 0 and report.indexed == len(docs), report.to_dict()
        ids = _ids(backend, index)
        assert len(ids) == len(set(ids)) == len(docs) and set(ids) == {d["id"] for d in docs}  # exactly once
        health = backend.client.cluster.health(index=index)
        _figures(
            "data_node_killed_client_ingest",
            documents=len(docs),
            present=len(set(ids)),
            duplicates=len(ids) - len(set(ids)),
            seconds_total=round(finished - started, 1),
            seconds_after_kill=round(finished - killed_at, 1),
            index_health_after=health["status"],
        )
    finally:
        _heal(opensearch_cluster, backend)
    assert backend.count(index) == len(docs)  # the restarted node rejoins; nothing reappears twice


def test_data_node_killed_mid_server_ingest_every_document_exactly_once(opensearch_cluster, tiny_e5_bert, tmp_path):
    """Server mode: the data nodes run the ingest pipeline (the ML node embeds); one of them dies mid-load. The CLI
    knows every node's URL, so a bulk request cut off by the crash is sent again to a live node (same ids: stored
    once), and the replica of every primary the dead node held takes over."""
    backend = _backend(opensearch_cluster)
    index = "mn-kill-data-server"
    backend.apply_one_node_ml_settings()
    backend.delete_index(index)
    deployed = _cli(opensearch_cluster, "deploy", "--model", str(tiny_e5_bert), "--index", index, "--mode", "server",
                    "--model-id", "mn-tiny", "--replicas", "1")  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    _green(backend, index)
    victim = _primary_holder(opensearch_cluster, backend, index)
    assert "data" in opensearch_cluster.roles(victim)
    source = tmp_path / "docs.jsonl"
    ids_sent = _write_docs(source, 3000, "server side document {i} about multi node search")
    try:
        run = _ingest_killing(opensearch_cluster, backend, index, source, victim, kill_at=600)
        assert not victim.is_alive()
        summary = run["summary"]
        assert summary["failed"] == 0 and summary["indexed"] == len(ids_sent), (summary, run["stderr"][-2000:])
        backend.refresh(index)
        ids = _ids(backend, index)
        assert len(ids) == len(set(ids)) == len(ids_sent) and set(ids) == set(ids_sent)  # exactly once
        without_vector = backend.count(index, {"exists": {"field": "e5plugin_error"}})
        embedded = backend.count(index, {"exists": {"field": "embedding"}})
        health = backend.client.cluster.health(index=index)
        _figures(
            "data_node_killed_server_ingest",
            documents=len(ids_sent),
            present=len(set(ids)),
            duplicates=len(ids) - len(set(ids)),
            embedded=embedded,
            without_vector=without_vector,
            searchable_at_kill=run["searchable_at_kill"],
            seconds_total=run["seconds_total"],
            seconds_after_kill=run["seconds_after_kill"],
            index_health_after=health["status"],
        )
        assert embedded == len(ids_sent) and without_vector == 0  # the ML node lived: every document has its vector
    finally:
        _heal(opensearch_cluster, backend)
    assert backend.count(index) == len(ids_sent)  # the restarted node rejoins; nothing reappears twice


def _answers(backend: OpenSearchBackend, model_id: str) -> bool:
    try:
        backend.predict(model_id, ["is the model back"], content_type="passage")
        return True
    except Exception:  # "model not ready", node not connected, ...: not (yet) back
        return False


def test_ml_node_killed_mid_server_ingest_documents_kept_then_model_back_and_reindex_fills(
    opensearch_cluster, tiny_e5_bert
):
    backend = _backend(opensearch_cluster)
    _data, ml = _members(opensearch_cluster)
    urls = ",".join(opensearch_cluster.urls)
    index = "mn-kill-ml"
    backend.apply_one_node_ml_settings()
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index(index)
    request = DeployRequest(index=index, mode=Mode.SERVER, model_id="mn-tiny", replicas=1)
    model_id = deploy(backend, spec, request).model.model_id
    assert backend.model_placement(model_id)["nodes"] == [ml.name]  # on the ML node, not on a data node
    placed = CliRunner().invoke(cli, ["--url", urls, "doctor"])
    assert f"runs on: {ml.name}" in placed.output, placed.output
    deploy_args = ["--url", urls, "deploy", "--model", str(tiny_e5_bert), "--index", index, "--mode", "server",
                   "--model-id", "mn-tiny"]  # fmt: skip
    on_data = CliRunner().invoke(cli, [*deploy_args, "--nodes", _data[0].name])  # only_run_on_ml_node is true
    assert on_data.exit_code != 0 and "only_run_on_ml_node" in on_data.output, on_data.output
    assert backend.model_placement(model_id)["nodes"] == [ml.name]  # refused before anything was undeployed
    on_ml = CliRunner().invoke(cli, [*deploy_args, "--nodes", ml.name])  # a custom plan naming the ML node
    assert on_ml.exit_code == 0 and f"runs on     {ml.name}" in on_ml.output, on_ml.output
    docs = [{"id": f"doc-{i}", "text": f"server side document {i}"} for i in range(2000)]
    sent = 0
    killed = False

    def kill_after_some(n: int) -> None:
        nonlocal sent, killed
        sent += n
        if not killed and sent >= 500:
            ml.kill()
            killed = True

    try:
        report = ingest(backend, index, docs, batch_size=100, progress=kill_after_some, refresh=True)
        assert killed and not ml.is_alive()
        # every document is stored: those embedded before the kill with a vector, the rest with the failure marker
        assert backend.count(index) == len(docs)
        marked = backend.count(index, {"exists": {"field": "e5plugin_error"}})
        assert marked > 0 and report.indexed + report.without_vector + report.failed >= len(docs) - 1
        state_after_kill = backend.model_state(model_id)
        doctor = CliRunner().invoke(cli, ["--url", urls, "doctor"])
        assert doctor.exit_code == 1 and model_id in doctor.output, doctor.output
        assert "runs on: no node" in doctor.output, doctor.output  # placement shown, and flagged

        restarted = time.monotonic()
        ml.start(timeout=240)
        node_up = time.monotonic() - restarted
        deadline = time.monotonic() + 60  # ml-commons' auto-redeploy, if it happens, within this
        while not _answers(backend, model_id) and time.monotonic() < deadline:
            time.sleep(2)
        auto_redeployed = _answers(backend, model_id)
        back_after = time.monotonic() - restarted
        repaired_by = "ml-commons auto-redeploy" if auto_redeployed else "e5plugin deploy (the command doctor printed)"
        if not auto_redeployed:
            again = _cli(opensearch_cluster, *_doctor_repair(opensearch_cluster, index, model_id, "mn-tiny"))
            assert again.returncode == 0, again.stdout + again.stderr
            back_after = time.monotonic() - restarted
        assert backend.model_ids("mn-tiny") == [model_id]  # the same model: none registered beside it
        assert _answers(backend, model_id)
        assert backend.model_placement(model_id)["nodes"] == [ml.name]

        filled = time.monotonic()
        backfill = CliRunner().invoke(cli, ["--url", urls, "reindex", "--index", index])
        assert backfill.exit_code == 0, backfill.output
        backend.client.indices.refresh(index=index)
        assert backend.count(index, {"exists": {"field": "e5plugin_error"}}) == 0
        assert backend.count(index, {"exists": {"field": "embedding"}}) == backend.count(index) == len(docs)  # 0 lost
        _figures(
            "ml_node_killed_server_ingest",
            documents=len(docs),
            marked_after_kill=marked,
            model_state_after_kill=state_after_kill,
            ml_node_restart_seconds=round(node_up, 1),
            model_back_seconds=round(back_after, 1),
            model_back_by=repaired_by,
            reindex_seconds=round(time.monotonic() - filled, 1),
            lost=len(docs) - backend.count(index, {"exists": {"field": "embedding"}}),
        )
    finally:
        _heal(opensearch_cluster, backend)


def _doctor_repair(cluster: Cluster, index: str, model_id: str, name: str) -> list[str]:
    """``e5plugin doctor`` exits 1 and names the model's problem; its fix is a deploy of the same model (by its
    name, so no second copy is registered): that command's arguments."""
    doctor = _cli(cluster, "doctor", "--json", timeout=300)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    problems = [p for p in json.loads(doctor.stdout)["problems"] if p["fix"].startswith("Run: e5plugin deploy ")]
    fixes = [p["fix"] for p in problems if repr(index) in p["what"]]  # "model ... used by index ... is ..."
    fixes += [p["fix"] for p in problems if repr(model_id) in p["what"]]  # "... but no node serves it"
    assert fixes, doctor.stdout
    command = shlex.split(fixes[0].removeprefix("Run: e5plugin ").split(" (")[0].replace("<its index>", index))
    assert command[command.index("--model-id") + 1] == name, command
    return command


def _auto_redeploy_setting(backend: OpenSearchBackend) -> object:
    settings = backend.client.cluster.get_settings(include_defaults=True, flat_settings=True)
    key = "plugins.ml_commons.model_auto_redeploy.enable"
    return next((section[key] for section in settings.values() if key in section), None)


def _search_hits(cluster: Cluster, index: str, text: str) -> list[dict] | None:
    """``e5plugin search TEXT --index INDEX --json``: the hits, or None when the command failed."""
    found = _cli(cluster, "search", text, "--index", index, "-k", "3", "--json", timeout=300)
    return json.loads(found.stdout) if found.returncode == 0 else None


def test_full_cluster_restart_model_usable_again_documents_kept(opensearch_cluster, tiny_e5_bert, tmp_path):
    """Every node dies at once (SIGKILL, as a power cut) and all are started together. The documents survive; the
    model is back either by ml-commons' auto-redeploy (waited for a bounded time) or by re-running the same
    ``e5plugin deploy``, which doctor tells the user to run: the figures say which, and after how long."""
    backend = _backend(opensearch_cluster)
    _data, ml = _members(opensearch_cluster)
    index = "mn-full-restart"
    backend.apply_one_node_ml_settings()
    backend.delete_index(index)
    deploy_args = ["deploy", "--model", str(tiny_e5_bert), "--index", index, "--mode", "server",
                   "--model-id", "mn-tiny", "--replicas", "1"]  # fmt: skip
    deployed = _cli(opensearch_cluster, *deploy_args)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    source = tmp_path / "docs.jsonl"
    ids_sent = _write_docs(source, 1000, "full restart document {i} about search")
    loaded = _cli(opensearch_cluster, "ingest", str(source), "--index", index, "--json")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    _green(backend, index)
    before = _search_hits(opensearch_cluster, index, "document about search")
    assert before, "semantic search works before the restart"
    model_id = backend.model_ids("mn-tiny")[0]
    auto_redeploy = _auto_redeploy_setting(backend)

    nodes = opensearch_cluster.nodes
    try:
        for node in nodes:
            node.kill()
        assert not any(node.is_alive() for node in nodes)
        restarted = time.monotonic()
        start_all(nodes, timeout=400)
        wait_for_nodes(nodes[0], len(nodes), timeout=180)
        _green(backend, timeout=300)
        cluster_back = time.monotonic() - restarted
        deadline = time.monotonic() + AUTO_REDEPLOY_WAIT_SECONDS  # ml-commons' auto-redeploy, if it happens
        while not _answers(backend, model_id) and time.monotonic() < deadline:
            time.sleep(3)
        auto_redeployed = _answers(backend, model_id)
        state_after_wait = backend.model_state(model_id)
        placement_after_wait = backend.model_placement(model_id)["nodes"]
        doctor_exit = None
        repairing = time.monotonic()
        if auto_redeployed:
            repaired_by = "ml-commons auto-redeploy"
        else:
            # doctor tells the user, with the command that repairs it; the user runs that command
            doctor_exit, command = 1, _doctor_repair(opensearch_cluster, index, model_id, "mn-tiny")
            repaired_by = "e5plugin deploy (the command doctor printed)"
            repaired = _cli(opensearch_cluster, *command)
            assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        model_back = time.monotonic() - restarted
        repair_seconds = time.monotonic() - repairing
        after = _search_hits(opensearch_cluster, index, "document about search")
        usable = time.monotonic() - restarted
        assert after, "semantic search works again"
        again = _cli(opensearch_cluster, *deploy_args)  # the original deploy, re-run: safe, nothing new
        assert again.returncode == 0, again.stdout + again.stderr
        assert backend.model_ids("mn-tiny") == [model_id]  # the same model: none registered beside it
        assert _answers(backend, model_id) and backend.model_placement(model_id)["nodes"] == [ml.name]
        ids = _ids(backend, index)
        assert len(ids) == len(set(ids)) == len(ids_sent) and set(ids) == set(ids_sent)  # every document, once
        assert backend.count(index, {"exists": {"field": "embedding"}}) == len(ids_sent)
        _figures(
            "full_cluster_restart",
            documents=len(ids_sent),
            present=len(set(ids)),
            duplicates=len(ids) - len(set(ids)),
            model_auto_redeploy_enable=auto_redeploy,
            auto_redeploy_waited_seconds=AUTO_REDEPLOY_WAIT_SECONDS,
            cluster_green_seconds=round(cluster_back, 1),
            model_state_after_wait=state_after_wait,
            serving_nodes_after_wait=placement_after_wait,
            doctor_exit_before_repair=doctor_exit,
            model_back_by=repaired_by,
            model_back_seconds=round(model_back, 1),
            repair_seconds=round(repair_seconds, 1),
            semantic_search_back_seconds=round(usable, 1),
        )
    finally:
        _heal(opensearch_cluster, backend)


def test_rolling_restart_under_query_threads(opensearch_cluster, tiny_e5_bert):
    """Every node restarted in turn (each back and every shard assigned before the next) while QUERY_THREADS
    threads query through the query helper: no error, no empty result."""
    backend = _backend(opensearch_cluster)
    index = "mn-rolling"
    spec = resolve_model(str(tiny_e5_bert))
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=1))
    docs = [{"id": f"doc-{i}", "text": f"rolling restart document {i} about search"} for i in range(500)]
    report = ingest(backend, index, docs, embedder=Embedder(spec, plan=result.setup.plan), refresh=True)
    assert report.ok
    _green(backend, index)
    searcher = SemanticSearch.for_index(index, backend=backend)
    stop = threading.Event()
    counts = {"queries": 0, "errors": 0, "empty": 0}
    first_errors: list[str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                hits = searcher.search(f"document {worker * 1000 + i} about search", k=3)
                outcome = "queries" if hits else "empty"
            except Exception as exc:
                outcome = "errors"
                if len(first_errors) < 5:
                    first_errors.append(f"{type(exc).__name__}: {exc}"[:300])
            with lock:
                counts["queries"] += 1
                if outcome != "queries":
                    counts[outcome] += 1
            stop.wait(QUERY_THINK_SECONDS)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(QUERY_THREADS)]
    for thread in threads:
        thread.start()
    restarts = []
    started = time.monotonic()
    try:
        for node in opensearch_cluster.nodes:
            began = time.monotonic()
            node.restart(timeout=240)
            wait_for_nodes(node, len(opensearch_cluster.nodes), timeout=120)
            _green(backend)
            restarts.append(round(time.monotonic() - began, 1))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        _heal(opensearch_cluster, backend)
    _figures(
        "rolling_restart",
        threads=QUERY_THREADS,
        think_seconds=QUERY_THINK_SECONDS,
        restart_seconds=restarts,
        seconds_total=round(time.monotonic() - started, 1),
        first_errors=first_errors,
        **counts,
    )
    assert counts["queries"] > 0
    assert counts["errors"] == 0 and counts["empty"] == 0, (counts, first_errors)


def test_elasticsearch_data_node_killed_mid_client_ingest_every_document_exactly_once(
    elasticsearch_cluster, tiny_e5_bert, tmp_path
):
    """Elasticsearch, 3 nodes with the default roles (each master-eligible and a data node), client mode (the
    integ-test distribution has no ML): the node holding the index's primary dies mid-ingest; the CLI knows every
    node's URL and finishes without --resume, every document stored once."""
    backend = _backend(elasticsearch_cluster)
    assert backend.engine == "elasticsearch" and len(backend.client.nodes.info()["nodes"]) == 3
    index = "mn-es-kill-data"
    backend.delete_index(index)
    deployed = _cli(elasticsearch_cluster, "deploy", "--model", str(tiny_e5_bert), "--index", index, "--mode",
                    "client", "--replicas", "1")  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    _green(backend, index)
    victim = _primary_holder(elasticsearch_cluster, backend, index)
    source = tmp_path / "docs.jsonl"
    ids_sent = _write_docs(source, 3000, "document {i} about multi node search on elasticsearch")
    try:
        run = _ingest_killing(elasticsearch_cluster, backend, index, source, victim, kill_at=700)
        assert not victim.is_alive()
        summary = run["summary"]
        assert summary["failed"] == 0 and summary["indexed"] == len(ids_sent), (summary, run["stderr"][-2000:])
        backend.refresh(index)
        ids = _ids(backend, index)
        health = backend.client.cluster.health(index=index)
        _figures(
            "elasticsearch_data_node_killed_client_ingest",
            documents=len(ids_sent),
            present=len(set(ids)),
            duplicates=len(ids) - len(set(ids)),
            searchable_at_kill=run["searchable_at_kill"],
            seconds_total=run["seconds_total"],
            seconds_after_kill=run["seconds_after_kill"],
            index_health_after=health["status"],
        )
        assert len(ids) == len(set(ids)) == len(ids_sent) and set(ids) == set(ids_sent)  # exactly once
    finally:
        _heal(elasticsearch_cluster, backend)
    assert backend.count(index) == len(ids_sent)  # the restarted node rejoins; nothing reappears twice
