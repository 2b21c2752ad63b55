"""Session fixtures: real nodes started once per test session (or existing clusters named by environment variables).

E5PLUGIN_TEST_OPENSEARCH_URL      use this OpenSearch instead of starting one
E5PLUGIN_TEST_ELASTICSEARCH_URL   use this Elasticsearch instead of starting one
E5PLUGIN_TEST_OPENSEARCH_CLUSTER  work directory of a running `dev-cluster up --nodes 3` cluster for multinode tests
E5PLUGIN_TEST_ELASTICSEARCH_CLUSTER  the same for a running `dev-cluster up --engine elasticsearch --nodes 3` cluster
E5PLUGIN_CACHE                    where node distributions are assembled (default ~/.cache/e5plugin)

ONNX exports and int8 quality verdicts go to a per-session folder: a verdict recorded on this machine by a benchmark
(``model check-quantization``) must not switch the tests' ``auto`` embedding to int8.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e5plugin.config import ConnectionConfig
from e5plugin.devcluster import Node, default_cache_dir, start_node
from e5plugin.engines import connect

#: Public evaluation data vendored with the tests (tests/data/README.md); the suite never reads ../shared.
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("E5PLUGIN_ONNX_CACHE")
    os.environ["E5PLUGIN_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield
    if previous is None:
        os.environ.pop("E5PLUGIN_ONNX_CACHE", None)
    else:
        os.environ["E5PLUGIN_ONNX_CACHE"] = previous


@dataclass
class Cluster:
    """A reachable cluster; ``node`` is set when the suite started it (so tests may kill/restart it)."""

    url: str
    node: Node | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None

    def config(self, **overrides: object) -> ConnectionConfig:
        base = ConnectionConfig(urls=[self.url], username=self.username, password=self.password, ca_certs=self.ca_certs)
        for key, value in overrides.items():
            setattr(base, key, value)
        return base


def _progress(message: str) -> None:
    print(f"[e5plugin nodes] {message}", file=sys.stderr, flush=True)


def _remove_stale_nodes(name: str) -> None:
    """Work directories of test nodes whose session died without cleaning up."""
    for workdir in (default_cache_dir() / "nodes").glob(f"{name}-*"):
        node = Node.load_state(workdir)
        if node is None or not node.is_alive():
            shutil.rmtree(workdir, ignore_errors=True)


def _node_fixture(engine: str, name: str, env_var: str, **options: object) -> Iterator[Cluster]:
    if os.environ.get(env_var):
        yield Cluster(url=os.environ[env_var])
        return
    _remove_stale_nodes(name)
    # one node per test session (pid in the name): parallel sessions never stop each other's nodes
    node = start_node(engine, name=f"{name}-{os.getpid()}", fresh=True, progress=_progress, **options)
    try:
        yield Cluster(
            url=node.url,
            node=node,
            username=node.username,
            password=node.password,
            ca_certs=str(node.ca_certs) if node.ca_certs else None,
        )
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def opensearch() -> Iterator[Cluster]:
    yield from _node_fixture("opensearch", "test-opensearch", "E5PLUGIN_TEST_OPENSEARCH_URL", heap="2g")


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[Cluster]:
    yield from _node_fixture("elasticsearch", "test-elasticsearch", "E5PLUGIN_TEST_ELASTICSEARCH_URL", heap="1g")


@pytest.fixture(scope="session")
def secured_elasticsearch() -> Iterator[Cluster]:
    yield from _node_fixture(
        "elasticsearch",
        "test-elasticsearch-secured",
        "E5PLUGIN_TEST_SECURED_ELASTICSEARCH_URL",
        heap="512m",
        secured=True,
        password="e5plugin-test-Pa55",
    )


@pytest.fixture(scope="session")
def opensearch_cluster():
    """Three OpenSearch nodes started once (``multinode`` tests): two cluster_manager+data+ingest nodes and one
    cluster_manager+ml node (``e5plugin.devcluster.cluster``), 512m heap each. Tests may kill and restart members;
    each leaves all three running."""
    yield from _cluster_fixture("opensearch", "test-os-cluster", "E5PLUGIN_TEST_OPENSEARCH_CLUSTER")


@pytest.fixture(scope="session")
def elasticsearch_cluster():
    """Three Elasticsearch nodes started once (``multinode`` tests), default roles (each master-eligible and a data
    node; the integ-test distribution has no ML: client mode), 512m heap each. Tests may kill and restart members;
    each leaves all three running."""
    # 600 s: started after the OpenSearch cluster (still running), one member took over 300 s on a loaded 2-core host
    yield from _cluster_fixture("elasticsearch", "test-es-cluster", "E5PLUGIN_TEST_ELASTICSEARCH_CLUSTER", timeout=600)


def _cluster_fixture(engine: str, name: str, env_var: str, timeout: float = 300.0):
    """Three nodes named ``<name>-<pid>``, 512m heap each, stopped and removed at the end; or the running cluster
    whose work directory ``env_var`` names (left running). Stale work directories of dead sessions are removed."""
    from e5plugin.devcluster.cluster import Cluster as NodeCluster
    from e5plugin.devcluster.cluster import start_cluster

    if os.environ.get(env_var):  # the work directory of a running e5plugin cluster
        existing = NodeCluster.load_state(Path(os.environ[env_var]))
        if existing is None or not existing.is_running():
            pytest.fail(f"{env_var} names no running cluster")
        yield existing
        return
    for workdir in (default_cache_dir() / "nodes").glob(f"{name}-*"):  # left by a session that died
        stale = NodeCluster.load_state(workdir)
        if stale is None or not stale.is_running():
            shutil.rmtree(workdir, ignore_errors=True)
    cluster = start_cluster(
        engine, count=3, name=f"{name}-{os.getpid()}", heap="512m", fresh=True, progress=_progress, timeout=timeout
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def os_backend(opensearch: Cluster):
    return connect(opensearch.config(), engine="auto")


@pytest.fixture(scope="module")
def ml_ready(os_backend):
    """The OpenSearch node's backend with the one-node ml-commons settings applied (ML on a data node, no memory
    circuit-breaker surprises): for tests that deploy a model into the cluster."""
    os_backend.apply_one_node_ml_settings()
    return os_backend


@pytest.fixture(scope="session")
def es_backend(elasticsearch: Cluster):
    return connect(elasticsearch.config(), engine="auto")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_bert(models_dir: Path) -> Path:
    from tiny_models import build_tiny_bert

    return build_tiny_bert(models_dir / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_e5_bert(models_dir: Path) -> Path:
    """A tiny BERT that carries E5's prefixes in its sentence-transformers prompts."""
    from tiny_models import build_tiny_bert

    return build_tiny_bert(models_dir / "tiny-e5-bert", prompts={"query": "query: ", "passage": "passage: "}, seed=3)


@pytest.fixture(scope="session")
def tiny_xlmr(models_dir: Path) -> Path:
    from tiny_models import build_tiny_xlmr

    return build_tiny_xlmr(models_dir / "tiny-xlmr", prompts={"query": "query: ", "passage": "passage: "})


@pytest.fixture(scope="session")
def minilm() -> Path:
    from tiny_models import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def real_e5() -> Path:
    """The real intfloat/e5-small-v2 through the product's Maven path, built once into the cache (tests/real_e5.py)."""
    from real_e5 import real_e5_dir

    return real_e5_dir()


@pytest.fixture
def index_name(request: pytest.FixtureRequest) -> str:
    """A unique, valid index name per test."""
    import re

    return "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]


def cache_dir() -> Path:
    return default_cache_dir()
