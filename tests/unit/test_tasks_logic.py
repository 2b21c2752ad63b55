"""Pure logic of the use cases: union-find, threshold selection, pair files, FAQ documents, default thresholds,
and that calibration embeds through the prefix plan (tiny model, no node)."""

from __future__ import annotations

import io
import itertools
import json
import random

import numpy as np
import pytest

from e5plugin.errors import ConfigurationError, ConflictError
from e5plugin.ingest import SourceDoc, stable_id
from e5plugin.models import KNOWN_MODELS, resolve_model
from e5plugin.tasks.calibrate import (
    DEFAULT_THRESHOLDS,
    Calibration,
    LabelledPair,
    check_same_model,
    choose_threshold,
    default_threshold,
    metrics_at,
    pair_similarities,
    read_pairs,
)
from e5plugin.tasks.dedup import UnionFind
from e5plugin.tasks.faq import faq_documents, parts


# ---- union-find -----------------------------------------------------------------------------------------------
def test_union_find_components_and_growth():
    sets = UnionFind(capacity=2)  # grows past its first capacity
    for _ in range(10):
        sets.add()
    assert sets.count == 10 and len(sets.parent) >= 10
    for a, b in [(0, 1), (1, 2), (5, 6), (9, 5), (3, 3)]:
        sets.union(a, b)
    assert not sets.union(2, 0)  # already one set
    assert sets.components() == [[0, 1, 2], [5, 6, 9]]
    assert sets.components(min_size=1) == [[0, 1, 2], [3], [4], [5, 6, 9], [7], [8]]
    assert sets.find(2) == sets.find(0) and sets.find(3) != sets.find(0)


def test_union_find_matches_a_brute_force_closure():
    rng = random.Random(7)
    n = 300
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(220)]
    sets = UnionFind(capacity=n)
    for _ in range(n):
        sets.add()
    for a, b in edges:
        sets.union(a, b)
    # reference: label propagation to a fixpoint
    label = list(range(n))
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            low = min(label[a], label[b])
            if label[a] != low or label[b] != low:
                label[a] = label[b] = low
                changed = True
    expected: dict[int, list[int]] = {}
    for i in range(n):
        expected.setdefault(label[i], []).append(i)
    assert sets.components(min_size=1) == sorted(expected.values(), key=lambda g: g[0])


# ---- threshold selection ----------------------------------------------------------------------------------------
def _brute_force_best_f1(sims, labels):
    best = None
    for t in sorted(set(sims), reverse=True):
        m = metrics_at(sims, labels, t)
        if best is None or m.f1 > best.f1 + 1e-12:
            best = m
    return best


def test_max_f1_threshold_is_a_midpoint_and_optimal():
    sims = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [1, 1, 0, 1, 0, 0, 1, 0]
    metrics, reached = choose_threshold(sims, labels)
    assert reached
    assert metrics.threshold == pytest.approx(0.75)  # between 0.8 (last positive kept) and 0.7
    assert (metrics.true_positive, metrics.predicted_positive, metrics.positives) == (3, 4, 4)
    assert metrics.precision == pytest.approx(0.75) and metrics.recall == pytest.approx(0.75)
    assert metrics.f1 == pytest.approx(_brute_force_best_f1(sims, labels).f1)


@pytest.mark.parametrize("seed", range(5))
def test_max_f1_equals_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.3
    sims = np.round(rng.normal(0.5 + 0.2 * labels, 0.15), 2)  # rounding makes ties
    metrics, _ = choose_threshold(sims, labels)
    assert metrics.f1 == pytest.approx(_brute_force_best_f1(list(sims), list(labels)).f1)
    again = metrics_at(sims, labels, metrics.threshold)
    assert again == metrics


def test_ties_are_never_split():
    sims = [0.9, 0.8, 0.8, 0.8, 0.1]
    labels = [1, 1, 0, 0, 0]
    metrics, _ = choose_threshold(sims, labels)
    # cutting between the three 0.8s is impossible: either all of them or none
    assert metrics.predicted_positive in (1, 4)


