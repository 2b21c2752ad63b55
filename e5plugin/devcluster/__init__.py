"""Real Elasticsearch / OpenSearch nodes assembled from Maven Central, for tests and for users without Docker.

``e5plugin dev-cluster up`` and the test fixtures both call :func:`start_node`.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .node import Node, NodeStartError

__all__ = ["ENGINES", "Node", "NodeStartError", "default_cache_dir", "node_workdir", "running_node", "start_node"]

ENGINES = ("opensearch", "elasticsearch")


def default_cache_dir() -> Path:
    return Path(os.environ.get("E5PLUGIN_CACHE", Path.home() / ".cache" / "e5plugin")).expanduser()


def engine_module(engine: str):
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    return importlib.import_module(f"{__name__}.{engine}")


def node_workdir(cache_dir: Path, name: str) -> Path:
    return cache_dir / "nodes" / name


def running_node(name: str, port: int | None = None, cache_dir: Path | None = None) -> Node | None:
    """The node ``name`` that e5plugin started (its state in the cache), if it runs and is what answers on its port
    (and that port is ``port``); None for anything else, e.g. a cluster that was already listening there."""
    node = Node.load_state(node_workdir(cache_dir or default_cache_dir(), name))
    if node is None or (port is not None and node.http_port != port) or not node.is_answering():
        return None
    return node


def start_node(
    engine: str,
    *,
    cache_dir: Path | None = None,
    version: str | None = None,
    name: str | None = None,
    heap: str = "1g",
    fresh: bool = False,
    progress: Callable[[str], None] | None = None,
    timeout: float = 240.0,
    **options: object,
) -> Node:
    """Assemble (once, cached) and start a node; ``fresh`` wipes the node's data first.

    Extra ``options`` go to the engine's ``node()`` (e.g. ``secured=True`` for Elasticsearch).
    """
    module = engine_module(engine)
    cache_dir = cache_dir or default_cache_dir()
    version = version or module.DEFAULT_VERSION
    name = name or engine
    workdir = node_workdir(cache_dir, name)
    existing = Node.load_state(workdir)
    if existing is not None and existing.is_alive():
        existing.stop()
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    module.assemble(cache_dir, version, progress=progress)
    node = module.node(cache_dir, version=version, name=name, heap=heap, workdir=workdir, **options)
    if progress:
        progress(f"starting {engine} {version} ({name}) ...")
    return node.start(timeout=timeout)
