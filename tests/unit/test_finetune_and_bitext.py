"""Pure parts of fine-tuning (pairs, splits, batches, nDCG) and of the bitext evaluation (MTEB's F1)."""

from __future__ import annotations

import json
import random

import pytest

from e5plugin.errors import ConfigurationError
from e5plugin.tasks.finetune import (
    Pair,
    batches_without_duplicates,
    eval_set,
    load_pairs,
    ndcg_at_k,
    split_pairs,
)
from e5plugin.tasks.multilingual import bitext_scores, exclude_languages_filter, language_filter

PAIRS = [Pair(f"q{i % 7}", f"p{i}") for i in range(30)]  # 7 queries, several passages each


def test_split_is_by_query_and_deterministic():
    train, held = split_pairs(PAIRS, holdout=0.3, seed=1)
    assert {p.query for p in train}.isdisjoint({p.query for p in held})
    assert len({p.query for p in held}) == 2 and len(train) + len(held) == len(PAIRS)
    assert split_pairs(PAIRS, holdout=0.3, seed=1) == (train, held)


def test_eval_set_searches_held_out_queries_among_all_passages():
    _train, held = split_pairs(PAIRS, holdout=0.3, seed=1)
    queries, corpus, qrels = eval_set(PAIRS, held)
    assert len(corpus) == 30 and set(queries) == set(qrels)
    assert sum(len(r) for r in qrels.values()) == len(held)


def test_batches_never_repeat_a_query_or_passage():
    pairs = [*PAIRS, Pair("q1", "p3")]  # a passage shared by two queries
    batches = batches_without_duplicates(pairs, 4, random.Random(0))
    for batch in batches:
        assert len({p.query for p in batch}) == len(batch) and len({p.passage for p in batch}) == len(batch)
        assert 2 <= len(batch) <= 4
    assert sum(len(b) for b in batches) >= len(pairs) - 1  # at most a lone pair left out


def test_ndcg():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1, "d3": 1}}
    assert ndcg_at_k({"a": ["d1"], "b": ["d2", "d3"]}, qrels) == pytest.approx(1.0)
    assert ndcg_at_k({"a": ["x", "d1"]}, {"a": {"d1": 1}}) == pytest.approx(1 / 1.5849625, rel=1e-6)


def test_load_pairs_jsonl_and_tsv(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"query": "q", "passage": "p"}) + "\n" + json.dumps({"query": "r", "positive": "s"}))
    assert load_pairs(jsonl) == [Pair("q", "p"), Pair("r", "s")]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("query\tpassage\nq\tp\n")
    assert load_pairs(tsv) == [Pair("q", "p")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q"}))
    with pytest.raises(ConfigurationError, match="record 1"):
        load_pairs(bad)


def test_bitext_f1_is_mteb_weighted_f1():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(20):
        gold = list(range(40))
        predicted = [g if rng.random() < 0.6 else rng.randrange(40) for g in gold]
        accuracy, f1 = bitext_scores(gold, predicted)
        assert accuracy == pytest.approx(sklearn.accuracy_score(gold, predicted))
        assert f1 == pytest.approx(sklearn.f1_score(gold, predicted, average="weighted", zero_division=0))


def test_language_filters():
    assert language_filter("en") == {"term": {"lang": "en"}}
    assert language_filter(["de", "fr"], field="language") == {"terms": {"language": ["de", "fr"]}}
    assert exclude_languages_filter("en") == {"bool": {"must_not": [{"term": {"lang": "en"}}]}}
