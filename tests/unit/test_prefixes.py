"""The exactly-once prefix rule, pinned over every column of the decision table."""

from __future__ import annotations

import pytest

from e5plugin.models import KNOWN_MODELS, resolve_model
from e5plugin.prefixes import Actor, Mode, plan_prefixes

E5 = KNOWN_MODELS["intfloat/e5-small-v2"]
ALBERT = KNOWN_MODELS["sentence-transformers/paraphrase-albert-small-v2"]
INSTRUCT = KNOWN_MODELS["intfloat/multilingual-e5-large-instruct"]

ACTORS = [Actor.CLUSTER, Actor.PIPELINE, Actor.HELPER, Actor.EMBEDDER]


@pytest.mark.parametrize(
    ("mode", "cluster_support", "ingest", "query"),
    [
        (Mode.SERVER, True, Actor.CLUSTER, Actor.CLUSTER),  # ES ML >= 8.12, OpenSearch neural-search >= 3.5
        (Mode.SERVER, False, Actor.PIPELINE, Actor.HELPER),  # older engines
        (Mode.CLIENT, True, Actor.EMBEDDER, Actor.EMBEDDER),
        (Mode.CLIENT, False, Actor.EMBEDDER, Actor.EMBEDDER),
    ],
)
def test_decision_table(mode, cluster_support, ingest, query):
    plan = plan_prefixes(E5, mode, cluster_support)
    assert (plan.ingest, plan.query) == (ingest, query)
    # Exactly one actor adds each prefix: every other actor passes the text through untouched.
    passages = [plan.passage("x", actor) for actor in ACTORS]
    queries = [plan.query_text("x", actor) for actor in ACTORS]
    assert passages.count("passage: x") == 1 and passages.count("x") == len(ACTORS) - 1
    assert queries.count("query: x") == 1 and queries.count("x") == len(ACTORS) - 1
    assert plan.cluster_adds == (ingest is Actor.CLUSTER)


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("cluster_support", [True, False])
def test_models_without_prefixes_are_never_prefixed(mode, cluster_support):
    plan = plan_prefixes(ALBERT, mode, cluster_support)
    assert plan.ingest is Actor.NOBODY and plan.query is Actor.NOBODY
    assert all(plan.passage("x", a) == "x" and plan.query_text("x", a) == "x" for a in ACTORS)


def test_instruct_model_prefixes_queries_only():
    plan = plan_prefixes(INSTRUCT, Mode.CLIENT, False)
    assert plan.ingest is Actor.NOBODY
    assert plan.query_text("q", Actor.EMBEDDER).startswith("Instruct: ") and plan.query_text(
        "q", Actor.EMBEDDER
    ).endswith("\nQuery: q")


def test_prefix_override():
    spec = resolve_model("intfloat/e5-small-v2", query_prefix="Q: ", passage_prefix="")
    plan = plan_prefixes(spec, Mode.CLIENT, False)
    assert plan.query_text("x", Actor.EMBEDDER) == "Q: x"
    assert plan.ingest is Actor.NOBODY


def test_plan_round_trips_through_index_meta():
    from e5plugin.prefixes import PrefixPlan

    plan = plan_prefixes(E5, Mode.SERVER, False)
    assert PrefixPlan.from_dict(plan.to_dict()) == plan


def test_task_sides_follow_e5_guidance():
    """Symmetric tasks put the query form on both sides; query -> document tasks are asymmetric."""
    from e5plugin.prefixes import Side, task_sides

    assert task_sides("search") == (Side.QUERY, Side.PASSAGE)
    assert task_sides("faq-answer") == (Side.QUERY, Side.PASSAGE)
    assert task_sides("faq-question") == (Side.QUERY, Side.QUERY)
    assert task_sides("pairs") == (Side.QUERY, Side.QUERY)
    incoming, stored = task_sides("dedup")
    assert incoming is stored  # stored documents against each other: one form on both sides
    with pytest.raises(ValueError, match="unknown task"):
        task_sides("translate")


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("cluster_support", [True, False])
def test_stored_question_is_a_query_once_whoever_adds_it(mode, cluster_support):
    from e5plugin.prefixes import Side

    plan = plan_prefixes(E5, mode, cluster_support)
    assert plan.stored_as_query("faq-question")
    assert not plan.stored_as_query("faq-answer") and not plan.stored_as_query("search")
    assert not plan.stored_as_query("dedup")
    texts = [plan.text("x", Side.QUERY, actor) for actor in ACTORS]
    assert texts.count("query: x") == 1 and texts.count("x") == len(ACTORS) - 1
    passages = [plan.text("x", Side.PASSAGE, actor) for actor in ACTORS]
    assert passages.count("passage: x") == 1 and passages.count("x") == len(ACTORS) - 1


def test_models_without_prefixes_store_questions_like_passages():
    for spec in (ALBERT, resolve_model("intfloat/e5-small-v2", query_prefix="same: ", passage_prefix="same: ")):
        assert not plan_prefixes(spec, Mode.SERVER, True).stored_as_query("faq-question")
    # the instruct model's query form differs from its (empty) passage form: questions are stored as queries
    assert plan_prefixes(INSTRUCT, Mode.CLIENT, False).stored_as_query("faq-question")


def test_faq_default_embed_follows_the_model_length():
    """One passage per entry for 512-token models (E5), two vectors for shorter ones (measured defaults)."""
    from e5plugin.tasks.faq import default_embed, parts

    assert default_embed(E5) == "entry" and parts("entry") == ("entry",)
    assert default_embed(KNOWN_MODELS["sentence-transformers/all-MiniLM-L6-v2"]) == "both"
    from e5plugin.prefixes import Side, task_sides

    assert task_sides("faq-entry") == (Side.QUERY, Side.PASSAGE)
