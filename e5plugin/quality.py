"""Retrieval-quality checks: nDCG@10 of a local embedder on a BEIR-format data set, exact (numpy) search.

The int8 gate: :func:`check_quantization` embeds a BEIR data set (e.g. SciFact) with the fp32 model and with its
ONNX int8 version and accepts int8 only when its nDCG@10 is within ``tolerance`` (0.01) of fp32. The verdict is
recorded next to the model's ONNX export, and ``Embedder(..., backend="auto")`` uses int8 only where it was
accepted. ``e5plugin model check-quantization`` runs it from the command line.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .models import ModelSpec

DEFAULT_TOLERANCE = 0.01


def load_beir(directory: str | Path, split: str = "test") -> tuple[list[dict], dict[str, str], dict[str, dict]]:
    """(corpus with ``text`` = title + " " + text as MTEB indexes it, queries of the split, qrels) of a BEIR folder
    (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``)."""
    directory = Path(directory)
    corpus = []
    with (directory / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            title = row.get("title", "")
            corpus.append({"id": row["_id"], "title": title, "text": f"{title} {row['text']}".strip()})
    qrels: dict[str, dict[str, int]] = {}
    with (directory / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            parts = line.strip().split("\t")
            if len(parts) < 3 or (number == 0 and not parts[2].lstrip("-").isdigit()):
                continue  # header row / blank line
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    with (directory / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    return corpus, queries, {q: r for q, r in qrels.items() if q in queries}


def limit_corpus(corpus: list[dict], qrels: dict[str, dict], limit_docs: int | None) -> list[dict]:
    """The first ``limit_docs`` documents plus every judged one (all of them when ``limit_docs`` is 0 / None)."""
    if not limit_docs or limit_docs >= len(corpus):
        return corpus
    judged = {doc for rel in qrels.values() for doc in rel}
    return [d for i, d in enumerate(corpus) if i < limit_docs or d["id"] in judged]


def ndcg_at_k(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> float:
    """Mean nDCG@k with linear gains (trec_eval, as BEIR/MTEB report it) over the queries in ``qrels``."""
    total = 0.0
    for qid, relevant in qrels.items():
        got = ranked.get(qid, [])[:k]
        dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(got))
        ideal = sorted(relevant.values(), reverse=True)[:k]
        idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels) if qrels else 0.0


def exact_top_k(queries: np.ndarray, docs: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the ``k`` most similar documents per query (cosine; brute force), best first."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    scores = q @ d.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def evaluate(embedder, corpus: list[dict], queries: dict[str, str], qrels: dict, k: int = 10) -> dict:
    """nDCG@k of ``embedder`` (exact search), with the passage/query vectors and the time it took to embed."""
    started = time.perf_counter()
    doc_vectors = embedder.encode_passages([d["text"] for d in corpus])
    seconds = time.perf_counter() - started
    qids = list(queries)
    query_vectors = embedder.encode_queries([queries[q] for q in qids])
    top = exact_top_k(query_vectors, doc_vectors, k)
    ranked = {qid: [corpus[i]["id"] for i in row] for qid, row in zip(qids, top, strict=True)}
    return {
        "ndcg": ndcg_at_k(ranked, qrels, k),
        "docs_per_s": len(corpus) / seconds if seconds else 0.0,
        "doc_vectors": doc_vectors,
        "query_vectors": query_vectors,
    }


@dataclass
class QuantizationCheck:
    """fp32 vs int8 nDCG@10 on one data set; ``accepted`` when int8 loses at most ``tolerance``."""

    model: str
    data: str
    docs: int
    queries: int
    fp32_backend: str
    fp32_ndcg: float
    int8_ndcg: float
    tolerance: float
    mean_cosine_fp32_int8: float
    fp32_docs_per_s: float
    int8_docs_per_s: float

    @property
    def delta(self) -> float:
        return self.int8_ndcg - self.fp32_ndcg

    @property
    def accepted(self) -> bool:
        return self.delta >= -self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "delta": round(self.delta, 4), "accepted": self.accepted}


def check_quantization(
    spec: ModelSpec,
    data: str | Path,
    *,
    split: str = "test",
    tolerance: float = DEFAULT_TOLERANCE,
    limit_docs: int | None = None,
    fp32_backend: str = "torch",
    record: bool = True,
    batch_size: int = 32,
) -> QuantizationCheck:
    """Embed the BEIR data set ``data`` with fp32 (``fp32_backend``: torch or onnx) and ONNX int8; accept int8 when
    its nDCG@10 is within ``tolerance`` of fp32. ``record`` stores the verdict for ``backend="auto"``.

    ``limit_docs`` keeps the first documents plus every judged one (a quicker, easier check)."""
    from . import onnx_backend
    from .embed import Embedder

    corpus, queries, qrels = load_beir(data, split)
    corpus = limit_corpus(corpus, qrels, limit_docs)
    fp32 = evaluate(Embedder(spec, backend=fp32_backend, batch_size=batch_size), corpus, queries, qrels)
    int8 = evaluate(Embedder(spec, backend="onnx", quantize="int8", batch_size=batch_size), corpus, queries, qrels)
    cosine = float(np.mean(np.sum(_unit(fp32["doc_vectors"]) * _unit(int8["doc_vectors"]), axis=1)))
    result = QuantizationCheck(
        model=spec.model_id,
        data=str(data),
        docs=len(corpus),
        queries=len(queries),
        fp32_backend=fp32_backend,
        fp32_ndcg=round(fp32["ndcg"], 4),
        int8_ndcg=round(int8["ndcg"], 4),
        tolerance=tolerance,
        mean_cosine_fp32_int8=round(cosine, 5),
        fp32_docs_per_s=round(fp32["docs_per_s"], 1),
        int8_docs_per_s=round(int8["docs_per_s"], 1),
    )
    if record:
        onnx_backend.record_check(spec, result.to_dict())
    return result


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
