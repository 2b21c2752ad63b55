"""Long documents: split a text into overlapping passages that each fit the model, measured in the model's tokens.

E5 reads at most 512 tokens (``ModelSpec.max_length``, counting ``passage: `` and the special tokens); the rest of a
longer text would be cut off silently, on the cluster as in sentence-transformers. An index deployed with
chunking therefore stores every document as its passages, each embedded on its own, and a query is matched
against every passage.

Layout: nested vectors in the parent document, not one index document per chunk
-----------------------------------------------------------------------------------
Each document keeps its fields (``text`` for BM25, ``lang``, ...) and gets a ``nested`` array
``passages: [{text, start, end, embedding}]``; kNN runs on ``passages.embedding`` (Elasticsearch ``knn`` on a
nested ``dense_vector`` with ``inner_hits``; OpenSearch ``nested`` query around ``knn``/``neural`` on a nested
``knn_vector``). Chosen over chunk documents that point to a parent because:

* **results are documents**: both engines score a parent by its best passage and return the top ``k`` parents
  (no client-side de-duplication, no over-fetching ``k * chunks`` hits and collapsing, ``k`` means ``k``), with
  the best-matching passage in ``inner_hits``;
* **one document, one write**: re-ingesting a document replaces all its passages atomically under its stable id.
  With chunk documents a shorter new version leaves orphan chunks behind unless every write is followed by a
  delete-by-query; resume/failure reports stay per input record, as for unchunked indices;
* **filters and hybrid search stay on the parent**: ``lang`` and other metadata are parent fields, usable in the
  kNN filter; BM25 runs on the parent's full ``text``; fusing with it needs no join;
* **the same for server mode**: OpenSearch's ``text_embedding`` processor embeds a nested field map
  (``{passages: {text: embedding}}``) in the ingest pipeline, so the cluster embeds every passage.

The price: a changed document is re-embedded and rewritten whole (chunk documents could update one chunk), and
a document may hold at most ``index.mapping.nested_objects.limit`` passages (10,000 by default, about five million
tokens at 512 per passage). For documents edited in small parts, or larger than that, chunk documents are better.

Splitting
---------
Windows of ``chunk_size`` tokens (of the text alone: the passage prefix and special tokens are reserved on top),
each starting ``chunk_size - overlap`` tokens after the previous one, moved back to a word start so a word is not
cut in two where it can be avoided. Every token of the text is in at least one passage (nothing past the limit is
lost), and every passage, with its prefix, fits in ``max_length``: a ``chunk_size`` larger than that is refused
rather than truncated. Passages are slices of the original text (character offsets kept), never re-joined tokens.

The functions here are pure: a tokenizer object in, passages out; :func:`load_tokenizer` finds the model's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..models import ModelSpec

DEFAULT_OVERLAP = 64
PASSAGES_FIELD = "passages"
PASSAGE_TEXT = "text"


@dataclass(frozen=True)
class ChunkingSettings:
    """How an index splits long documents; recorded in the index's ``_meta.e5plugin.chunking``."""

    chunk_size: int | None = None  # tokens of text per passage; None: as many as the model reads
    overlap: int = DEFAULT_OVERLAP  # tokens shared by consecutive passages
    field: str = PASSAGES_FIELD  # the nested field holding the passages

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> ChunkingSettings | None:
        if not data:
            return None
        return cls(chunk_size=data.get("chunk_size"), overlap=int(data.get("overlap", 0)), field=data["field"])

    def resolved(self, budget: int) -> ChunkingSettings:
        """With ``chunk_size`` filled in and checked against the model's ``budget`` of text tokens."""
        size = self.chunk_size or budget
        if size > budget:
            raise ConfigurationError(
                f"--chunk-size {size} is more than the model reads: {budget} tokens of text fit after the passage "
                "prefix and special tokens; the rest would be cut off. Choose a chunk size of at most that."
            )
        if size < 1 or not 0 <= self.overlap < size:
            raise ConfigurationError(
                f"--chunk-overlap {self.overlap} must be at least 0 and smaller than the chunk size ({size} tokens)."
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.field):
            raise ConfigurationError(f"The passages field {self.field!r} must be a plain top-level field name.")
        return ChunkingSettings(size, self.overlap, self.field)

    def vector_path(self, vector_field: str) -> str:
        return f"{self.field}.{vector_field}"


@dataclass(frozen=True)
class Passage:
    """A slice of the original text: ``text == original[start:end]``."""

    text: str
    start: int
    end: int
    tokens: int

    def to_source(self) -> dict:
        return {PASSAGE_TEXT: self.text, "start": self.start, "end": self.end}


