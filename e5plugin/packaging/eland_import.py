"""Elasticsearch trained models through eland: trace, configure (``prefix_strings``), upload.

eland does the tracing, vocabulary and chunked upload; e5plugin chooses the task type (eland does not detect
E5 ids), the prefixes (from the prefix plan) and records provenance in the model's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingCapabilityError, UnsupportedModelError
from ..models import ModelSpec
from ..prefixes import Actor, PrefixPlan
from . import description, provenance

#: how far from 1.0 a vector's norm may be and still count as unit length (float32 rounding)
UNIT_TOLERANCE = 1e-3


@dataclass
class TracedModel:
    model_path: str
    vocab_path: str
    config: Any  # eland.ml.pytorch.NlpTrainedModelConfig
    #: whether the traced model's output measured unit length (it normalizes only with a Normalize module)
    normalized: bool | None = None

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


def tokenizer_class_name(spec: ModelSpec) -> str | None:
    """The (slow) tokenizer class eland would load for ``spec`` (``AutoTokenizer(use_fast=False)``), from the
    checkpoint's ``tokenizer_config.json``, else its model type; ``None`` when the files do not say."""
    tokenizer_config = {}
    if spec.local_path:
        path = Path(spec.local_path) / "tokenizer_config.json"
        tokenizer_config = json.loads(path.read_text()) if path.is_file() else {}
    name = tokenizer_config.get("tokenizer_class")
    if not name:
        try:
            from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
        except ImportError:  # pragma: no cover - transformers comes with eland
            return None
        slow, fast = TOKENIZER_MAPPING_NAMES.get(spec.model_type) or (None, None)
        name = slow or fast
    return name.removesuffix("Fast") if name else None


def check_supported(spec: ModelSpec) -> None:
    """Refuse, before any request to the cluster (and any download), a model whose tokenizer eland cannot import
    (ALBERT's SentencePiece tokenizer, e.g. paraphrase-albert-small-v2): the same test eland makes when tracing
    (an instance of one of its SUPPORTED_TOKENIZERS), decided from the checkpoint's files. When they do not tell,
    eland decides while tracing (:func:`trace`)."""
    try:
        from eland.ml.pytorch.transformers import SUPPORTED_TOKENIZERS
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
    except ImportError:  # check_eland_matches says what to install
        return
    name = tokenizer_class_name(spec)
    found = tokenizer_class_from_name(name) if name else None
    if found is None or issubclass(found, SUPPORTED_TOKENIZERS):
        return
    kind = spec.model_type.upper() if spec.model_type else "this model type"
    raise UnsupportedModelError(
        f"Elasticsearch cannot run {spec.model_id} in the cluster: eland, which imports models into Elasticsearch, "
        f"has no tokenizer for {kind} ({name}). Use client-side mode (--mode client), which embeds locally with "
        "sentence-transformers and works with any model."
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
    normalized = traced_output_normalized(model, model_path)
    config.description = description(spec)
    config.metadata = {"e5plugin": {**provenance(spec), "output_normalized": normalized}}
    return TracedModel(model_path, vocab_path, config, normalized)


def traced_output_normalized(model: Any, model_path: str) -> bool:
    """Run the saved TorchScript (what Elasticsearch will run) on eland's sample inputs and check the norms: the
    index may map ``dot_product`` only when every vector has unit length."""
    import torch

    traced = torch.jit.load(model_path)
    inputs = model._traceable_model._compatible_inputs()
    with torch.no_grad():
        output = traced(*inputs)
    if isinstance(output, tuple):
        output = output[0]
    return is_unit_length(output.reshape(-1, output.shape[-1]).tolist())


def is_unit_length(vectors: Any) -> bool:
    """Whether a vector (or every vector of a list of vectors) has norm 1 within :data:`UNIT_TOLERANCE`."""
    rows = vectors if vectors and isinstance(vectors[0], list | tuple) else [vectors]
    return bool(rows) and all(abs(sum(x * x for x in row) ** 0.5 - 1.0) <= UNIT_TOLERANCE for row in rows)


def upload(client: Any, model_id: str, traced: TracedModel) -> None:
    """PUT config, vocabulary and definition parts (eland's chunked upload)."""
    from eland.ml.pytorch import PyTorchModel

    PyTorchModel(client, model_id).import_model(
        model_path=traced.model_path, config_path=None, vocab_path=traced.vocab_path, config=traced.config
    )
