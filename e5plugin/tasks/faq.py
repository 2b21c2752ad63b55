"""FAQ answer retrieval: index question/answer pairs, answer a user's question with the best stored answer, a
confidence (cosine similarity) and "no good answer" below a threshold.

Input: JSON Lines with ``question``, ``answer`` and an optional ``id`` (other fields are kept, e.g. ``lang`` for
filters). ``question`` and ``answer`` are stored as given; the index's text field (``text`` by default) holds
what is embedded, chosen by ``embed``:

``question``
    one document per entry, the question embedded: matches users who word their question like the stored one.
``answer``
    one document per entry, the answer embedded: finds answers to questions nobody wrote down.
``both``
    two documents per entry, one with the question embedded and one with the answer (ids ``<id>::question`` and
    ``<id>::answer``, both carrying ``faq_id``); an entry scores the better of its two vectors, and hits are
    collapsed to entries (``k`` answers are ``k`` different entries).
``entry``
    one document per entry, ``question + " " + answer`` embedded as one passage.

Default (``embed=None``, :func:`default_embed`): ``entry`` for models that read 512 tokens, ``both`` for shorter
ones. Measured on the SciFact FAQ set (``benchmarks/faq_prefixes.py``, real intfloat/e5-small-v2, exact search,
accuracy@1 over 409 questions): entry 0.922, both 0.878 (question stored as ``query: ``; 0.870 as ``passage: ``),
question 0.848 (0.787 as ``passage: ``), answer 0.751; the multilingual-e5-small approximation (512 tokens) also
ranks one passage first (0.892 vs 0.878); all-MiniLM-L6-v2 (256 tokens: the answer is cut off) ranks it below
both (0.861 vs 0.900).

Why ``both`` is two vectors and not one passage ``question + " " + answer`` for short models: measured through
Elasticsearch on the SciFact FAQ set with all-MiniLM-L6-v2 (``benchmarks/use_cases.py``, accuracy@1 over 409
questions), the concatenation scored 0.861, below the question alone (0.870; the answer alone 0.694): a long answer
dilutes the question's wording in one mean-pooled vector, and what does not fit in the model's ``max_length`` is
cut off. Two vectors scored 0.900, above both single fields, because a user question is matched by the stored
question when worded alike and by the answer when not. With the multilingual-e5-small approximation (512 tokens)
the ranking differs: concatenation 0.892, two vectors 0.878, question 0.817, answer 0.704: the choice is
model-dependent, which is why ``--embed`` is offered and measured rather than fixed. Two documents per entry keep
everything else unchanged: the index's one vector field, the same ingest pipeline in server mode, each prefix
added once per document by whoever the prefix plan names, and re-ingesting an entry overwrites both (stable ids).
The price: twice the vectors, and ``2 * k`` hits fetched to collapse them into ``k`` entries.

Prefixes per part (the prefix plan's tasks ``faq-question`` and ``faq-answer``): a user's question against a stored
question is a symmetric match, so E5 embeds the stored question as ``query: `` like the user's; the answer is what
the question looks for, so it is a ``passage: ``. Models without prefixes embed both alike. In client mode the
embedder adds the right prefix; in server mode the stored questions are embedded by the cluster's model as queries
(the model config adds ``query: ``, or the helper does where the cluster cannot) and sent past the index's ingest
pipeline, which would add ``passage: ``; answers go through the pipeline as usual. A backend that cannot embed a
query on its own request (``Backend.embed_query``: Elasticsearch ML today) keeps questions as passages. The choice
is recorded in ``_meta.e5plugin.faq.embedded_as``.

Asking goes through :class:`~e5plugin.search.SemanticSearch` (the query prefix handled by the prefix plan: by the
cluster in server mode, by the embedder in client mode). The confidence is the cosine similarity recovered from
the engine's score; below the threshold the result says there is no good answer (and still lists the best
candidates). Threshold: the caller's, else the calibration stored in the index (``e5plugin calibrate --index``),
else :data:`~e5plugin.tasks.calibrate.DEFAULT_THRESHOLDS` (``faq``: 0.85 for E5 models, 0.60 for others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..embed import Embedder
from ..engines.base import Backend
from ..errors import ConfigurationError, ConflictError, MissingCapabilityError
from ..ingest import IngestReport, SourceDoc, ingest, stable_id
from ..models import ModelSpec
from ..prefixes import Actor, Mode, PrefixPlan
from ..search import IndexSetup, SemanticSearch
from .calibrate import default_threshold

EMBED_CHOICES = ("question", "answer", "both", "entry")
META_KEY = "faq"
QUESTION_FIELD = "question"
ANSWER_FIELD = "answer"
ENTRY_PART = "entry"  # embed=entry: one passage ``question + " " + answer``
ENTRY_FIELD = "faq_id"  # the entry a document belongs to (two documents per entry with embed=both)
PART_FIELD = "faq_part"  # which text of the entry the document's vector holds: question or answer


def parts(embed: str) -> tuple[str, ...]:
    """The fields embedded for one entry, one document each (``entry``: question and answer as one text)."""
    if embed not in EMBED_CHOICES:
        raise ConfigurationError(f"embed must be one of {', '.join(EMBED_CHOICES)}, not {embed!r}.")
    return (QUESTION_FIELD, ANSWER_FIELD) if embed == "both" else (embed,)


def default_embed(spec: ModelSpec) -> str:
    """``entry`` for models that read 512 tokens, ``both`` for shorter ones (measured, see the module docstring):
    one passage holding question and answer wins where the answer fits, two vectors where it would be cut off."""
    return "entry" if spec.max_length >= 512 else "both"


def faq_documents(
    records: Iterable[SourceDoc | dict], *, embed: str, text_field: str, source_name: str = "faq"
) -> Iterator[SourceDoc]:
    """Input records as index documents: one per embedded field, the text field holding that field's text. A
    record without a question or answer string becomes an error that the ingest report lists. An entry's id is
    its ``id`` field, else derived from its content (:func:`e5plugin.ingest.stable_id`); ``source_name`` is not
    part of it."""
    fields = parts(embed)
    for position, record in enumerate(records, start=1):
        src = record if isinstance(record, SourceDoc) else SourceDoc(position, record)
        if src.doc is None:
            yield src
            continue
        question, answer = src.doc.get(QUESTION_FIELD), src.doc.get(ANSWER_FIELD)
        problems = [
            name
            for name, value in ((QUESTION_FIELD, question), (ANSWER_FIELD, answer))
            if not isinstance(value, str) or not value.strip()
        ]
        if problems:
            yield SourceDoc(src.line, None, f"FAQ entry needs a non-empty {' and '.join(problems)} string")
            continue
        entry = src.doc_id or stable_id(src.doc, "id")  # as `ingest` identifies records: id, else content
        for part in fields:
            text = f"{question} {answer}" if part == ENTRY_PART else src.doc[part]
            doc = {**src.doc, ENTRY_FIELD: entry, PART_FIELD: part, text_field: text}
            yield SourceDoc(src.line, doc, doc_id=entry if len(fields) == 1 else f"{entry}::{part}")


#: the prefix-plan task of each embedded part (e5plugin.prefixes.TASK_SIDES): a user's question is matched against
#: a stored question symmetrically (both as queries) and against an answer asymmetrically (query -> passage)
PART_TASKS = {QUESTION_FIELD: "faq-question", ANSWER_FIELD: "faq-answer", ENTRY_PART: "faq-entry"}
#: bulk ``pipeline`` value that skips the index's default pipeline (which would embed the text as a passage)
NO_PIPELINE = "_none"


class StoredQueryEncoder:
    """Embeds stored texts in the *query* form for ``ingest`` (its ``encode_passages``), by whoever the prefix plan
    names for queries: the local embedder (client mode), or the cluster's model (server mode: ``query: `` added by
    the model config with the query content type, or by this helper where the cluster cannot)."""

    def __init__(
        self,
        plan: PrefixPlan,
        *,
        embedder: Embedder | None = None,
        backend: Backend | None = None,
        model_id: str | None = None,
    ) -> None:
        if embedder is None and (backend is None or not model_id):
            raise ConfigurationError("StoredQueryEncoder needs an embedder (client mode) or a deployed model.")
        self.plan, self.embedder, self.backend, self.model_id = plan, embedder, backend, model_id
        self.label = embedder.label if embedder is not None else "torch"  # server mode: nothing to record
        self.model = embedder.model if embedder is not None else None

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        if self.embedder is not None:
            return self.embedder.encode_queries(texts, batch_size)
        assert self.backend is not None and self.model_id is not None
        cluster = self.plan.query is Actor.CLUSTER
        vectors = [
            self.backend.embed_query(self.model_id, self.plan.query_text(t, Actor.HELPER), cluster_prefix=cluster)
            for t in texts
        ]
        return np.asarray(vectors, dtype=np.float32)


def _merge(a: IngestReport, b: IngestReport) -> IngestReport:
    a.indexed += b.indexed
    a.without_vector += b.without_vector
    a.skipped += b.skipped
    a.failed += b.failed
    a.failures.extend(b.failures)
    return a


def index_faq(
    backend: Backend,
    index: str,
    records: Iterable[SourceDoc | dict],
    *,
    embed: str | None = None,
    embedder: Embedder | None = None,
    source_name: str = "faq",
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Index FAQ entries into ``index`` (made by ``deploy``) and record the ``embed`` choice in its ``_meta``.
    The report counts documents: ``len(parts(embed))`` per entry.

    An index holds one ``embed`` choice: adding entries with another one to a non-empty FAQ index is refused.
    ``embed=None``: the choice already recorded in the index, else :func:`default_embed` for its model."""
    setup = _setup(backend, index)
    embed = embed or (backend.index_meta(index).get(META_KEY) or {}).get("embed") or default_embed(setup.spec)
    parts(embed)
    if setup.text_field in (QUESTION_FIELD, ANSWER_FIELD) and setup.text_field != embed:
        raise ConfigurationError(
            f"Index {index!r} embeds its field {setup.text_field!r}; FAQ entries keep question and answer as "
            f"given, so deploy the FAQ index with another --text-field (the default 'text') or use --embed "
            f"{setup.text_field}."
        )
    recorded = backend.index_meta(index).get(META_KEY) or {}
    if recorded.get("embed") not in (None, embed) and backend.count(index) > 0:
        raise ConflictError(
            f"Index {index!r} holds FAQ entries embedded as {recorded['embed']!r}; a second choice in the same "
            f"index would mix vectors of different kinds. Use a new index for --embed {embed}."
        )
    # the stored question is matched symmetrically (both as queries) where the model's two forms differ
    question_as_query = QUESTION_FIELD in parts(embed) and setup.plan.stored_as_query(PART_TASKS[QUESTION_FIELD])
    encoder = None
    if question_as_query and setup.mode is Mode.SERVER:
        encoder = StoredQueryEncoder(setup.plan, backend=backend, model_id=setup.model_id)
        try:
            encoder.encode_passages(["probe"])
        except MissingCapabilityError:  # an engine that cannot embed a query on its own: questions as passages
            question_as_query = False
    sides = {part: "query" if part == QUESTION_FIELD and question_as_query else "passage" for part in parts(embed)}
    backend.update_index_meta(
        index,
        {
            META_KEY: {
                "embed": embed,
                "question_field": QUESTION_FIELD,
                "answer_field": ANSWER_FIELD,
                "embedded_as": sides,
            }
        },
    )
    if setup.mode is Mode.CLIENT and embedder is None:
        embedder = Embedder(setup.spec, plan=setup.plan)
    documents = faq_documents(records, embed=embed, text_field=setup.text_field, source_name=source_name)
    common = {
        "text_field": setup.text_field,
        "vector_field": setup.vector_field,
        "source_name": source_name,
        "batch_size": batch_size,
        "progress": progress,
        "refresh": True,
    }
    if not question_as_query:
        return ingest(backend, index, documents, embedder=embedder if setup.mode is Mode.CLIENT else None, **common)
    questions, others = [], []
    for src in documents:
        (questions if src.doc is not None and src.doc.get(PART_FIELD) == QUESTION_FIELD else others).append(src)
    report = ingest(backend, index, others, embedder=embedder if setup.mode is Mode.CLIENT else None, **common)
    if setup.mode is Mode.CLIENT:
        encoder = StoredQueryEncoder(setup.plan, embedder=embedder)
        return _merge(report, ingest(backend, index, questions, embedder=encoder, chunker=None, **common))  # type: ignore[arg-type]
    question_report = ingest(
        backend,
        index,
        questions,
        embedder=encoder,
        chunker=None,
        pipeline=NO_PIPELINE,
        **common,  # type: ignore[arg-type]
    )
    return _merge(report, question_report)


