"""Turning a checkpoint into what an engine loads: eland tracing (Elasticsearch), TorchScript zip (ml-commons)."""

from __future__ import annotations

from ..models import ModelSpec


def provenance(spec: ModelSpec) -> dict:
    """What was deployed, so what runs in the cluster can be traced back to a checkpoint."""
    return {
        "source": spec.model_id,
        "revision": spec.revision,
        "weights_sha256": spec.weights_sha256,
        "dims": spec.dims,
        "max_length": spec.max_length,
        "query_prefix": spec.query_prefix,
        "passage_prefix": spec.passage_prefix,
        "normalize": spec.normalize,
    }


def description(spec: ModelSpec) -> str:
    parts = [f"e5plugin: {spec.model_id}"]
    if spec.revision:
        parts.append(f"revision {spec.revision}")
    if spec.weights_sha256:
        parts.append(f"weights sha256 {spec.weights_sha256}")
    return ", ".join(parts)
