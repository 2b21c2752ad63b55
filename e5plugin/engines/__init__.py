"""Engine backends behind one interface; :func:`connect` picks the right one for a cluster."""

from __future__ import annotations

from ..config import ConnectionConfig
from ..errors import ConfigurationError
from .base import Backend, Capabilities, Hit, detect_engine
from .elasticsearch import ElasticsearchBackend
from .opensearch import OpenSearchBackend

BACKENDS: dict[str, type[Backend]] = {"elasticsearch": ElasticsearchBackend, "opensearch": OpenSearchBackend}

__all__ = ["BACKENDS", "Backend", "Capabilities", "Hit", "connect"]


def connect(config: ConnectionConfig | None = None, engine: str | None = None, **settings: object) -> Backend:
    """A backend for the cluster in ``config``; without one, from ``settings`` (``url=``, ``username=``, ...), the
    ``E5PLUGIN_*`` environment variables and the config file, resolved as the CLI resolves them.

    ``engine`` (default: the config's, ``auto``) ``auto`` asks the cluster what it is; naming it skips that request.
    """
    if config is None:
        config = ConnectionConfig.from_env(**settings)
    elif settings:
        raise ConfigurationError(f"Pass either a ConnectionConfig or settings, not both ({', '.join(settings)}).")
    engine = engine or config.engine
    if engine == "auto":
        engine, _version = detect_engine(config)
    if engine not in BACKENDS:
        raise ConfigurationError(f"Unknown engine {engine!r}: use auto, elasticsearch or opensearch.")
    return BACKENDS[engine].connect(config)  # type: ignore[attr-defined]
