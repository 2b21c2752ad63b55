"""Recall@10 of one quantized index before and after a force merge, on the real e5-small-v2 vectors of scale.py.

Found with the 1M scale cells (BENCHMARKS section 6): OpenSearch ``hnsw_sq`` with Lucene's default confidence
interval lost recall whenever segments merged. This loads SIZE vectors in PARTS flushed segments, measures recall@10
against exact (300 real queries), force-merges to one segment and measures again.

    PYTHONPATH=. .venv/bin/python benchmarks/quantizer_merge.py --url http://127.0.0.1:9250   # the product's mapping
    ... --encoder '{}'                             # bits 7 only: Lucene's default interval (the old mapping)
    ... --encoder '{"confidence_interval": 0}'     # Lucene's dynamic interval
"""

from __future__ import annotations

import argparse
import json
import time

import scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--parts", type=int, default=5, help="flushed segments before the merge")
    parser.add_argument("--option", default="hnsw_sq")
    parser.add_argument(
        "--encoder", default=None, help="OpenSearch sq encoder parameters (JSON) replacing the product's"
    )
    args = parser.parse_args()

    from e5plugin.config import ConnectionConfig
    from e5plugin.engines import connect
    from e5plugin.models import resolve_model

    backend = connect(ConnectionConfig(urls=[args.url], request_timeout=600))
    spec = resolve_model(str(scale.MODEL_DIR))
    docs, _ = scale.corpus_vectors(args.size)
    queries = scale.query_vectors()[:300]
    exact = scale.exact_top10(queries, docs)
    index = "quantizer-merge"
    backend.delete_index(index)
    body = backend.index_body(spec, index_options=args.option, replicas=0)
    body["settings"]["index"]["refresh_interval"] = "-1"
    if args.encoder is not None:
        encoder = body["mappings"]["properties"]["embedding"]["method"]["parameters"]["encoder"]
        encoder["parameters"] = {"bits": 7, **json.loads(args.encoder)}
    print(json.dumps(body["mappings"]["properties"]["embedding"]), flush=True)
    backend.ensure_index(index, body, vector_field="embedding", dims=spec.dims)

    bodies = [
        backend.knn_body(vector_field="embedding", k=10, num_candidates=100, vector=v.tolist(), source=False)
        for v in queries
    ]

    def recall() -> float:
        return scale.recall_at_10(backend, index, bodies, exact)

    def segments() -> list[int]:
        shards = backend.client.indices.segments(index=index)["indices"][index]["shards"]
        return [len(copy["segments"]) for shard in shards.values() for copy in shard]

    step = args.size // args.parts
    started = time.perf_counter()
    for part in range(args.parts):
        stop = args.size if part == args.parts - 1 else (part + 1) * step
        actions = ({"_index": index, "_id": str(i), "embedding": docs[i].tolist()} for i in range(part * step, stop))
        for _ in backend.streaming_bulk(actions, chunk_size=500, max_retries=3, raise_on_error=True):
            pass
        backend.refresh(index)
        backend.client.indices.flush(index=index)
    print(f"bulk {time.perf_counter() - started:.0f} s, segments {segments()}, recall@10 {recall()}", flush=True)
    started = time.perf_counter()
    backend.client.indices.forcemerge(index=index, max_num_segments=1, request_timeout=3600)
    backend.refresh(index)
    print(f"merge {time.perf_counter() - started:.0f} s, segments {segments()}, recall@10 {recall()}", flush=True)
    backend.delete_index(index)


if __name__ == "__main__":
    main()