def test_target_precision_takes_the_highest_recall_that_keeps_it():
    sims = [0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6]
    labels = [1, 1, 1, 0, 1, 1, 0, 0]
    metrics, reached = choose_threshold(sims, labels, target_precision=0.8)
    assert reached and metrics.precision >= 0.8
    assert (metrics.true_positive, metrics.predicted_positive) == (5, 6)  # 5/6 = 0.83, adding 0.7 drops to 0.71
    strict, reached = choose_threshold(sims, labels, target_precision=1.0)
    assert reached and strict.predicted_positive == 3 and strict.threshold == pytest.approx(0.875)
    candidates = [
        metrics_at(sims, labels, t) for t in itertools.chain(sims, [(a + b) / 2 for a, b in itertools.pairwise(sims)])
    ]
    assert metrics.recall == max(m.recall for m in candidates if m.precision >= 0.8)


def test_unreachable_target_precision_is_reported():
    metrics, reached = choose_threshold([0.9, 0.8, 0.7], [0, 1, 0], target_precision=0.9)
    assert not reached and metrics.precision < 0.9


def test_calibration_needs_both_labels():
    with pytest.raises(ConfigurationError, match="both positive and negative"):
        choose_threshold([0.9, 0.8], [1, 1])


# ---- pair files ---------------------------------------------------------------------------------------------------
STS_ROWS = (
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man is playing a flute.\tA man plays the flute.\n"
    "main-captions\tMSRvid\t2012test\t0002\t0.500\tA cat sleeps.\tA man is cutting onions.\n"
    'main-forums\tanswer-answer\t2016\t0008\t4\tHe said "yes".\tHe answered yes.\tsource a\tsource b\n'
)


def test_sts_benchmark_rows_extra_columns_and_quotes():
    pairs = read_pairs(io.StringIO(STS_ROWS))
    assert [(p.label, p.score) for p in pairs] == [(True, 5.0), (False, 0.5), (True, 4.0)]
    assert pairs[2].text1 == 'He said "yes".' and pairs[2].text2 == "He answered yes."
    assert [p.label for p in read_pairs(io.StringIO(STS_ROWS), positive_min=4.5)] == [True, False, False]


def test_tsv_labels_scores_and_header():
    labels = read_pairs(io.StringIO("a\tb\t1\nc\td\t0\n"))
    assert [p.label for p in labels] == [True, False] and labels[0].score is None
    scores = read_pairs(io.StringIO("text1\ttext2\tscore\na\tb\t4.2\nc\td\t1\n"))
    assert [(p.label, p.score) for p in scores] == [(True, 4.2), (False, 1.0)]
    headed = read_pairs(io.StringIO("text1\ttext2\tlabel\na\tb\t1\nc\td\t0\n"))
    assert [p.label for p in headed] == [True, False]
    with pytest.raises(ConfigurationError, match="line 2"):
        read_pairs(io.StringIO("a\tb\t1\nonly two\tcolumns\n"))


def test_jsonl_labels_and_scores():
    rows = [
        {"text1": "a", "text2": "b", "label": 1},
        {"sentence1": "c", "sentence2": "d", "label": False},
        {"text1": "e", "text2": "f", "score": 4.5},
    ]
    pairs = read_pairs(io.StringIO("\n".join(json.dumps(r) for r in rows)))
    assert pairs == [
        LabelledPair("a", "b", True),
        LabelledPair("c", "d", False),
        LabelledPair("e", "f", True, 4.5),
    ]
    with pytest.raises(ConfigurationError, match="line 1"):
        read_pairs(io.StringIO('{"text1": "a", "text2": "b"}\n'))
    with pytest.raises(ConfigurationError, match="both positive and negative"):
        read_pairs(io.StringIO('{"text1": "a", "text2": "b", "label": 1}\n'))


# ---- FAQ documents ------------------------------------------------------------------------------------------------
def test_parts_per_embed_choice():
    assert parts("question") == ("question",) and parts("answer") == ("answer",)
    assert parts("both") == ("question", "answer")
    with pytest.raises(ConfigurationError):
        parts("title")


