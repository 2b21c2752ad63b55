"""Engine backends behind one interface; :func:`connect` picks the right one for a cluster."""

from __future__ import annotations

from ..config import ConnectionConfig
from ..errors import ConfigurationError
from .base import Backend, Capabilities, Hit, detect_engine
from .elasticsearch import ElasticsearchBackend
from .opensearch import OpenSearchBackend

BACKENDS: dict[str, type[Backend]] = {"elasticsearch": ElasticsearchBackend, "opensearch": OpenSearchBackend}

__all__ = ["BACKENDS", "Backend", "Capabilities", "Hit", "connect"]


def connect(config: ConnectionConfig | None = None, engine: str = "auto", **overrides: object) -> Backend:
    """A backend for the cluster in ``config`` (default: from E5PLUGIN_* environment variables).

    ``engine="auto"`` asks the cluster what it is; naming the engine skips that request.
    """
    config = config or ConnectionConfig.from_env(**overrides)
    if engine == "auto":
        engine, _version = detect_engine(config)
    if engine not in BACKENDS:
        raise ConfigurationError(f"Unknown engine {engine!r}: use auto, elasticsearch or opensearch.")
    return BACKENDS[engine].connect(config)  # type: ignore[attr-defined]
