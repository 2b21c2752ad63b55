"""OpenSearch ml-commons: the same model registered as TorchScript and as ONNX, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/mlcommons_formats.py --url http://127.0.0.1:9250 \\
        --model ~/.cache/e5plugin/models/e5-small-v2-tool --docs 300 --rounds 2

For each format: ``deploy --mode server`` (the model registered with that ``model_format``, the ingest pipeline
and an index), then in alternating rounds the first ``--docs`` SciFact passages are ingested through the
pipeline (the node embeds them; final refresh inside the timing) and docs/s recorded with the load average and the
node's CPU seconds. Quality: every stored vector against the local sentence-transformers embedding of
``passage: `` + text, and ``--queries`` SciFact queries embedded by the node (``_predict`` with the query prefix
from the model config) against the local ``query: `` embedding (cosine: min and mean). The models and indices it
made are deleted at the end (node memory is shared).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import load_scifact, write_result
from perf import cached_encode, load1, node_cpu_ms, print_table

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.engines.base import DeploymentOptions
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode

DEFAULT_MODEL = Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-tool"
COLUMNS = ["format", "round", "docs", "seconds", "docs_per_s", "node_cpu_s", "load"]


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:9250", help="an OpenSearch node with ml-commons")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory (default: e5-small-v2)")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--formats", default="torchscript,onnx")
    parser.add_argument("--name", default="mlcommons-formats-e5-small-v2")
    args = parser.parse_args()

    spec = resolve_model(os.path.expanduser(args.model))
    corpus, queries, _ = load_scifact("test")
    docs = corpus[: args.docs]
    query_texts = list(queries.values())[: args.queries]
    backend = connect(ConnectionConfig(urls=[args.url], request_timeout=900))
    backend.apply_one_node_ml_settings()
    formats = args.formats.split(",")
    started = time.perf_counter()
    local = Embedder(spec)  # plain encode: prefixes written here, as E5 prescribes
    local_passages = cached_encode(local, [spec.passage_prefix + d["text"] for d in docs])
    local_queries = cached_encode(local, [spec.query_prefix + q for q in query_texts])
    print(f"local embedding: {time.perf_counter() - started:.1f}s", flush=True)

    requests = {
        fmt: DeployRequest(
            index=f"bench-fmt-{fmt}",
            mode=Mode.SERVER,
            model_id=f"bench-{spec.short_name}-{fmt}",
            replicas=0,
            deployment=DeploymentOptions(model_format=fmt, timeout="900s"),
        )
        for fmt in formats
    }
    rows: list[dict] = []
    quality: dict[str, dict] = {}
    model_ids: dict[str, str] = {}
    try:
        for fmt, request in requests.items():
            t0 = time.perf_counter()
            backend.delete_index(request.index)
            result = deploy(backend, spec, request)
            model_ids[fmt] = result.model.model_id
            print(f"{fmt}: model {result.model.model_id} {result.model.action} in {time.perf_counter() - t0:.1f}s")
            ingest(backend, request.index, docs[:16], batch_size=16, refresh=True)  # warm-up
        for round_number in range(1, args.rounds + 1):
            for fmt, request in requests.items():
                backend.delete_index(request.index)
                deploy(backend, spec, request)
                cpu0, load, t0 = node_cpu_ms(backend), load1(), time.perf_counter()
                report = ingest(backend, request.index, docs, batch_size=64, refresh=True)
                seconds = time.perf_counter() - t0
                assert report.ok and report.indexed == len(docs), report.to_dict()
                row = {
                    "format": fmt,
                    "round": round_number,
                    "docs": len(docs),
                    "seconds": round(seconds, 1),
                    "docs_per_s": round(len(docs) / seconds, 2),
                    "node_cpu_s": round((node_cpu_ms(backend) - cpu0) / 1000, 1),
                    "load": load,
                }
                rows.append(row)
                print_table([row], COLUMNS)
        for fmt, request in requests.items():
            stored = np.array([backend.get_document(request.index, d["id"])["embedding"] for d in docs])
            remote_q = np.array([backend.embed_query(model_ids[fmt], q, cluster_prefix=True) for q in query_texts])
            p, q = _cos_rows(stored, local_passages), _cos_rows(remote_q, local_queries)
            quality[fmt] = {
                "passage_cos_min": round(float(p.min()), 6),
                "passage_cos_mean": round(float(p.mean()), 6),
                "query_cos_min": round(float(q.min()), 6),
                "query_cos_mean": round(float(q.mean()), 6),
            }
            print(fmt, quality[fmt])
    finally:
        for request in requests.values():
            backend.delete_index(request.index)
            for model in backend.find_models(request.model_id):
                backend.delete_model(model["model_id"])
    summary = {fmt: round(float(np.mean([r["docs_per_s"] for r in rows if r["format"] == fmt])), 2) for fmt in formats}
    print("\nmean docs/s:", summary)
    data = {"model": spec.model_id, "engine_version": backend.capabilities.version_text, "rows": rows}
    data.update({"mean_docs_per_s": summary, "quality": quality})
    print(f"written {write_result(args.name, data)}")


if __name__ == "__main__":
    main()
