"""What a prefix mistake costs: SciFact nDCG@10 with E5's prefixes correct, missing, doubled and swapped.

    PYTHONPATH=. .venv/bin/python benchmarks/prefix_ablation.py --model ~/.cache/e5plugin/models/e5-small-v2-tool

Client-side embedding (``Embedder.encode`` of the texts exactly as each variant writes them), exact search
(numpy brute force over the float32 vectors: what a ``flat`` Elasticsearch index returns, see
``scifact_quality.py``). The full corpus (5,183 documents) for the correct variant; the mistakes on
``--limit-docs`` (the first N documents plus every judged one, like ``check-quantization``) with the correct
variant re-scored on the same subset, so every row of the table compares like with like. Vectors are cached
(``perf.cached_encode``), so ``scifact_quality.py`` reuses the correct ones.

``--limit-docs 0`` scores every variant on the full corpus (``results/prefix-ablation-full-e5-small-v2.json``,
written after each variant): each passage-prefix variant embeds 5,183 abstracts, cached 256 at a time, so a stopped
run resumes where it was (query-only re-uses none's passages, passage-only the correct ones)::

    PYTHONPATH=. .venv/bin/python benchmarks/prefix_ablation.py --limit-docs 0 \
        --variants correct,none,query-only,passage-only,doubled,swapped

variants  correct  ``query: `` + query, ``passage: `` + document
          none     no prefix on either side (a deployment that lost its prefixes)
          doubled  ``query: query: `` / ``passage: passage: `` (two actors both adding it)
          swapped  ``passage: `` + query, ``query: `` + document
          query-only / passage-only: one side prefixed, the other not
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import load_scifact, write_result
from perf import cached_encode, load1

from e5plugin.embed import Embedder
from e5plugin.models import resolve_model
from e5plugin.quality import exact_top_k, limit_corpus, ndcg_at_k

DEFAULT_MODEL = Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-tool"
Q, P = "query: ", "passage: "
CHUNK = 256  # passages embedded (and cached) at a time: an interrupted full-corpus run resumes
VARIANTS = {  # name -> (query prefix, passage prefix)
    "correct": (Q, P),
    "none": ("", ""),
    "doubled": (Q + Q, P + P),
    "swapped": (P, Q),
    "query-only": (Q, ""),
    "passage-only": ("", P),
}


def ndcg(
    embedder: Embedder,
    corpus: list[dict],
    queries: dict[str, str],
    qrels: dict,
    qp: str,
    pp: str,
    known: dict[str, np.ndarray] | None = None,
) -> float:
    """nDCG@10 of exact search; ``known``: passage vectors already embedded (by document id) for prefix ``P``."""
    if known is not None and pp == P:
        docs = np.stack([known[d["id"]] for d in corpus])
    else:
        docs = cached_encode(embedder, [pp + d["text"] for d in corpus], chunk=CHUNK)
    qids = list(queries)
    qvecs = cached_encode(embedder, [qp + queries[q] for q in qids])
    top = exact_top_k(qvecs, docs, k=10)
    ranked = {qid: [corpus[i]["id"] for i in row] for qid, row in zip(qids, top, strict=True)}
    return ndcg_at_k(ranked, qrels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--backend", default="onnx", help="torch or onnx (fp32: the same vectors, faster)")
    parser.add_argument("--limit-docs", type=int, default=300, help="subset for the mistake variants (0: all)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--no-torch-check", action="store_true", help="skip the 32-document ONNX-vs-torch check")
    parser.add_argument("--out", default=None, help="result name (default: prefix-ablation[-full]-e5-small-v2)")
    args = parser.parse_args()
    out = args.out or ("prefix-ablation-full-e5-small-v2" if not args.limit_docs else "prefix-ablation-e5-small-v2")

    spec = resolve_model(os.path.expanduser(args.model))
    embedder = Embedder(spec, backend=args.backend)
    corpus, queries, qrels = load_scifact("test")
    subset = limit_corpus(corpus, qrels, args.limit_docs)
    results: dict = {"model": spec.model_id, "backend": embedder.label, "docs": len(corpus), "subset": len(subset)}
    started = time.perf_counter()
    results["full_corpus_correct"] = round(ndcg(embedder, corpus, queries, qrels, Q, P), 4)
    full = cached_encode(embedder, [P + d["text"] for d in corpus], chunk=CHUNK)  # from the cache now
    known = {d["id"]: v for d, v in zip(corpus, full, strict=True)}
    print(
        f"full corpus, correct prefixes: nDCG@10 {results['full_corpus_correct']} "
        f"({time.perf_counter() - started:.0f}s, load {load1()})",
        flush=True,
    )
    if args.backend != "torch" and not args.no_torch_check:  # the cached vectors must be the torch ones: check a sample
        sample = [P + d["text"] for d in corpus[:32]]
        torch_vecs = Embedder(spec, backend="torch").encode(sample)
        cos = np.sum(torch_vecs * cached_encode(embedder, [P + d["text"] for d in corpus])[:32], axis=1)
        results["min_cosine_vs_torch_32_docs"] = round(float(cos.min()), 6)
        print(f"{embedder.label} vs torch on 32 documents: lowest cosine {cos.min():.6f}", flush=True)
    table: dict[str, float] = {}
    results["subset_ndcg@10"] = table
    for name in args.variants.split(","):
        qp, pp = VARIANTS[name]
        started = time.perf_counter()
        table[name] = round(ndcg(embedder, subset, queries, qrels, qp, pp, known), 4)
        print(
            f"subset {len(subset)} docs, {name:12} nDCG@10 {table[name]} ({time.perf_counter() - started:.0f}s, "
            f"load {load1()})",
            flush=True,
        )
        results["subset_delta_vs_correct"] = (
            {k: round(v - table["correct"], 4) for k, v in table.items()} if ("correct" in table) else {}
        )
        write_result(out, results)  # after every variant: a stopped run keeps what it measured
    print(f"written {write_result(out, results)}")


if __name__ == "__main__":
    main()