def _setup(backend: Backend, index: str) -> IndexSetup:
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    return IndexSetup.from_meta(meta)


@dataclass
class FaqAnswer:
    """The answer to one question: ``answered`` is False when the best match is below the threshold."""

    query: str
    answered: bool
    confidence: float | None  # cosine similarity of the best match (None: the index is empty)
    threshold: float
    threshold_source: str  # explicit / calibration / default (e5|other)
    id: str | None = None  # the entry's id
    question: str | None = None
    answer: str | None = None
    matched: str | None = None  # which embedded text matched best: question or answer
    candidates: list[dict] = field(default_factory=list)  # the top k entries: id, question, answer, confidence

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class FaqSearch:
    """Ask questions against one FAQ index (reads the index's setup and threshold once)."""

    def __init__(self, helper: SemanticSearch, meta: dict) -> None:
        self.helper = helper
        self.meta = meta
        faq = meta.get(META_KEY) or {}
        self.question_field = faq.get("question_field", QUESTION_FIELD)
        self.answer_field = faq.get("answer_field", ANSWER_FIELD)
        self.embed = faq.get("embed", "question")

    @classmethod
    def for_index(cls, index: str, *, backend: Backend, embedder: Embedder | None = None) -> FaqSearch:
        helper = SemanticSearch.for_index(index, backend=backend, embedder=embedder)
        meta = backend.index_meta(index)
        if META_KEY not in meta:
            raise ConfigurationError(f"Index {index!r} holds no FAQ entries: run `e5plugin faq index` first.")
        return cls(helper, meta)

    def threshold(self, explicit: float | None = None) -> tuple[float, str]:
        return default_threshold(self.meta, "faq", explicit)

    def candidates(self, text: str, k: int = 3, *, filters: list[dict] | dict | None = None) -> list[dict]:
        """The top ``k`` entries for ``text``, each scored by its best document (kNN through the cluster)."""
        per_entry = len(parts(self.embed))
        fields = [self.question_field, self.answer_field, ENTRY_FIELD, PART_FIELD]
        hits = self.helper.search(text, k=k * per_entry, filters=filters, source=fields)
        entries: dict[str, dict] = {}
        for hit in hits:  # best first: the first hit of an entry is its score
            entry = str(hit.source.get(ENTRY_FIELD) or hit.id)
            if entry not in entries:
                entries[entry] = {
                    "id": entry,
                    "question": hit.source.get(self.question_field),
                    "answer": hit.source.get(self.answer_field),
                    "matched": hit.source.get(PART_FIELD),
                    "confidence": round(hit.similarity, 6),
                }
        return list(entries.values())[:k]

    def ask(
        self,
        text: str,
        *,
        threshold: float | None = None,
        k: int = 3,
        filters: list[dict] | dict | None = None,
    ) -> FaqAnswer:
        """The best answer for ``text`` with its confidence, or ``answered=False`` below the threshold."""
        limit, source = self.threshold(threshold)
        candidates = self.candidates(text, k=max(k, 1), filters=filters)
        if not candidates:
            return FaqAnswer(text, False, None, limit, source)
        best = candidates[0]
        result = FaqAnswer(text, best["confidence"] >= limit, best["confidence"], limit, source)
        result.candidates = candidates
        if result.answered:
            result.id, result.question, result.answer, result.matched = (
                best["id"],
                best["question"],
                best["answer"],
                best["matched"],
            )
        return result


def ask(
    backend: Backend,
    index: str,
    text: str,
    *,
    threshold: float | None = None,
    k: int = 3,
    embedder: Embedder | None = None,
) -> FaqAnswer:
    """One question (see :class:`FaqSearch` to ask many)."""
    return FaqSearch.for_index(index, backend=backend, embedder=embedder).ask(text, threshold=threshold, k=k)
