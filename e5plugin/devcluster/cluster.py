"""Several nodes of one engine on 127.0.0.1 forming one cluster: a :class:`Cluster` of :class:`~.node.Node`.

Each member is an ordinary :class:`Node` (its own work directory, data path, log, pid checks); the cluster adds
fixed transport ports, ``discovery.seed_hosts``, the initial cluster-manager/master list and per-node roles, and
starts all members at once (the first cannot elect a cluster manager before the others are up).

Roles (``plan_roles``): OpenSearch with 3+ nodes gets one dedicated ML node (``cluster_manager`` + ``ml``: it holds
no shards, and as a third voter it keeps the cluster electable when one data node dies) and the rest
``cluster_manager`` + ``data`` + ``ingest``; Elasticsearch nodes keep the default roles (the integ-test
distribution has no ML). Every OpenSearch member gets the PyTorch natives in ``<path.data>/ml_cache`` (hard links).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .node import Node, NodeStartError, free_port, port_is_free

OPENSEARCH_DATA_ROLES = ["cluster_manager", "data", "ingest", "remote_cluster_client"]
OPENSEARCH_ML_ROLES = ["cluster_manager", "ml"]


def plan_roles(engine: str, count: int) -> list[list[str] | None]:
    """The roles of each member (None: the engine's default roles)."""
    if engine == "opensearch" and count >= 3:
        return [OPENSEARCH_DATA_ROLES] * (count - 1) + [OPENSEARCH_ML_ROLES]
    return [None] * count


def member_settings(engine: str, cluster_name: str, names: list[str], transport_ports: list[int]) -> dict[str, str]:
    """The settings every member shares: cluster name, multi-node discovery, seeds, the first voting nodes."""
    seeds = ",".join(f"127.0.0.1:{port}" for port in transport_ports)
    bootstrap = "cluster.initial_cluster_manager_nodes" if engine == "opensearch" else "cluster.initial_master_nodes"
    return {
        "cluster.name": cluster_name,
        # node.py defaults to single-node discovery; the engines' multi-node types are "zen" / "multi-node"
        "discovery.type": "zen" if engine == "opensearch" else "multi-node",
        "discovery.seed_hosts": seeds,
        bootstrap: ",".join(names),
    }


@dataclass
class Cluster:
    """Members of one local cluster; its state file lists their work directories."""

    name: str
    engine: str
    workdir: Path
    members: list[Path] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        found = (Node.load_state(path) for path in self.members)
        return [node for node in found if node is not None]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def roles(self, node: Node) -> list[str]:
        """The roles a member was configured with (empty: the engine's defaults)."""
        value = node.settings.get("node.roles")
        return value.split(",") if value else []

    def is_running(self) -> bool:
        return any(node.is_alive() for node in self.nodes)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every member (graceful, then SIGKILL)."""
        for node in self.nodes:
            node.stop(timeout=timeout)

    def state_file(self) -> Path:
        return self.workdir / "cluster.json"

    def save_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = {"name": self.name, "engine": self.engine, "members": [str(p) for p in self.members]}
        self.state_file().write_text(json.dumps(state, indent=2))

    @classmethod
    def load_state(cls, workdir: Path) -> Cluster | None:
        path = Path(workdir) / "cluster.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        return cls(state["name"], state["engine"], Path(workdir), [Path(p) for p in state["members"]])


def start_all(nodes: list[Node], timeout: float) -> None:
    """Start members concurrently; if any fails, stop them all and raise the first failure."""
    failures: list[BaseException] = []

    def run(node: Node) -> None:
        try:
            node.start(timeout=timeout)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(node,), daemon=True) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        for node in nodes:
            node.stop(timeout=15)
        raise failures[0]


def start_cluster(
    engine: str,
    *,
    count: int = 3,
    cache_dir: Path | None = None,
    version: str | None = None,
    name: str | None = None,
    heap: str = "512m",
    base_port: int = 0,
    fresh: bool = False,
    progress: Callable[[str], None] | None = None,
    timeout: float = 300.0,
    extra_settings: dict[str, str] | None = None,
) -> Cluster:
    """Assemble (once) and start ``count`` nodes forming one cluster; ``base_port`` 0 picks free HTTP ports,
    otherwise members listen on ``base_port``, ``base_port + 1``, ... A running cluster of that name is stopped
    first; ``fresh`` wipes its data."""
    from . import default_cache_dir, engine_module, node_workdir

    if count < 1:
        raise ValueError("a cluster needs at least one node")
    module = engine_module(engine)
    cache_dir = cache_dir or default_cache_dir()
    version = version or module.DEFAULT_VERSION
    name = name or f"{engine}-cluster"
    workdir = node_workdir(cache_dir, name)
    existing = Cluster.load_state(workdir)
    if existing is not None:
        existing.stop()
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    http_ports = [base_port + i if base_port else 0 for i in range(count)]
    busy = [port for port in http_ports if port and not port_is_free(port)]
    if busy:
        raise NodeStartError(f"ports {busy} are in use")
    http_ports = [port or free_port() for port in http_ports]
    transport_ports: list[int] = []
    while len(transport_ports) < count:
        port = free_port()
        if port not in transport_ports and port not in http_ports:
            transport_ports.append(port)
    names = [f"{name}-{i + 1}" for i in range(count)]
    roles = plan_roles(engine, count)
    shared = member_settings(engine, f"e5plugin-{name}", names, transport_ports)
    voters = [n for n, r in zip(names, roles, strict=True) if r is None or "cluster_manager" in r]
    bootstrap = "cluster.initial_cluster_manager_nodes" if engine == "opensearch" else "cluster.initial_master_nodes"
    shared[bootstrap] = ",".join(voters)
    module.assemble(cache_dir, version, progress=progress)
    nodes: list[Node] = []
    for i, node_name in enumerate(names):
        settings = {**shared, "transport.port": str(transport_ports[i]), **(extra_settings or {})}
        if roles[i] is not None:
            settings["node.roles"] = ",".join(roles[i])  # type: ignore[arg-type]
        node = module.node(
            cache_dir,
            version=version,
            name=node_name,
            heap=heap,
            workdir=workdir / node_name,
            http_port=http_ports[i],
            extra_settings=settings,
        )
        node.save_state()
        nodes.append(node)
    cluster = Cluster(name, engine, workdir, [node.workdir for node in nodes])
    cluster.save_state()
    if progress:
        progress(f"starting {count} {engine} {version} nodes ({name}) on ports {', '.join(map(str, http_ports))} ...")
    start_all(nodes, timeout)
    wait_for_nodes(nodes[0], count, timeout=60)
    return cluster


def wait_for_nodes(node: Node, count: int, timeout: float = 60.0) -> None:
    """Wait until the cluster that ``node`` belongs to counts ``count`` nodes."""
    import time

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = int(node.request("GET", f"/_cluster/health?wait_for_nodes={count}&timeout=5s")["number_of_nodes"])
        except (OSError, ValueError, KeyError):
            seen = 0
        if seen >= count:
            return
        time.sleep(1)
    raise NodeStartError(f"only {seen} of {count} nodes joined the cluster within {timeout:.0f}s")


def running_cluster(name: str, cache_dir: Path | None = None) -> Cluster | None:
    """The cluster ``name`` that e5plugin started, if at least one member runs."""
    from . import default_cache_dir, node_workdir

    cluster = Cluster.load_state(node_workdir(cache_dir or default_cache_dir(), name))
    return cluster if cluster is not None and cluster.is_running() else None
