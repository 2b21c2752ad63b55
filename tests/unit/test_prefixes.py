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
