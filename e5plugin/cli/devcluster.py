"""`dev-cluster up|down|status|fetch` (nodes assembled from Maven Central) and `demo`."""

from __future__ import annotations

import click

from .. import errors
from ..config import ConnectionConfig
from .common import E5Group


@click.group("dev-cluster", cls=E5Group)
def dev_cluster():
    """A local node assembled from Maven Central (no Docker): up, down, status, fetch.

    \b
    Example:
      e5plugin dev-cluster up --engine opensearch --port 9200
      e5plugin dev-cluster status
      e5plugin dev-cluster down
    """


@dev_cluster.command("up")
@click.option(
    "--engine", "engine", type=click.Choice(["opensearch", "elasticsearch"]), default="opensearch", show_default=True
)
@click.option("--port", type=int, default=9200, show_default=True, help="HTTP port (of the first node).")
@click.option("--heap", help="Heap per node (default 1g for one node, 512m each for several).")
@click.option(
    "--nodes",
    "count",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Nodes in the cluster, on ports PORT, PORT+1, ... OpenSearch with 3+: one dedicated ML node "
    "(cluster_manager+ml), the others cluster_manager+data+ingest.",
)
@click.option("--fresh", is_flag=True, help="Wipe the node's data first.")
def dev_cluster_up(engine, port, heap, count, fresh):
    """Download (once), assemble and start a node (or a cluster of --nodes N) on 127.0.0.1.

    \b
    Example:
      e5plugin dev-cluster up --engine opensearch
      export E5PLUGIN_URL=http://127.0.0.1:9200
      e5plugin dev-cluster up --engine opensearch --nodes 3    # ports 9200-9202, one ML node
    """
    from ..devcluster import start_node
    from ..devcluster.node import port_is_free

    if count > 1:
        _cluster_up(engine, port, heap or "512m", count, fresh)
        return
    heap = heap or "1g"
    if not port_is_free(port):
        raise errors.ConfigurationError(f"Port {port} is in use: pass --port, or stop what runs there.")
    node = start_node(
        engine, name=f"dev-{engine}", heap=heap, fresh=fresh, http_port=port, progress=lambda m: click.echo(m, err=True)
    )
    if engine == "opensearch":
        from ..engines import connect

        connect(ConnectionConfig(urls=[node.url]), engine="opensearch").apply_one_node_ml_settings()
    click.echo(f"{engine} {node.version} running at {node.url} (pid {node.pid}, data {node.data_dir})")
    click.echo(f"export E5PLUGIN_URL={node.url}")


def _cluster_up(engine: str, port: int, heap: str, count: int, fresh: bool) -> None:
    from ..devcluster.cluster import start_cluster
    from ..devcluster.node import port_is_free

    busy = [p for p in range(port, port + count) if not port_is_free(p)]
    if busy:
        raise errors.ConfigurationError(f"Ports {busy} are in use: pass --port, or stop what runs there.")
    cluster = start_cluster(
        engine,
        count=count,
        name=f"dev-{engine}-cluster",
        heap=heap,
        base_port=port,
        fresh=fresh,
        progress=lambda m: click.echo(m, err=True),
    )
    if engine == "opensearch":
        from ..engines import connect

        connect(ConnectionConfig(urls=cluster.urls), engine="opensearch").apply_one_node_ml_settings()
    _echo_cluster(cluster)
    click.echo(f"export E5PLUGIN_URL={','.join(cluster.urls)}")


def _echo_cluster(cluster) -> None:
    click.echo(f"{cluster.engine} cluster {cluster.name}:")
    for node in cluster.nodes:
        running = node.is_alive()
        roles = ",".join(cluster.roles(node)) or "default roles"
        where = f"running at {node.url} (pid {node.pid})" if running else f"not running (port {node.http_port})"
        click.echo(f"  {node.name}: {where}, roles {roles}, data {node.data_dir}")


@dev_cluster.command("fetch")
@click.option("--engine", "engine", type=click.Choice(["opensearch", "elasticsearch", "all"]), default="all")
def dev_cluster_fetch(engine):
    """Download and assemble node distributions into the cache without starting them (CI, air-gap prep).

    
    Example:
      e5plugin dev-cluster fetch --engine all
    """
    from ..devcluster import ENGINES, default_cache_dir, engine_module

    for name in ENGINES if engine == "all" else (engine,):
        module = engine_module(name)
        home = module.assemble(default_cache_dir(), module.DEFAULT_VERSION, progress=lambda m: click.echo(m, err=True))
        click.echo(f"{name} {module.DEFAULT_VERSION}: {home}")


@dev_cluster.command("down")
@click.option("--engine", "engine", type=click.Choice(["opensearch", "elasticsearch", "all"]), default="all")
def dev_cluster_down(engine):
    """Stop the dev node(s). Example: e5plugin dev-cluster down"""
    from ..devcluster import ENGINES, default_cache_dir, node_workdir
    from ..devcluster.cluster import Cluster
    from ..devcluster.node import Node

    for name in ENGINES if engine == "all" else (engine,):
        node = Node.load_state(node_workdir(default_cache_dir(), f"dev-{name}"))
        if node and node.is_alive():
            node.stop()
            click.echo(f"stopped {name} ({node.url})")
        cluster = Cluster.load_state(node_workdir(default_cache_dir(), f"dev-{name}-cluster"))
        for member in cluster.nodes if cluster else []:
            if member.is_alive():
                member.stop()
                click.echo(f"stopped {name} node {member.name} ({member.url})")


@dev_cluster.command("status")
def dev_cluster_status():
    """Which dev nodes run. Example: e5plugin dev-cluster status"""
    from ..devcluster import ENGINES, default_cache_dir, node_workdir
    from ..devcluster.cluster import Cluster
    from ..devcluster.node import Node

    for name in ENGINES:
        node = Node.load_state(node_workdir(default_cache_dir(), f"dev-{name}"))
        running = bool(node and node.is_alive())
        click.echo(f"{name}: " + (f"running at {node.url} (pid {node.pid})" if running else "not running"))
        cluster = Cluster.load_state(node_workdir(default_cache_dir(), f"dev-{name}-cluster"))
        if cluster is not None:
            _echo_cluster(cluster)


# ---- demo ---------------------------------------------------------------------------------------------------------
@click.command()
@click.option(
    "--model",
    "-m",
    default="intfloat/e5-small-v2",
    show_default=True,
    help="Hub id or local directory; falls back to an offline model when the hub cannot be reached.",
)
@click.option("--port", type=int, default=9200, show_default=True)
def demo(model, port):
    """One command: local OpenSearch node, a model deployed into it, sample FAQ documents, a few searches.

    \b
    Example:
      e5plugin demo
    """
    from ..demo import run_demo

    run_demo(model=model, port=port, echo=click.echo)


# The use-case commands (faq, dedup, calibrate, finetune, ...) live in their own modules.

COMMANDS = (dev_cluster, demo)
