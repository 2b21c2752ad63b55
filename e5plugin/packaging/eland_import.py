"""Elasticsearch trained models through eland: trace, configure (``prefix_strings``), upload.

eland does the tracing, vocabulary and chunked upload; e5plugin chooses the task type (eland does not detect
E5 ids), the prefixes (from the prefix plan) and records provenance in the model's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingCapabilityError, UnsupportedModelError
from ..models import ModelSpec
from ..prefixes import Actor, PrefixPlan
from . import description, provenance


@dataclass
class TracedModel:
    model_path: str
    vocab_path: str
    config: Any  # eland.ml.pytorch.NlpTrainedModelConfig

    def config_dict(self) -> dict:
        return self.config.to_dict()


def check_eland_matches(cluster_major: int) -> None:
    """eland's major version must match the cluster's (eland 9 refuses 8.x clusters and vice versa)."""
    try:
        import eland
    except ImportError as exc:
        raise MissingCapabilityError(
            "Importing models into Elasticsearch needs eland: pip install 'e5plugin[eland]'."
        ) from exc
    major = int(eland.__version__.split(".")[0])
    if major != cluster_major:
        raise MissingCapabilityError(
            f"eland {eland.__version__} cannot import into an Elasticsearch {cluster_major}.x cluster: install the "
            f"matching major version, pip install 'eland[pytorch]>={cluster_major},<{cluster_major + 1}'."
        )


def trace(spec: ModelSpec, plan: PrefixPlan, es_version: tuple[int, int, int], work_dir: Path) -> TracedModel:
    """Trace the model with eland for this cluster version; prefixes go into ``prefix_strings`` only if the
    plan says the cluster adds them."""
    from eland.ml.pytorch.transformers import TransformerModel

    cluster = plan.cluster_adds
    try:
        model = TransformerModel(
            model_id=spec.local_path or spec.model_id,
            task_type="text_embedding",
            es_version=es_version,
            quantize=False,
            ingest_prefix=plan.passage_prefix if cluster and plan.ingest is Actor.CLUSTER else None,
            search_prefix=plan.query_prefix if cluster and plan.query is Actor.CLUSTER else None,
            max_model_input_size=spec.max_length,
        )
    except TypeError as exc:
        if "not supported" in str(exc):
            raise UnsupportedModelError(
                f"eland cannot import {spec.model_id} ({exc}). Use client-side mode (--mode client), which "
                "embeds locally with sentence-transformers and works with any model."
            ) from exc
        raise
    work_dir.mkdir(parents=True, exist_ok=True)
    model_path, config, vocab_path = model.save(str(work_dir))
    config.description = description(spec)
    config.metadata = {"e5plugin": provenance(spec)}
    return TracedModel(model_path, vocab_path, config)


def upload(client: Any, model_id: str, traced: TracedModel) -> None:
    """PUT config, vocabulary and definition parts (eland's chunked upload)."""
    from eland.ml.pytorch import PyTorchModel

    PyTorchModel(client, model_id).import_model(
        model_path=traced.model_path, config_path=None, vocab_path=traced.vocab_path, config=traced.config
    )
