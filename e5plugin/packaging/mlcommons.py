"""OpenSearch ml-commons packaging: a TorchScript zip (one ``.pt`` + ``tokenizer.json``) and its model config.

The traced graph is the bare transformer ``(input_ids, attention_mask) -> (last_hidden_state, ...)`` with eager
attention (no ``aten::scaled_dot_product_attention``, which older libtorch builds in DJL lack); ml-commons'
``huggingface_transformers`` translator then pools (``pooling_mode``) and normalizes (``normalize_result``) as the
spec says, one text at a time, without padding. ``tokenizer.json`` carries a truncation block at the model's max
length, so long texts are cut the same way as client-side.
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
PROVENANCE_KEY = "e5plugin_provenance"  # part of the fingerprint: bump when the zip layout changes


@dataclass
class MlCommonsPackage:
    zip_path: Path
    zip_sha256: str
    size: int
    model_config: dict
    fingerprint: str  # stable over re-packaging: weights + config, not zip bytes (traces are not byte-stable)
    description: str

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


def fingerprint(spec: ModelSpec, config: dict) -> str:
    payload = {
        "weights": spec.weights_sha256,
        "max_length": spec.max_length,
        "config": {k: v for k, v in config.items() if k != "all_config"},
        "packaging": PACKAGING_VERSION,
    }
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


def package(spec: ModelSpec, plan: PrefixPlan, work_dir: Path) -> MlCommonsPackage:
    """Trace and zip a local checkpoint (hub ids are downloaded by ``resolve_model(download=True)`` first)."""
    if not spec.local_path:
        raise UnknownModelError(
            f"{spec.model_id} is not on disk: pass a local directory (e5plugin model pull) or let deploy download it."
        )
    config = model_config(spec, plan)
    work_dir.mkdir(parents=True, exist_ok=True)
    pt = trace(spec, work_dir / f"{spec.short_name}.pt")
    zip_path = work_dir / f"{spec.short_name}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in ((pt.name, pt.read_bytes()), ("tokenizer.json", tokenizer_json(spec).encode())):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)  # no timestamps
    pt.unlink()
    data = zip_path.read_bytes()
    fp = fingerprint(spec, config)
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
    )
