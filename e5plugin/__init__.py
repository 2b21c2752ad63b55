"""e5plugin: E5 text-embedding models inside Elasticsearch and OpenSearch clusters."""

from __future__ import annotations

from .config import ConnectionConfig
from .engines import connect
from .engines.base import Hit
from .models import KNOWN_MODELS, ModelSpec, resolve_model
from .prefixes import Actor, Mode, PrefixPlan, plan_prefixes
from .search import IndexSetup, SemanticSearch

__version__ = "0.1.0"

__all__ = [
    "KNOWN_MODELS",
    "Actor",
    "ConnectionConfig",
    "Hit",
    "IndexSetup",
    "Mode",
    "ModelSpec",
    "PrefixPlan",
    "SemanticSearch",
    "connect",
    "plan_prefixes",
    "resolve_model",
]
