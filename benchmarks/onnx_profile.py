"""Where the time of one encoder forward pass goes, per operator type, for torch fp32, ONNX fp32 and ONNX int8
(and an int8 variant with signed weights): the profile behind the "int8 >= 2x" target in BENCHMARKS.md.

    PYTHONPATH=. .venv/bin/python benchmarks/onnx_profile.py                 # MiniLM, 64 SciFact passages
    PYTHONPATH=. .venv/bin/python benchmarks/onnx_profile.py --texts 128 --model e5

Each variant encodes the same texts (the first N SciFact passages, token-bucketed batches of 32, the model's max
length) ``--repeat`` times; the table prints seconds per pass, the speed-up over torch fp32 and, from ONNX
Runtime's own profiler, the share of time in the quantized matrix multiplications (``MatMulInteger`` and the
``DynamicQuantizeLinear`` that feeds them) against everything that stays fp32 (attention softmax, LayerNorm, GELU,
Add, Reshape/Transpose, gathers).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import load_scifact, write_result
from perf import load1, model_path, print_table

from e5plugin.models import resolve_model

INT8_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
FP32_MATMUL_OPS = ("MatMul", "Gemm", "FusedMatMul")


def _batches(tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> list[dict]:
    order = sorted(
        range(len(texts)), key=lambda i: len(tokenizer(texts[i], truncation=True, max_length=max_length)["input_ids"])
    )
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        batches.append(
            dict(tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="np"))
        )
    return batches


def _ort_session(path: Path, profile_dir: str | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, path.stem)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_ort(session, batches: list[dict]) -> None:
    names = {i.name for i in session.get_inputs()}
    for batch in batches:
        session.run(None, {k: v.astype(np.int64) for k, v in batch.items() if k in names})


def _op_shares(profile_file: str) -> dict[str, float]:
    events = json.loads(Path(profile_file).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"].get("op_name", "?")] += event.get("dur", 0)
    total = sum(per_op.values()) or 1
    return {op: round(us / total, 3) for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])}


def _st_preset(directory: Path, preset: str) -> Path:
    """sentence-transformers' own dynamic-int8 preset for this CPU family, for comparison."""
    target = directory / "onnx" / f"model_profile_{preset}.onnx"
    if not target.is_file():
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        model = SentenceTransformer(str(directory), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})
        export_dynamic_quantized_onnx_model(model, preset, str(directory), file_suffix=f"profile_{preset}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer

    from e5plugin import onnx_backend

    spec = resolve_model(model_path(args.model))
    corpus, _, _ = load_scifact()
    texts = [spec.passage_prefix + d["text"] for d in corpus[: args.texts]]
    tokenizer = AutoTokenizer.from_pretrained(spec.local_path)
    batches = _batches(tokenizer, texts, spec.max_length)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    onnx_backend.quantize_int8(spec)  # exports fp32 and the preset int8 once (cached)
    directory = onnx_backend.cache_dir(spec)
    preset = onnx_backend.cpu_preset()
    files = {
        "onnx fp32": directory / "onnx" / "model.onnx",
        f"onnx int8, sentence-transformers {preset} preset": _st_preset(directory, preset),
        f"onnx int8, e5plugin recipe {onnx_backend.quantization_config_name()}": directory / onnx_backend.int8_file(),
    }

    rows = []
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModel.from_pretrained(spec.local_path).eval()
    with torch.inference_mode():
        model(**{k: torch.from_numpy(v) for k, v in batches[0].items()})  # warm-up
        started = time.perf_counter()
        for _ in range(args.repeat):
            for batch in batches:
                model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        torch_s = (time.perf_counter() - started) / args.repeat
    rows.append(
        {
            "variant": "torch fp32",
            "s_per_pass": round(torch_s, 2),
            "x_torch": 1.0,
            "tokens_per_s": round(tokens / torch_s),
            "load": load1(),
        }
    )

    shares: dict[str, dict[str, float]] = {}
    for label, path in files.items():
        session = _ort_session(path, None)
        _run_ort(session, batches[:1])
        started = time.perf_counter()
        for _ in range(args.repeat):
            _run_ort(session, batches)
        seconds = (time.perf_counter() - started) / args.repeat
        with tempfile.TemporaryDirectory() as profile_dir:
            profiled = _ort_session(path, profile_dir)
            _run_ort(profiled, batches)
            shares[label] = _op_shares(profiled.end_profiling())
        quantized = sum(v for k, v in shares[label].items() if k in INT8_OPS)
        matmul = sum(v for k, v in shares[label].items() if k in INT8_OPS or k in FP32_MATMUL_OPS)
        rows.append(
            {
                "variant": label,
                "s_per_pass": round(seconds, 2),
                "x_torch": round(torch_s / seconds, 2),
                "tokens_per_s": round(tokens / seconds),
                "matmul_share": round(matmul, 3),
                "int8_matmul_share": round(quantized, 3),
                "top_ops": ", ".join(f"{k} {v:.0%}" for k, v in list(shares[label].items())[:5]),
                "load": load1(),
            }
        )
    print(f"{spec.model_id}: {len(texts)} passages, {tokens} tokens, {len(batches)} batches, {os.cpu_count()} threads")
    columns = ["variant", "s_per_pass", "x_torch", "tokens_per_s", "matmul_share", "int8_matmul_share", "top_ops"]
    print_table(rows, [*columns, "load"])
    write_result(
        args.name or f"onnx-profile-{args.model}",
        {"model": spec.model_id, "texts": len(texts), "tokens": tokens, "rows": rows, "op_shares": shares},
    )


if __name__ == "__main__":
    main()
