"""dev-cluster and demo never act on processes or clusters that are not the node e5plugin started.

Stand-ins are real processes (``sleep`` under a pid recorded in a node's state file, a node home whose start script
never brings a cluster up), signalled through the real stop path; the foreign cluster is the shared OpenSearch node.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.devcluster import Node, NodeStartError, node_workdir, running_node
from e5plugin.devcluster.node import free_port, process_cmdline

ROOT = Path(__file__).resolve().parents[2]


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A process that is not a node, leading its own process group (what ``killpg(pid)`` would hit)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _node(cache: Path, name: str, home: Path, **fields: object) -> Node:
    return Node(
        name=name,
        engine="opensearch",
        version="0",
        home=home,
        java_home=home,
        workdir=node_workdir(cache, name),
        **fields,  # type: ignore[arg-type]
    )


def _fake_home(tmp_path: Path) -> Path:
    """A node home whose start script never answers HTTP: it only sleeps, like a node stuck in start."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "config").mkdir()
    script = home / "bin" / "opensearch"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    return home


def test_down_leaves_a_recycled_pid_alone(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    """The dev node died and its pid now belongs to another process: ``dev-cluster down`` must not signal it."""
    _node(tmp_path, "dev-opensearch", tmp_path, pid=sleeper.pid, http_port=free_port()).save_state()
    result = CliRunner().invoke(cli, ["dev-cluster", "down"], env={"E5PLUGIN_CACHE": str(tmp_path)})
    assert result.exit_code == 0, result.output
    time.sleep(0.5)
    assert _alive(sleeper), "dev-cluster down killed a process that is not the node"
    node = Node.load_state(node_workdir(tmp_path, "dev-opensearch"))
    assert node is not None and not node.is_alive()
    node.stop()
    node.kill()
    time.sleep(0.5)
    assert _alive(sleeper)
    assert Node.load_state(node_workdir(tmp_path, "dev-opensearch")).pid is None  # the stale pid is forgotten
    status = CliRunner().invoke(cli, ["dev-cluster", "status"], env={"E5PLUGIN_CACHE": str(tmp_path)})
    assert "opensearch: not running" in status.output


def test_stop_still_stops_the_nodes_own_process(tmp_path: Path) -> None:
    """The check does not stop the real path: a process whose command line is the node's is stopped."""
    node = _node(tmp_path, "own", tmp_path, http_port=free_port())
    stand_in = [sys.executable, "-c", "import time; time.sleep(300)", "-E", f"path.data={node.data_dir}"]
    proc = subprocess.Popen(stand_in, start_new_session=True)
    deadline = time.monotonic() + 10
    while "time.sleep" not in (process_cmdline(proc.pid) or "") and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd (before that its command line is pytest's)
    try:
        node.pid = proc.pid
        node.save_state()
        loaded = Node.load_state(node.workdir)
        assert loaded is not None and loaded.is_alive()
        loaded.stop(timeout=10)
        proc.wait(timeout=10)
        assert not _alive(proc)
    finally:
        proc.kill()
        proc.wait()


def test_a_node_that_does_not_come_up_is_stopped(tmp_path: Path) -> None:
    node = _node(tmp_path, "stuck", _fake_home(tmp_path), http_port=free_port())
    try:
        with pytest.raises(NodeStartError, match="not healthy"):
            node.start(timeout=3)
        node._proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the node that failed to start is still running")
    finally:
        node._proc.kill()
        node._proc.wait()
    assert node.pid is None and Node.load_state(node.workdir).pid is None


@pytest.mark.opensearch
def test_a_cluster_already_on_the_port_is_not_taken_for_the_node(opensearch, tmp_path: Path) -> None:
    """A node whose own process never answers, on a port where another (real) cluster listens: not ready, stopped."""
    port = urlparse(opensearch.url).port
    node = _node(tmp_path, "foreign-port", _fake_home(tmp_path), http_port=port)
    try:
        with pytest.raises(NodeStartError, match="another process answers"):
            node.start(timeout=4)
        node._proc.wait(timeout=20)
    finally:
        node._proc.kill()
        node._proc.wait()
    assert running_node("foreign-port", cache_dir=tmp_path) is None
    if opensearch.node is not None:  # the suite started it: it is recognised as its own
        assert opensearch.node.is_answering()


@pytest.mark.opensearch
def test_demo_leaves_the_settings_of_a_cluster_it_did_not_start_alone(opensearch, os_backend, minilm, tmp_path):
    """`demo` on a port where a cluster already runs that e5plugin's dev node state does not own: no ml-commons
    settings are written, the demo embeds locally."""
    from e5plugin.demo import INDEX

    if os_backend.index_exists(INDEX):
        pytest.skip(f"{INDEX} exists on the shared node (not this test's)")
    port = urlparse(opensearch.url).port
    before = os_backend.client.cluster.get_settings(flat_settings=True)
    env = {"E5PLUGIN_CACHE": str(tmp_path)}  # no dev node state there: whatever listens is foreign
    try:
        result = CliRunner().invoke(cli, ["demo", "--model", str(minilm), "--port", str(port)], env=env)
        assert result.exit_code == 0, result.output
        assert "settings are left alone" in result.output and "(client mode)" in result.output
        assert os_backend.client.cluster.get_settings(flat_settings=True) == before
    finally:
        os_backend.delete_index(INDEX)


def test_docker_compose_publishes_ports_on_loopback_only() -> None:
    """Security is off in docker-compose.yml: every published port is bound to 127.0.0.1."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
