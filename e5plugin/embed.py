"""Client-side embedding with sentence-transformers: the same model, prefixes and truncation as the cluster.

Prefixes are not decided here: the :class:`~e5plugin.prefixes.PrefixPlan` says whether the embedder adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import UnsupportedModelError
from .models import ModelSpec
from .prefixes import Actor, Mode, PrefixPlan, plan_prefixes


class Embedder:
    """``encode_passages`` / ``encode_queries`` in the sentence-transformers ``encode`` style."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        plan: PrefixPlan | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        backend: str = "torch",
    ) -> None:
        self.spec = spec
        self.plan = plan or plan_prefixes(spec, Mode.CLIENT, cluster_prefix_support=False)
        self.batch_size = batch_size
        self.model = _load(spec, device=device, backend=backend)
        self.model.max_seq_length = spec.max_length  # longer texts are truncated, as in the cluster
        # A checkpoint may name a default prompt; the plan alone adds prefixes, so never let encode() add one.
        self.model.default_prompt_name = None

    @property
    def dims(self) -> int:
        return int(self.model.get_sentence_embedding_dimension() or self.spec.dims)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed texts exactly as given (no prefix added): float32, L2-normalized when the model is."""
        if not len(texts):
            return np.zeros((0, self.dims), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            normalize_embeddings=self.spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.encode([self.plan.passage(t, Actor.EMBEDDER) for t in texts], batch_size)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.encode([self.plan.query_text(t, Actor.EMBEDDER) for t in texts], batch_size)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads (after truncation), for throughput figures."""
        tokenizer = self.model.tokenizer
        encoded = tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)
        return sum(len(ids) for ids in encoded["input_ids"])


def _load(spec: ModelSpec, *, device: str, backend: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise UnsupportedModelError(
            "Client-side embedding needs the model tooling: pip install 'e5plugin[models]'."
        ) from exc
    source = spec.local_path or spec.model_id
    kwargs: dict[str, Any] = {"device": device}
    if backend != "torch":
        kwargs["backend"] = backend
    if spec.revision and not spec.local_path:
        kwargs["revision"] = spec.revision
    return SentenceTransformer(source, **kwargs)
