"""SciFact nDCG@10 through a real cluster: documents indexed through e5plugin (server-side pipeline or
client-side embedding), queries through the query helper; exact and HNSW search side by side.

    python benchmarks/scifact_quality.py --engine opensearch --mode server
    python benchmarks/scifact_quality.py --engine elasticsearch --mode client
    python benchmarks/scifact_quality.py --engine elasticsearch --mode client --url http://127.0.0.1:9260 \
        --model ~/.cache/e5plugin/models/e5-small-v2-tool --backend onnx --num-candidates 100,500
    python benchmarks/scifact_quality.py --engine opensearch --mode server --url http://127.0.0.1:9250 \
        --model ~/.cache/e5plugin/models/e5-small-v2-tool --model-format onnx

Published: all-MiniLM-L6-v2 0.6451 (MTEB), e5-small-v2 0.6885. A correct pipeline lands within +-0.01 of it with
exact search (+-0.005 asked for E5).

Client mode embeds every passage and query once per model, backend and prefix (``perf.cached_encode``, on disk):
a second engine, a second run or ``prefix_ablation.py`` reuse the vectors (``--backend onnx``: ONNX Runtime fp32,
the same vectors as torch, faster). HNSW rows are searched at every ``--num-candidates`` value (Elasticsearch;
OpenSearch's Lucene kNN takes ``k`` only).
"""

from __future__ import annotations

import argparse
import os
import time

from common import cluster, limit_corpus, load_scifact, minilm_dir, ndcg_at_k, recall_vs, write_result
from perf import cached_encode, load1

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.engines.base import DeploymentOptions
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode
from e5plugin.search import SemanticSearch

PUBLISHED = {"minilm-l6-v2": 0.6451, "e5-small-v2": 0.6885, "multilingual-e5-small": 0.6759}


class _Memo(Embedder):
    """The real embedder, its vectors of the corpus and the queries computed once (cached on disk by
    ``prime``): every index and search of the run, and later runs, reuse them. Prefixes come from the plan."""

    def __init__(self, spec, backend: str = "torch") -> None:
        super().__init__(spec, backend=backend)
        self._seen: dict[tuple[str, str], object] = {}

    def prime(self, passages: list[str], queries: list[str]) -> None:
        p = cached_encode(self, [self.plan.passage(t, Actor.EMBEDDER) for t in passages])
        q = cached_encode(self, [self.plan.query_text(t, Actor.EMBEDDER) for t in queries])
        self._seen.update({("p", t): v for t, v in zip(passages, p, strict=True)})
        self._seen.update({("q", t): v for t, v in zip(queries, q, strict=True)})

    def _memo(self, kind: str, texts, compute):
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if (kind, t) not in self._seen]
        if missing:
            self._seen.update({(kind, t): v for t, v in zip(missing, compute(missing), strict=True)})
        return np.stack([self._seen[(kind, t)] for t in texts])

    def encode_passages(self, texts, batch_size=None):
        return self._memo("p", texts, lambda m: super(_Memo, self).encode_passages(m, batch_size))

    def encode_queries(self, texts, batch_size=None):
        return self._memo("q", texts, lambda m: super(_Memo, self).encode_queries(m, batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["opensearch", "elasticsearch"], required=True)
    parser.add_argument("--mode", choices=["server", "client"], required=True)
    parser.add_argument("--model", default=None, help="model directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--url", help="use this cluster instead of starting a local node")
    parser.add_argument("--limit-docs", type=int, default=0)
    parser.add_argument("--backend", default="torch", help="client mode: torch or onnx (fp32, the same vectors)")
    parser.add_argument("--num-candidates", default="100", help="HNSW num_candidates values, comma-separated")
    parser.add_argument("--model-format", default="torchscript", help="server mode on OpenSearch: torchscript|onnx")
    parser.add_argument("--name", help="result file name (default scifact-<engine>-<mode>)")
    args = parser.parse_args()
    candidates = [int(n) for n in args.num_candidates.split(",")]

    corpus, queries, qrels = load_scifact("test")
    full_corpus = corpus
    if args.limit_docs:  # the first N documents plus every judged one (as check-quantization does)
        corpus = limit_corpus(corpus, qrels, args.limit_docs)
    spec = resolve_model(os.path.expanduser(args.model or minilm_dir()))
    name = args.name or f"scifact-{args.engine}-{args.mode}"
    results: dict = {"engine": args.engine, "mode": args.mode, "model": spec.model_id, "docs": len(corpus)}
    results["load_at_start"] = load1()
    with cluster(args.engine, args.url, f"bench-{args.engine}", heap="1g") as url:
        backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
        mode = Mode(args.mode)
        if mode is Mode.SERVER:
            backend.apply_one_node_ml_settings()
        results["engine_version"] = backend.capabilities.version_text
        embedder = _Memo(spec, args.backend) if mode is Mode.CLIENT else None
        if embedder is not None:
            results["embed_backend"] = embedder.label
            started = time.perf_counter()
            embedder.prime([d["text"] for d in full_corpus], list(queries.values()))  # one cache for all subsets
            print(f"corpus and queries embedded (or read from the cache) in {time.perf_counter() - started:.0f}s")
        layouts = {"hnsw": "hnsw", "exact": "flat" if args.engine == "elasticsearch" else "hnsw"}
        indices = {}
        for label, options in layouts.items():
            index = f"bench-scifact-{label}"
            if label == "exact" and args.engine == "opensearch":
                indices[label] = indices["hnsw"]  # OpenSearch: exact = knn_score script over the same index
                continue
            backend.delete_index(index)
            result = deploy(
                backend,
                spec,
                DeployRequest(
                    index=index,
                    mode=mode,
                    index_options=options,
                    replicas=0,
                    model_id=f"bench-{spec.short_name}-{args.model_format}",
                    deployment=DeploymentOptions(model_format=args.model_format, timeout="900s"),
                ),
            )
            if mode is Mode.SERVER:
                results["model_format"] = args.model_format
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
        runs = [("exact", indices["exact"], 100)]
        hnsw_candidates = candidates if args.engine == "elasticsearch" else candidates[:1]
        runs += [
            (f"hnsw@{n}" if args.engine == "elasticsearch" else "hnsw", indices["hnsw"], n) for n in hnsw_candidates
        ]
        for label, index, n in runs:
            helper = SemanticSearch.for_index(index, backend=backend, embedder=embedder)
            exact = label == "exact" and args.engine == "opensearch"  # knn_score script over every document
            started = time.perf_counter()
            ranked[label] = {
                qid: [h.id for h in helper.search(text, k=10, num_candidates=n, exact=exact, source=False)]
                for qid, text in queries.items()
            }
            results[f"query_{label}_ms"] = round(1000 * (time.perf_counter() - started) / len(queries), 1)
        for label in ranked:
            results[f"ndcg@10_{label}"] = round(ndcg_at_k(ranked[label], qrels), 4)
            if label != "exact":
                results[f"{label}_recall@10_vs_exact"] = round(recall_vs(ranked["exact"], ranked[label]), 4)
        for index in set(indices.values()):  # the nodes are shared: leave nothing behind
            backend.delete_index(index)
        if mode is Mode.SERVER:
            for model in backend.find_models(f"bench-{spec.short_name}-{args.model_format}"):
                backend.delete_model(model["model_id"])
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
