"""HNSW recall@10 against exact search, and SciFact nDCG@10, for every index option e5plugin offers.

    PYTHONPATH=. .venv/bin/python benchmarks/recall.py                    # fresh local ES + OS nodes
    PYTHONPATH=. .venv/bin/python benchmarks/recall.py --es-url http://127.0.0.1:9201 --os-url http://127.0.0.1:9200
    PYTHONPATH=. .venv/bin/python benchmarks/recall.py --model e5 --num-candidates 10,100

Elasticsearch: hnsw, int8_hnsw, int4_hnsw, bbq_hnsw, flat, int8_flat; OpenSearch (Lucene engine): hnsw, hnsw_sq.
The SciFact documents are embedded once (client side) and loaded into one index per option; the 300 test queries
run as kNN (k=10, ``num_candidates`` as given; OpenSearch's Lucene kNN takes k only) with precomputed query
vectors. Exact = brute force in numpy over the same float32 vectors.
"""

from __future__ import annotations

import argparse

from common import cluster, limit_corpus, load_scifact, ndcg_at_k, recall_vs, write_result
from perf import cached_vectors, load1, model_path, print_table

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.quality import exact_top_k

COLUMNS = ["engine", "index_options", "num_candidates", "recall@10_vs_exact", "ndcg@10", "ms_per_query"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm, e5 (stand-in) or a model directory")
    parser.add_argument("--engines", default="elasticsearch,opensearch")
    parser.add_argument("--es-url")
    parser.add_argument("--os-url")
    parser.add_argument("--num-candidates", default="100", help="comma-separated; Elasticsearch only")
    parser.add_argument("--limit-docs", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    import time

    corpus, queries, qrels = load_scifact("test")
    corpus = limit_corpus(corpus, qrels, args.limit_docs)
    spec = resolve_model(model_path(args.model))
    embedder = Embedder(spec)
    doc_vectors = cached_vectors(embedder, [d["text"] for d in corpus], "passage")
    qids = list(queries)
    query_vectors = cached_vectors(embedder, [queries[q] for q in qids], "query")
    top = exact_top_k(query_vectors, doc_vectors)
    exact = {q: [corpus[i]["id"] for i in row] for q, row in zip(qids, top, strict=True)}
    rows = [
        {
            "engine": "numpy",
            "index_options": "exact",
            "recall@10_vs_exact": 1.0,
            "ndcg@10": round(ndcg_at_k(exact, qrels), 4),
        }
    ]
    print_table(rows, COLUMNS)
    candidates = [int(c) for c in args.num_candidates.split(",")]
    urls = {"elasticsearch": args.es_url, "opensearch": args.os_url}
    for engine in [e for e in args.engines.split(",") if e]:
        with cluster(engine, urls[engine], f"bench-recall-{engine}") as url:
            backend = connect(ConnectionConfig(urls=[url], request_timeout=300))
            for option in backend.index_options:
                index = f"bench-recall-{option.replace('_', '-')}"
                backend.delete_index(index)
                setup = deploy(
                    backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, index_options=option, replicas=0)
                ).setup
                docs = ({**d, setup.vector_field: v.tolist()} for d, v in zip(corpus, doc_vectors, strict=True))
                report = ingest(backend, index, docs, refresh=True)
                assert report.ok and report.indexed == len(corpus), report.to_dict()
                with backend.errors():  # one segment: the graph a settled index searches
                    backend.client.indices.forcemerge(index=index, max_num_segments=1)
                for n in candidates if engine == "elasticsearch" else candidates[:1]:
                    bodies = [
                        backend.knn_body(
                            vector_field=setup.vector_field, k=10, num_candidates=n, vector=v.tolist(), source=False
                        )
                        for v in query_vectors
                    ]
                    started = time.perf_counter()
                    responses = []
                    for start in range(0, len(bodies), 50):
                        responses += backend.msearch(index, bodies[start : start + 50])
                    seconds = time.perf_counter() - started
                    ranked = {q: [h.id for h in backend.hits(r)] for q, r in zip(qids, responses, strict=True)}
                    found = {
                        "engine": engine,
                        "index_options": option,
                        "num_candidates": n if engine == "elasticsearch" else None,
                        "recall@10_vs_exact": round(recall_vs(exact, ranked), 4),
                        "ndcg@10": round(ndcg_at_k(ranked, qrels), 4),
                        "ms_per_query": round(1000 * seconds / len(bodies), 2),
                    }
                    rows.append(found)
                    print_table([found], COLUMNS)
                backend.delete_index(index)
    print()
    print_table(rows, COLUMNS)
    name = args.name or f"recall-{args.model if args.model in ('minilm', 'e5') else spec.short_name}"
    result = {"model": spec.model_id, "docs": len(corpus), "queries": len(qids), "rows": rows, "load": load1()}
    print(f"\nwritten {write_result(name, result)}")


if __name__ == "__main__":
    main()