def test_faq_documents_one_per_embedded_field_and_bad_entries_reported():
    records = [
        {"id": "1", "question": "Q?", "answer": "A.", "lang": "en"},
        {"id": "2", "question": "", "answer": "A."},
        {"id": "3", "question": "Q?"},
        SourceDoc(4, None, "invalid JSON"),
        {"question": "Q2?", "answer": "A2."},  # no id: derived from the content, as ingest does
    ]
    single = list(faq_documents(records, embed="answer", text_field="text", source_name="f.jsonl"))
    assert single[0].doc_id == "1" and single[0].doc == {
        "id": "1",
        "question": "Q?",
        "answer": "A.",
        "lang": "en",
        "faq_id": "1",
        "faq_part": "answer",
        "text": "A.",
    }
    assert single[1].doc is None and "question" in single[1].error
    assert single[2].doc is None and "answer" in single[2].error
    assert single[3].error == "invalid JSON"
    assert single[4].doc_id == stable_id(records[4], "id") == single[4].doc["faq_id"]
    both = [d for d in faq_documents(records, embed="both", text_field="text") if d.doc]
    assert [(d.doc_id, d.doc["faq_part"], d.doc["text"]) for d in both[:2]] == [
        ("1::question", "question", "Q?"),
        ("1::answer", "answer", "A."),
    ]
    assert {d.doc["faq_id"] for d in both[:2]} == {"1"}


# ---- thresholds from the index's _meta ----------------------------------------------------------------------------
def test_default_threshold_explicit_then_calibration_then_family_default():
    e5 = {"model": KNOWN_MODELS["intfloat/e5-small-v2"].to_dict()}
    minilm = {"model": KNOWN_MODELS["sentence-transformers/all-MiniLM-L6-v2"].to_dict()}
    assert default_threshold(e5, "faq", 0.42) == (0.42, "explicit")
    assert default_threshold(e5, "faq") == (DEFAULT_THRESHOLDS["faq"]["e5"], "default (e5)")
    assert default_threshold(minilm, "dedup") == (DEFAULT_THRESHOLDS["dedup"]["other"], "default (other)")
    calibration = Calibration(0.77, 0.8, 0.7, 0.75, "max_f1", 10, 4, "query", "m")
    stored = {**minilm, "calibration": calibration.to_dict()}
    assert default_threshold(stored, "faq") == (0.77, "calibration")
    assert default_threshold(stored, "dedup") == (0.77, "calibration")
    assert Calibration.from_dict({**calibration.to_dict(), "unknown": 1}) == calibration


def test_a_threshold_of_another_model_is_refused():
    spec = KNOWN_MODELS["intfloat/e5-small-v2"]
    check_same_model({"model": spec.to_dict()}, spec, "idx")
    with pytest.raises(ConflictError, match="only valid for its own model"):
        check_same_model({"model": KNOWN_MODELS["intfloat/e5-base-v2"].to_dict()}, spec, "idx")


# ---- calibration embeds through the prefix plan -------------------------------------------------------------------
def test_symmetric_pairs_are_embedded_as_queries_through_the_plan(tiny_e5_bert):
    from e5plugin.embed import Embedder

    spec = resolve_model(str(tiny_e5_bert))
    assert spec.query_prefix == "query: "
    embedder = Embedder(spec)  # client plan: the embedder adds the prefixes
    pairs = [LabelledPair("the quick brown fox", "a lazy dog", True), LabelledPair("hello world", "index", False)]

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    raw = embedder.encode  # no prefix added by encode itself
    expected = {
        "query": [cos(*raw(["query: " + p.text1, "query: " + p.text2])) for p in pairs],
        "passage": [cos(*raw(["passage: " + p.text1, "passage: " + p.text2])) for p in pairs],
        "query-passage": [cos(*raw(["query: " + p.text1, "passage: " + p.text2])) for p in pairs],
    }
    for side, values in expected.items():
        assert pair_similarities(embedder, pairs, side=side) == pytest.approx(values, abs=1e-5)
    unprefixed = [cos(*raw([p.text1, p.text2])) for p in pairs]
    assert pair_similarities(embedder, pairs) != pytest.approx(unprefixed, abs=1e-5)
    with pytest.raises(ConfigurationError):
        pair_similarities(embedder, pairs, side="document")
