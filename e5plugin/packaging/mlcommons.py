"""OpenSearch ml-commons packaging: a zip of the bare transformer (TorchScript ``.pt`` or ONNX ``.onnx``) plus
``tokenizer.json``, and its model config.

``TORCH_SCRIPT`` (``model_format``): the traced graph is ``(input_ids, attention_mask) -> (last_hidden_state,
...)`` with eager attention (no ``aten::scaled_dot_product_attention``, which older libtorch builds in DJL lack);
ml-commons' ``huggingface_transformers`` translator then pools (``pooling_mode``) and normalizes
(``normalize_result``) as the spec says, one text at a time, without padding.

``ONNX``: an ONNX graph of the same transformer, exported here (opset 14, eager attention, IR version <= 8 so that
the ONNX Runtime 1.16 inside ml-commons 2.x/3.x loads it) with named inputs and ``last_hidden_state`` as its first
output; ml-commons' ONNX translator pools and normalizes from the same model config. That translator feeds
``token_type_ids`` only when ``model_type`` is ``bert`` or ``albert``, so the graph has that input exactly then
(ONNX Runtime refuses a feed the graph does not declare, and a declared input left unfed).

Both formats ship ``tokenizer.json`` with a truncation block at the model's max length (DJL reads it; it caps the
length at 512, E5's and BERT's limit anyway), so long texts are cut the same way as client-side.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnknownModelError
from ..models import ModelSpec
from ..prefixes import Actor, PrefixPlan
from . import description, provenance

FRAMEWORK = "huggingface_transformers"
CHUNK_BYTES = 10_000_000  # ml-commons' limit for one upload chunk
PACKAGING_VERSION = "1"
TORCH_SCRIPT = "TORCH_SCRIPT"
ONNX = "ONNX"
#: ``--model-format`` values -> ml-commons ``model_format``
MODEL_FORMATS = {"torchscript": TORCH_SCRIPT, "onnx": ONNX}
#: what a new registration uses when no format is chosen, then what an existing registration may be reused in.
#: ONNX first: measured on e5-small-v2 through OpenSearch 3.6 (BENCHMARKS.md, "Real e5-small-v2"): the same
#: vectors as TorchScript and as sentence-transformers (cosine 1.000000 on 300 passages and 50 queries), ingest 1.7x
#: as fast (2.78 vs 1.64 docs/s, two alternating rounds) at 0.66x the node CPU per document.
DEFAULT_FORMATS = (ONNX, TORCH_SCRIPT)
#: model types whose ONNX graph gets ``token_type_ids`` from ml-commons (ONNXSentenceTransformerTextEmbeddingTranslator)
ONNX_TOKEN_TYPE_MODELS = ("bert", "albert")
ONNX_OPSET = 14
ONNX_MAX_IR_VERSION = 8  # ONNX Runtime 1.16 (ml-commons' DJL engine) reads IR <= 9
PROVENANCE_KEY = "e5plugin_provenance"  # part of the fingerprint: bump when the zip layout changes


@dataclass
class MlCommonsPackage:
    zip_path: Path
    zip_sha256: str
    size: int
    model_config: dict
    fingerprint: str  # stable over re-packaging: weights + config, not zip bytes (traces are not byte-stable)
    description: str
    model_format: str = TORCH_SCRIPT  # ml-commons' model_format: TORCH_SCRIPT or ONNX

    def chunks(self) -> list[bytes]:
        data = self.zip_path.read_bytes()
        return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


def model_config(spec: ModelSpec, plan: PrefixPlan) -> dict:
    """The register-time ``model_config``; prefixes only when the plan says the cluster adds them."""
    config_path = Path(spec.local_path or "") / "config.json"
    all_config = config_path.read_text() if config_path.is_file() else "{}"
    config: dict = {
        "model_type": spec.model_type,
        "embedding_dimension": spec.dims,
        "framework_type": FRAMEWORK,
        "pooling_mode": spec.pooling,
        "normalize_result": spec.normalize,
        "all_config": json.dumps(json.loads(all_config)),
    }
    if plan.query is Actor.CLUSTER:
        config["query_prefix"] = plan.query_prefix
    if plan.ingest is Actor.CLUSTER:
        config["passage_prefix"] = plan.passage_prefix
    return config


def recorded_provenance(model: dict) -> dict:
    """The provenance e5plugin stored in a registered model's ``all_config`` (empty if none)."""
    try:
        return json.loads(model.get("model_config", {}).get("all_config") or "{}").get(PROVENANCE_KEY, {})
    except (TypeError, ValueError):
        return {}


