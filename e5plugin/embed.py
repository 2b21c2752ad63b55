"""Client-side embedding with sentence-transformers: the same model, prefixes and truncation as the cluster.

Prefixes are not decided here: the :class:`~e5plugin.prefixes.PrefixPlan` says whether the embedder adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigurationError, UnsupportedModelError
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
        backend: str = "auto",
        quantize: str | None = None,
    ) -> None:
        """``backend``: ``auto`` (default: ONNX int8 where a quality check accepted it for this model, see
        :func:`e5plugin.quality.check_quantization`; else ``fp32``), ``fp32`` (torch's vectors by the fastest
        runtime at hand: ONNX Runtime where its graph needs no export, see
        :func:`e5plugin.onnx_backend.fp32_ready`, else torch), ``torch``, or ``onnx`` (ONNX Runtime; needs
        ``pip install 'e5plugin[models]'``; exported once if needed, cached under ``~/.cache/e5plugin/onnx``).
        ``quantize="int8"``: ONNX Runtime dynamic int8 quantization (ONNX only), ``"auto"``: int8 only where a
        check accepted it."""
        self.spec = spec
        self.plan = plan or plan_prefixes(spec, Mode.CLIENT, cluster_prefix_support=False)
        self.batch_size = batch_size
        self.backend, self.quantize = resolve_backend(spec, backend, quantize)
        if self.backend == "onnx":
            from . import onnx_backend

            self.model = onnx_backend.load(spec, quantize=self.quantize)
        else:
            self.model = _load(spec, device=device, backend=self.backend)
        self.model.max_seq_length = spec.max_length  # longer texts are truncated, as in the cluster
        # A checkpoint may name a default prompt; the plan alone adds prefixes, so never let encode() add one.
        self.model.default_prompt_name = None
        #: order texts by token count before batching (see :meth:`encode`); False: sentence-transformers' own order
        self.bucketing = True

    @property
    def label(self) -> str:
        """What runs the model: ``torch``, ``onnx`` or ``onnx-int8``."""
        return f"{self.backend}-{self.quantize}" if self.quantize else self.backend

    @property
    def dims(self) -> int:
        model = self.model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dimension() or self.spec.dims)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed texts exactly as given (no prefix added): float32, L2-normalized when the model is.

        Length-bucketed: the texts are ordered by their token count (after truncation) and encoded in batches of
        ``batch_size`` in that order, each padded only to its own longest text. sentence-transformers sorts by
        *characters*, a poor proxy for tokens (SciFact with XLM-R: 86.5% of the padded tokens are real within 256
        texts, 94% when sorted by tokens); the vectors are the same."""
        if not len(texts):
            return np.zeros((0, self.dims), dtype=np.float32)
        texts = list(texts)
        size = batch_size or self.batch_size
        if not self.bucketing or len(texts) <= size:
            return self._encode(texts, size)
        lengths = self.token_lengths(texts)
        order = np.argsort(-np.asarray(lengths), kind="stable")
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(order), size):
            chosen = order[start : start + size]
            out[chosen] = self._encode([texts[i] for i in chosen], size)
        return out

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=self.spec.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text gives the model (special tokens included, after truncation)."""
        encoded = self.model.tokenizer(
            list(texts), truncation=True, max_length=self.model.max_seq_length, add_special_tokens=True
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.encode([self.plan.passage(t, Actor.EMBEDDER) for t in texts], batch_size)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.encode([self.plan.query_text(t, Actor.EMBEDDER) for t in texts], batch_size)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads (after truncation), for throughput figures."""
        tokenizer = self.model.tokenizer
        encoded = tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)
        return sum(len(ids) for ids in encoded["input_ids"])


def parse_backend_label(label: str) -> tuple[str, str | None]:
    """(backend, quantize) for :class:`Embedder` from a label as the CLI, Spark and ``_meta`` write it:
    ``onnx-int8`` -> ``("onnx", "int8")``; ``auto``, ``fp32``, ``torch``, ``onnx`` -> themselves, no quantization."""
    name, _, quantize = label.partition("-")
    return name, quantize or None


def resolve_backend(spec: ModelSpec, backend: str, quantize: str | None) -> tuple[str, str | None]:
    """(backend, quantize) to load: ``auto`` picks ONNX int8 only where a recorded quality check accepted it, else
    ``fp32``; ``fp32`` picks ONNX Runtime where its graph is at hand without an export (same vectors), else torch."""
    if backend not in ("torch", "onnx", "openvino", "auto", "fp32"):
        raise ConfigurationError(f"backend must be auto, fp32, torch, onnx or openvino, not {backend!r}")
    if quantize not in (None, "int8", "auto"):
        raise ConfigurationError(f"quantize must be None, 'int8' or 'auto', not {quantize!r}")
    if backend in ("auto", "fp32") and quantize == "int8":
        raise ConfigurationError("int8 quantization is offered with backend='onnx' only.")
    if backend in ("auto", "fp32") or quantize == "auto":
        from .onnx_backend import available, fp32_ready, int8_accepted

        if backend != "fp32" and available() and int8_accepted(spec):
            return "onnx", "int8"
        if backend in ("auto", "fp32"):
            return ("onnx" if fp32_ready(spec) else "torch"), None
        return backend, None
    if quantize and backend != "onnx":
        raise ConfigurationError("int8 quantization is offered with backend='onnx' only.")
    return backend, quantize


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
