"""The one rule: each E5 prefix is added exactly once, and this module alone decides by whom.

| where  | cluster has prefix support | cluster without it | client-side mode |
|--------|----------------------------|--------------------|------------------|
| ingest | cluster (model config)     | ingest pipeline    | embedder         |
| query  | cluster (model config)     | query helper       | embedder         |

"Prefix support" is Elasticsearch ML >= 8.12 (`prefix_strings`) or OpenSearch neural-search >= 3.5
(`passage_prefix`/`query_prefix` in the ml-commons model config); the engine backends report it.

Tasks: which prefix a text gets depends on what it is compared with (:data:`TASK_SIDES`). E5's model card: a
query against the documents it looks for is asymmetric (``query: `` / ``passage: ``); a symmetric match (two texts
of the same kind: semantic similarity, paraphrases, a user question against a stored question) uses ``query: `` on
both sides. A stored text that must be a query (:func:`stored_as_query`) is embedded by whoever the plan names for
queries (the cluster with the query content type, the helper, or the embedder) and bypasses the ingest pipeline,
which would add ``passage: ``: still exactly one prefix, the right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .models import ModelSpec


class Mode(str, Enum):
    SERVER = "server"  # the cluster embeds (ml-commons / Elasticsearch ML)
    CLIENT = "client"  # e5plugin embeds locally and sends vectors


class Actor(str, Enum):
    CLUSTER = "cluster"  # the engine's model config adds it
    PIPELINE = "pipeline"  # the ingest pipeline writes prefix + text into a temporary field
    HELPER = "helper"  # the query helper prepends it before sending the text
    EMBEDDER = "embedder"  # the local embedder prepends it
    NOBODY = "none"  # the model has no such prefix


class Side(str, Enum):
    """The form a text is embedded in: with the query prefix or with the passage prefix."""

    QUERY = "query"
    PASSAGE = "passage"


#: ``task -> (side of the incoming text, side of the stored text)``.
TASK_SIDES: dict[str, tuple[Side, Side]] = {
    "search": (Side.QUERY, Side.PASSAGE),  # a query against stored documents
    "faq-question": (Side.QUERY, Side.QUERY),  # a user's question against a stored question: symmetric
    "faq-answer": (Side.QUERY, Side.PASSAGE),  # a user's question against a stored answer: asymmetric
    "faq-entry": (Side.QUERY, Side.PASSAGE),  # against one passage holding question and answer: asymmetric
    "pairs": (Side.QUERY, Side.QUERY),  # calibration / similarity pairs: symmetric
    # stored documents against each other: symmetric, compared as the index holds them (one prefix on both sides)
    "dedup": (Side.PASSAGE, Side.PASSAGE),
}


def task_sides(task: str) -> tuple[Side, Side]:
    """``(incoming, stored)`` sides of ``task`` (a key of :data:`TASK_SIDES`)."""
    try:
        return TASK_SIDES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASK_SIDES)}") from None


@dataclass(frozen=True)
class PrefixPlan:
    passage_prefix: str
    query_prefix: str
    ingest: Actor
    query: Actor

    def passage(self, text: str, actor: Actor) -> str:
        """``text`` as ``actor`` must pass it on: prefixed only when ``actor`` is the one who adds it."""
        return self.passage_prefix + text if self.ingest is actor else text

    def query_text(self, text: str, actor: Actor) -> str:
        return self.query_prefix + text if self.query is actor else text

    def text(self, text: str, side: Side, actor: Actor) -> str:
        """``text`` in the form ``side`` as ``actor`` must pass it on (see :meth:`passage` / :meth:`query_text`)."""
        return self.query_text(text, actor) if side is Side.QUERY else self.passage(text, actor)

    def stored_as_query(self, task: str) -> bool:
        """Whether the stored texts of ``task`` must be embedded as queries, not as passages: a symmetric task,
        with a model whose two forms differ (without prefixes, or with equal ones, the ingest path is the same)."""
        return task_sides(task)[1] is Side.QUERY and self.query_prefix != self.passage_prefix

    @property
    def cluster_adds(self) -> bool:
        """Whether the prefixes must be registered with the model in the cluster."""
        return Actor.CLUSTER in (self.ingest, self.query)

    def to_dict(self) -> dict:
        return {
            "passage_prefix": self.passage_prefix,
            "query_prefix": self.query_prefix,
            "ingest": self.ingest.value,
            "query": self.query.value,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PrefixPlan:
        return cls(data["passage_prefix"], data["query_prefix"], Actor(data["ingest"]), Actor(data["query"]))


def plan_prefixes(spec: ModelSpec, mode: Mode, cluster_prefix_support: bool) -> PrefixPlan:
    """Who adds ``passage: `` at ingest and ``query: `` at search time, for this model, engine and mode."""
    if mode is Mode.CLIENT:
        ingest = query = Actor.EMBEDDER
    elif cluster_prefix_support:
        ingest = query = Actor.CLUSTER
    else:
        ingest, query = Actor.PIPELINE, Actor.HELPER
    return PrefixPlan(
        passage_prefix=spec.passage_prefix,
        query_prefix=spec.query_prefix,
        ingest=ingest if spec.passage_prefix else Actor.NOBODY,
        query=query if spec.query_prefix else Actor.NOBODY,
    )
