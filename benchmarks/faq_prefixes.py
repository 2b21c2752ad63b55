"""FAQ on the real E5: which prefix the stored question gets, which texts to embed, how two vectors combine.

    PYTHONPATH=. .venv/bin/python benchmarks/faq_prefixes.py --model ~/.cache/e5plugin/models/e5-small-v2-tool

The SciFact FAQ of ``use_cases.py`` (667 entries, 409 answerable user questions, 175 unanswerable), embedded
client-side (``perf.cached_encode``: each text once per prefix), scored exactly with numpy (what a ``flat`` index
returns). User questions are always ``query: ``; the stored question as ``query: `` (symmetric: E5's guidance) or
``passage: `` (what ``--embed question|both`` did before); the answer as ``passage: ``.

Combinations of an entry's two vectors (``--embed both``):
  max        the entry's better cosine (one kNN over both documents; what ``FaqSearch`` does)
  sum        question cosine + answer cosine
  rrf        reciprocal-rank fusion of the question ranking and the answer ranking (k = 60)
  max-centred  max after subtracting each part's mean cosine over all (user question, entry) pairs: puts the two
             score scales on one level (a per-index constant; measured here, not a product option)

Reported per variant: accuracy@1 and, with a threshold chosen on the even half of the questions (max F1 of "the
top answer is right", unanswerable questions included) and applied to the odd half, answered right / wrong /
"no good answer" and unanswerable questions answered.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import write_result
from perf import cached_encode, load1
from use_cases import scifact_faq

from e5plugin.embed import Embedder
from e5plugin.models import resolve_model
from e5plugin.tasks.calibrate import choose_threshold

DEFAULT_MODEL = Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-tool"


def _rrf(scores: np.ndarray, k: int = 60) -> np.ndarray:
    ranks = np.argsort(np.argsort(-scores, axis=1), axis=1)
    return 1.0 / (k + ranks + 1)


def _evaluate(scores: np.ndarray, conf: np.ndarray, truth: list[set[int]], answerable: int) -> dict:
    top = np.argmax(scores, axis=1)
    correct = np.array([top[i] in truth[i] for i in range(answerable)])
    right_all = np.concatenate([correct, np.zeros(len(top) - answerable, dtype=bool)])
    half = np.arange(len(top)) % 2 == 0
    threshold, _ = choose_threshold(conf[half], right_all[half])
    odd = ~half
    answered = conf >= threshold.threshold
    ans_odd = odd[:answerable]
    un_odd = odd[answerable:]
    return {
        "accuracy@1": round(float(correct.mean()), 4),
        "threshold_from_half": round(threshold.threshold, 4),
        "answered_right": round(float(np.mean((answered[:answerable] & correct)[ans_odd])), 4),
        "answered_wrong": round(float(np.mean((answered[:answerable] & ~correct)[ans_odd])), 4),
        "no_answer": round(float(np.mean(~answered[:answerable][ans_odd])), 4),
        "unanswerable_answered": round(float(np.mean(answered[answerable:][un_odd])), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--backend", default="onnx", help="torch or onnx (fp32: the same vectors, faster)")
    args = parser.parse_args()
    spec = resolve_model(os.path.expanduser(args.model))
    embedder = Embedder(spec, backend=args.backend)
    q, p = "query: ", "passage: "
    entries, answerable, unanswerable, stats = scifact_faq()
    position = {e["id"]: i for i, e in enumerate(entries)}
    asked = [text for text, _ in answerable] + unanswerable
    truth = [{position[d] for d in docs} for _, docs in answerable]
    started = time.perf_counter()
    users = cached_encode(embedder, [q + t for t in asked])
    stored_q_query = cached_encode(embedder, [q + e["question"] for e in entries])
    stored_q_passage = cached_encode(embedder, [p + e["question"] for e in entries])
    answers = cached_encode(embedder, [p + e["answer"] for e in entries])
    concatenated = cached_encode(embedder, [p + e["question"] + " " + e["answer"] for e in entries])
    print(f"embedded in {time.perf_counter() - started:.0f}s (load {load1()})", flush=True)
    s_ans = users @ answers.T
    variants: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for side, stored in (("query", stored_q_query), ("passage", stored_q_passage)):
        s_q = users @ stored.T
        variants[f"question (stored as {side})"] = (s_q, s_q.max(axis=1))
        both = np.maximum(s_q, s_ans)
        variants[f"both max (question as {side})"] = (both, both.max(axis=1))
        total = s_q + s_ans
        variants[f"both sum (question as {side})"] = (total, total.max(axis=1) / 2)
        fused = _rrf(s_q) + _rrf(s_ans)
        variants[f"both rrf (question as {side})"] = (
            fused,
            np.take_along_axis(both, fused.argmax(1)[:, None], 1)[:, 0],
        )
        centred = np.maximum(s_q - s_q.mean(), s_ans - s_ans.mean())
        variants[f"both max-centred (question as {side})"] = (centred, centred.max(axis=1))
    variants["answer"] = (s_ans, s_ans.max(axis=1))
    s_cat = users @ concatenated.T
    variants["question + answer as one passage"] = (s_cat, s_cat.max(axis=1))
    results: dict = {"model": spec.model_id, "backend": embedder.label, "set": stats, "variants": {}}
    print(f"\n{'variant':44} acc@1   t      right  wrong  none   unanswerable answered")
    for name, (scores, conf) in variants.items():
        row = _evaluate(scores, conf, truth, len(answerable))
        results["variants"][name] = row
        print(
            f"{name:44} {row['accuracy@1']:.4f} {row['threshold_from_half']:.4f} {row['answered_right']:.3f}  "
            f"{row['answered_wrong']:.3f}  {row['no_answer']:.3f}  {row['unanswerable_answered']:.3f}"
        )
    print(f"written {write_result('faq-prefixes-e5-small-v2', results)}")


if __name__ == "__main__":
    main()