# ---- pure splitting ------------------------------------------------------------------------------------------------
def windows(
    n_tokens: int,
    size: int,
    overlap: int,
    word_starts: Sequence[bool] | None = None,
    fits: Callable[[int, int], bool] | None = None,
) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` covering ``0..n_tokens`` with ``overlap`` shared tokens, at most ``size`` long.

    With ``word_starts`` (True where a token starts a word), window ends and the next starts move back to a word
    start when that keeps the window non-empty and the walk moving forward; no window grows past ``size``.
    ``fits(start, end)`` may shorten a window further (the next one then starts earlier: still no gap).
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size} overlap={overlap}")
    if n_tokens <= 0:
        return []

    def snap(i: int, floor: int) -> int:
        """The start of the word holding token ``i``, if that is after ``floor``; else ``i``."""
        if word_starts is None:
            return i
        j = i
        while j > floor and not word_starts[j]:
            j -= 1
        return j if j > floor else i

    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        if end < n_tokens:
            end = snap(end, start)
        while fits is not None and end - start > 1 and not fits(start, end):
            end = snap(end - 1, start)
        out.append((start, end))
        if end >= n_tokens:
            return out
        following = max(end - overlap, start + 1)
        start = snap(following, start)


def split_text(
    text: str,
    tokenizer: Any,
    *,
    chunk_size: int,
    overlap: int,
    max_length: int,
    prefix: str = "",
) -> list[Passage]:
    """``text`` as passages of at most ``chunk_size`` tokens, each (``prefix`` + passage + special tokens) fitting
    in ``max_length``. ``tokenizer`` is a ``tokenizers.Tokenizer`` without truncation or padding.

    A text that fits whole is one passage equal to the text, so short documents embed exactly as unchunked ones.
    """
    encoding = tokenizer.encode(text, add_special_tokens=False)
    offsets: list[tuple[int, int]] = list(encoding.offsets)
    n = len(offsets)
    if n <= chunk_size and _fits(tokenizer, prefix + text, max_length):
        return [Passage(text, 0, len(text), n)]
    word_ids = list(encoding.word_ids)
    starts = [i == 0 or word_ids[i] is None or word_ids[i] != word_ids[i - 1] for i in range(n)]

    def fits(start: int, end: int) -> bool:  # a re-tokenized slice can come out longer at odd boundaries
        return _fits(tokenizer, prefix + _slice(text, offsets, start, end).text, max_length)

    passages = [_slice(text, offsets, s, e) for s, e in windows(n, chunk_size, overlap, starts, fits)]
    return [p for p in passages if p.text]


def _slice(text: str, offsets: list[tuple[int, int]], start: int, end: int) -> Passage:
    lo, hi = offsets[start][0], offsets[end - 1][1]
    chunk = text[lo:hi]
    stripped = chunk.lstrip()
    lo += len(chunk) - len(stripped)
    stripped = stripped.rstrip()
    return Passage(stripped, lo, lo + len(stripped), end - start)


def _fits(tokenizer: Any, text: str, max_length: int) -> bool:
    return len(tokenizer.encode(text, add_special_tokens=True).ids) <= max_length


def text_budget(tokenizer: Any, max_length: int, prefix: str = "") -> int:
    """Tokens of text that fit in one model input after the special tokens and ``prefix``."""
    specials = len(tokenizer.encode("", add_special_tokens=True).ids)
    prefix_tokens = len(tokenizer.encode(prefix, add_special_tokens=False).ids) if prefix else 0
    return max_length - specials - prefix_tokens


# ---- the model's tokenizer -----------------------------------------------------------------------------------------
def load_tokenizer(spec: ModelSpec, tokenizer: Any = None) -> Any:
    """The model's own fast tokenizer as a ``tokenizers.Tokenizer`` without truncation/padding (a private copy).

    ``tokenizer`` may be a transformers fast tokenizer already loaded (e.g. the embedder's).
    """
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if backend is None:
        path = Path(spec.local_path or "") / "tokenizer.json"
        if path.is_file():
            backend = Tokenizer.from_file(str(path))
        else:
            from transformers import AutoTokenizer

            source = spec.local_path or spec.model_id
            try:
                loaded = AutoTokenizer.from_pretrained(source, revision=spec.revision, use_fast=True)
            except Exception as exc:  # hub/network errors come in many kinds; the user needs one sentence
                raise ConfigurationError(
                    f"Splitting long documents needs the tokenizer of {spec.model_id} on this machine ({exc}); pass "
                    "a local model directory (e5plugin model pull ... --to DIR) when deploying the chunked index."
                ) from exc
            backend = loaded.backend_tokenizer
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


class Chunker:
    """Splits texts for one model and one index's settings; ``chunker(text) -> [Passage]``."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: ChunkingSettings,
        passage_prefix: str,
        tokenizer: Any = None,
        *,
        vector_field: str = "embedding",
    ) -> None:
        self.spec = spec
        self.vector_field = vector_field  # the vector's name inside each passage
        self.tokenizer = load_tokenizer(spec, tokenizer)
        self.prefix = passage_prefix
        self.budget = text_budget(self.tokenizer, spec.max_length, passage_prefix)
        self.settings = settings.resolved(self.budget)

    def __call__(self, text: str) -> list[Passage]:
        return split_text(
            text,
            self.tokenizer,
            chunk_size=self.settings.chunk_size or self.budget,
            overlap=self.settings.overlap,
            max_length=self.spec.max_length,
            prefix=self.prefix,
        )