def model_format(value: str | None) -> str:
    """ml-commons' ``model_format`` for ``torchscript``/``onnx`` (or the ml-commons names themselves); None: the
    default for a new registration (``DEFAULT_FORMATS[0]``)."""
    text = (value or DEFAULT_FORMATS[0]).strip()
    if text.upper() in (TORCH_SCRIPT, ONNX):
        return text.upper()
    if text.lower() in MODEL_FORMATS:
        return MODEL_FORMATS[text.lower()]
    raise UnknownModelError(f"model format must be one of {', '.join(MODEL_FORMATS)}, not {value!r}.")


def fingerprint(spec: ModelSpec, config: dict, fmt: str = TORCH_SCRIPT) -> str:
    payload = {
        "weights": spec.weights_sha256,
        "max_length": spec.max_length,
        "config": {k: v for k, v in config.items() if k != "all_config"},
        "packaging": PACKAGING_VERSION,
    }
    if fmt != TORCH_SCRIPT:  # TorchScript fingerprints stay what they were before ONNX existed
        payload["format"] = fmt
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tokenizer_json(spec: ModelSpec) -> str:
    """The fast tokenizer's JSON with truncation at the model's max length and no padding."""
    path = Path(spec.local_path or "") / "tokenizer.json"
    if not path.is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec.local_path)
        if not getattr(tokenizer, "is_fast", False):
            raise UnknownModelError(f"{spec.model_id} has no fast tokenizer (tokenizer.json); ml-commons needs one.")
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            data = json.loads((Path(tmp) / "tokenizer.json").read_text())
    else:
        data = json.loads(path.read_text())
    data["truncation"] = {"direction": "Right", "max_length": spec.max_length, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = None
    return json.dumps(data, ensure_ascii=False)


def trace(spec: ModelSpec, out_pt: Path) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(spec.local_path, torchscript=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.local_path)
    example = tokenizer(["an example sentence to trace the model with"], return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, (example["input_ids"], example["attention_mask"]))
    torch.jit.save(traced, str(out_pt))
    return out_pt


def onnx_input_names(spec: ModelSpec) -> list[str]:
    """The inputs ml-commons feeds an ONNX text-embedding graph of this model type (and nothing else)."""
    names = ["input_ids", "attention_mask"]
    if spec.model_type.lower() in ONNX_TOKEN_TYPE_MODELS:
        names.append("token_type_ids")
    return names


def export_onnx(spec: ModelSpec, out_onnx: Path) -> Path:
    """The bare transformer as ONNX: inputs per :func:`onnx_input_names`, first output ``last_hidden_state``
    ``(batch, sequence, hidden)``, dynamic batch and sequence axes."""
    import onnx
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(spec.local_path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.local_path)
    names = onnx_input_names(spec)
    example = tokenizer(["an example sentence to export the model with"], return_tensors="pt")
    if "token_type_ids" in names and "token_type_ids" not in example:
        example["token_type_ids"] = torch.zeros_like(example["input_ids"])

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            tuple(example[name] for name in names),
            str(out_onnx),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    graph = onnx.load(str(out_onnx))
    if graph.ir_version > ONNX_MAX_IR_VERSION:
        graph.ir_version = ONNX_MAX_IR_VERSION
        onnx.save(graph, str(out_onnx))
    return out_onnx


def package(spec: ModelSpec, plan: PrefixPlan, work_dir: Path, fmt: str = TORCH_SCRIPT) -> MlCommonsPackage:
    """Trace (TorchScript) or export (ONNX) and zip a local checkpoint (hub ids are downloaded by
    ``resolve_model(download=True)`` first)."""
    if not spec.local_path:
        raise UnknownModelError(
            f"{spec.model_id} is not on disk: pass a local directory (e5plugin model pull) or let deploy download it."
        )
    fmt = model_format(fmt)
    config = model_config(spec, plan)
    work_dir.mkdir(parents=True, exist_ok=True)
    if fmt == ONNX:
        graph = export_onnx(spec, work_dir / f"{spec.short_name}.onnx")
    else:
        graph = trace(spec, work_dir / f"{spec.short_name}.pt")
    zip_path = work_dir / f"{spec.short_name}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in ((graph.name, graph.read_bytes()), ("tokenizer.json", tokenizer_json(spec).encode())):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)  # no timestamps
    graph.unlink()
    data = zip_path.read_bytes()
    fp = fingerprint(spec, config, fmt)
    # ml-commons keeps no free-form metadata (3.6 drops `description`), but it stores all_config verbatim:
    # provenance and fingerprint travel there, so what runs in the cluster traces back to the checkpoint.
    hf_config = json.loads(config["all_config"])
    hf_config[PROVENANCE_KEY] = {**provenance(spec), "fingerprint": fp}
    config["all_config"] = json.dumps(hf_config)
    return MlCommonsPackage(
        zip_path=zip_path,
        zip_sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        model_config=config,
        fingerprint=fp,
        description=f"{description(spec)}, e5plugin fingerprint {fp}",
        model_format=fmt,
    )
