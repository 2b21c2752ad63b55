"""Similarity-threshold calibration: which cosine means "the same thing" for this model, from labelled pairs.

Cosine similarities are not comparable across models: all-MiniLM-L6-v2 spreads them over [-1, 1], while E5
(trained with a low temperature) puts nearly every pair above 0.7. A fixed threshold is therefore wrong for
most models; this module picks one from data and stores it with the index, where :mod:`.faq` and
:mod:`.dedup` read it back as their default.

Pairs
    ``text1``, ``text2`` and a binary label (or a graded score turned into a label with ``score >= positive_min``,
    4.0 by default: "mostly equivalent" on the STS 0–5 scale). Inputs: JSON Lines (``text1``/``text2`` or
    ``sentence1``/``sentence2``, with ``label`` or ``score``), tab-separated ``text1<TAB>text2<TAB>label|score``
    (optional header row) and the STS Benchmark files (genre, file, year, id, score, sentence1, sentence2[, ...]).

Prefixes: both sides as queries
    Pair similarity is a symmetric task; the E5 model card says to use ``query: `` on both sides for symmetric
    tasks (STS, bitext mining, paraphrase retrieval). Both texts go through :meth:`Embedder.encode_queries`, so the
    prefix comes from the model's prefix plan (``query: `` for E5, nothing for models without prefixes) and is
    added exactly once. ``side="passage"`` embeds both as passages instead (what dedup compares: the stored
    vectors are passages), ``side="query-passage"`` embeds ``text1`` as a query and ``text2`` as a passage (what a
    FAQ or search compares: calibrate it on question/entry pairs labelled relevant or not). The side is recorded
    with the stored calibration and honoured: a task uses a calibration only when its side is the comparison the
    task makes (:data:`TASK_SIDES`; for a model without prefixes every side embeds alike).

Slots
    ``_meta.e5plugin.calibration`` is the shared slot (``calibrate --index``); ``calibrate --task faq|dedup`` stores
    into ``_meta.e5plugin.calibrations.<task>``, which that task reads first: a FAQ and a dedup threshold differ.

Threshold
    Every cut between two consecutive distinct similarities is a candidate; the threshold is the midpoint of the
    cut (``similarity >= threshold`` reproduces the cut on the calibration pairs and generalizes a little better
    than the last included value). ``maximize="f1"`` takes the cut with the best F1 (ties: the higher threshold);
    ``target_precision=P`` the cut with the highest recall among those with precision >= P.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from ..errors import ConfigurationError, ConflictError
from ..models import E5_FAMILIES, family_from_prefixes

if TYPE_CHECKING:
    from ..embed import Embedder
    from ..engines.base import Backend
    from ..models import ModelSpec

#: STS scores >= this are positives (4 = "mostly equivalent, some unimportant details differ").
DEFAULT_POSITIVE_MIN = 4.0
META_KEY = "calibration"
SIDES = ("query", "passage", "query-passage")
SLOTS_KEY = "calibrations"  # per-task calibrations: _meta.e5plugin.calibrations.<task>
#: the comparisons each task makes: faq compares a query with stored questions (as queries, or as passages) and
#: answers (passages); dedup compares stored passages with stored passages
TASK_SIDES = {"faq": ("query", "query-passage"), "dedup": ("passage",)}

#: Thresholds used when an index has no stored calibration (rough: run ``e5plugin calibrate``). E5 models put
#: nearly all pairs above 0.7, so they need higher values than models whose cosines spread over [-1, 1].
#: Measured through a node by benchmarks/use_cases.py (README, "Measured through a real node"), for
#: all-MiniLM-L6-v2 ("other") and a multilingual-e5-small approximation ("e5"):
#: dedup = the best pairwise F1 on STS-B sentences with planted near-duplicates (MiniLM 0.90-0.95: F1 0.73-0.74;
#: e5 0.97: F1 0.68, while 0.90 merges 2,745 sentences into one cluster); faq = the FAQ set's calibrated
#: "no good answer" cut-off (MiniLM 0.59; e5: the real intfloat/e5-small-v2 with its default --embed entry 0.855,
#: benchmarks/faq_prefixes.py; with --embed both or question, stored questions as queries, 0.886). The real
#: e5-small-v2 confirms dedup 0.97: best pairwise F1 of 0.90-0.98 (P 0.770, R 0.800, F1 0.785; 0.98: F1 0.766).
DEFAULT_THRESHOLDS = {
    "faq": {"e5": 0.85, "other": 0.60},
    "dedup": {"e5": 0.97, "other": 0.90},
}


# ---- labelled pairs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledPair:
    text1: str
    text2: str
    label: bool
    score: float | None = None  # the graded score the label came from, when there was one


def read_pairs(
    source: str | Path | IO[str], *, fmt: str = "auto", positive_min: float = DEFAULT_POSITIVE_MIN
) -> list[LabelledPair]:
    """Labelled pairs from JSON Lines, TSV (``text1 text2 label|score``) or an STS Benchmark file.

    ``fmt``: ``auto`` (by the first line: ``{`` is JSON Lines, else tab-separated), ``jsonl``, ``tsv`` or ``sts``.
    Unreadable rows raise :class:`ConfigurationError` naming the line.
    """
    if isinstance(source, str | Path):
        with Path(source).open(encoding="utf-8", newline="") as stream:
            return read_pairs(stream, fmt=fmt, positive_min=positive_min)
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(source, start=1) if line.strip()]
    if not lines:
        raise ConfigurationError("The pairs file is empty.")
    if fmt == "auto":
        fmt = "jsonl" if lines[0][1].lstrip().startswith("{") else "tsv"
    if fmt == "jsonl":
        pairs = [_json_pair(n, line, positive_min) for n, line in lines]
    elif fmt in ("tsv", "sts"):
        pairs = _tsv_pairs(lines, positive_min, sts=fmt == "sts")
    else:
        raise ConfigurationError(f"Unknown pairs format {fmt!r}: use auto, jsonl, tsv or sts.")
    if not any(p.label for p in pairs) or all(p.label for p in pairs):
        raise ConfigurationError(
            f"The {len(pairs)} pairs need both positive and negative labels to calibrate a threshold "
            f"(positives: label 1/true, or score >= {positive_min:g})."
        )
    return pairs


def _json_pair(number: int, line: str, positive_min: float) -> LabelledPair:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"Pairs line {number}: invalid JSON ({exc.msg}).") from exc
    if not isinstance(row, dict):
        raise ConfigurationError(f"Pairs line {number}: a JSON object is needed.")
    text1 = row.get("text1", row.get("sentence1"))
    text2 = row.get("text2", row.get("sentence2"))
    if not isinstance(text1, str) or not isinstance(text2, str):
        raise ConfigurationError(f"Pairs line {number}: text1 and text2 (or sentence1 and sentence2) must be strings.")
    if "label" in row:
        return LabelledPair(text1, text2, _binary(row["label"], number))
    if "score" in row:
        score = _number(row["score"], number)
        return LabelledPair(text1, text2, score >= positive_min, score)
    raise ConfigurationError(f"Pairs line {number}: needs a label (0/1) or a score.")


def _tsv_pairs(lines: list[tuple[int, str]], positive_min: float, sts: bool) -> list[LabelledPair]:
    first = lines[0][1].split("\t")
    # STS Benchmark rows: genre, file, year, id, score, sentence1, sentence2 (some rows carry two more columns)
    sts = sts or (len(first) >= 7 and _is_number(first[4]))
    if sts:
        pairs = []
        for number, line in lines:
            cols = line.split("\t")
            if len(cols) < 7 or not _is_number(cols[4]):
                raise ConfigurationError(f"Pairs line {number}: not an STS Benchmark row (score in column 5).")
            score = float(cols[4])
            pairs.append(LabelledPair(cols[5], cols[6], score >= positive_min, score))
        return pairs
    kind = None  # "label" or "score", from a header row when there is one
    if len(first) == 3 and not _is_number(first[2]):
        kind = "score" if "score" in first[2].lower() else "label"
        lines = lines[1:]
    rows = []
    for number, line in lines:
        cols = line.split("\t")
        if len(cols) != 3 or not _is_number(cols[2]):
            raise ConfigurationError(f"Pairs line {number}: expected text1<TAB>text2<TAB>label-or-score.")
        rows.append((number, cols[0], cols[1], float(cols[2])))
    if kind is None:
        kind = "label" if all(value in (0.0, 1.0) for *_, value in rows) else "score"
    if kind == "label":
        return [LabelledPair(a, b, _binary(v, n)) for n, a, b, v in rows]
    return [LabelledPair(a, b, v >= positive_min, v) for n, a, b, v in rows]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _number(value: object, number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str) or not _is_number(str(value)):
        raise ConfigurationError(f"Pairs line {number}: the score {value!r} is not a number.")
    return float(value)


def _binary(value: object, number: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise ConfigurationError(f"Pairs line {number}: the label {value!r} is not 0/1 or true/false.")


# ---- threshold selection (pure) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Metrics:
    threshold: float
    precision: float
    recall: float
    f1: float
    predicted_positive: int
    true_positive: int
    positives: int
    pairs: int


def metrics_at(similarities: Sequence[float], labels: Sequence[bool], threshold: float) -> Metrics:
    """Precision, recall and F1 of ``similarity >= threshold`` as the positive prediction."""
    sims = np.asarray(similarities, dtype=np.float64)
    truth = np.asarray(labels, dtype=bool)
    predicted = sims >= threshold
    tp = int(np.sum(predicted & truth))
    pp, positives = int(predicted.sum()), int(truth.sum())
    precision = tp / pp if pp else 1.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (pp + positives) if pp + positives else 0.0
    return Metrics(float(threshold), precision, recall, f1, pp, tp, positives, len(sims))


def choose_threshold(
    similarities: Sequence[float], labels: Sequence[bool], *, target_precision: float | None = None
) -> tuple[Metrics, bool]:
    """The threshold for max F1 (default) or the highest recall at ``precision >= target_precision``.

    Returns ``(metrics at the threshold, reached)``; ``reached`` is False when no cut attains the target precision
    (the metrics are then those of the most precise cut)."""
    sims = np.asarray(similarities, dtype=np.float64)
    truth = np.asarray(labels, dtype=bool)
    if sims.shape != truth.shape or sims.size < 2:
        raise ConfigurationError("Calibration needs at least two pairs, each with a similarity and a label.")
    positives = int(truth.sum())
    if positives == 0 or positives == truth.size:
        raise ConfigurationError("Calibration needs both positive and negative pairs.")
    order = np.argsort(-sims, kind="stable")
    ranked, hits = sims[order], truth[order]
    tp = np.cumsum(hits)
    predicted = np.arange(1, sims.size + 1)
    # a cut after position i is only possible where the next similarity is lower (ties go together)
    cuts = np.flatnonzero(np.append(ranked[:-1] > ranked[1:], True))
    precision = tp[cuts] / predicted[cuts]
    recall = tp[cuts] / positives
    f1 = 2 * tp[cuts] / (predicted[cuts] + positives)
    reached = True
    if target_precision is None:
        best = int(np.argmax(f1))  # first maximum = the highest threshold among equals
    else:
        ok = np.flatnonzero(precision >= target_precision - 1e-12)
        if ok.size:
            best = int(ok[np.argmax(recall[ok])])
            best = int(ok[recall[ok] == recall[best]][0])  # equal recall: the highest threshold
        else:
            reached = False
            best = int(np.argmax(precision))
    cut = int(cuts[best])
    threshold = ranked[cut] if cut == sims.size - 1 else (ranked[cut] + ranked[cut + 1]) / 2.0
    return metrics_at(sims, truth, float(threshold)), reached


# ---- embedding pairs --------------------------------------------------------------------------------------------
def pair_similarities(embedder: Embedder, pairs: Sequence[LabelledPair], *, side: str = "query") -> np.ndarray:
    """Cosine similarity of each pair: both texts embedded as queries (default), both as passages, or ``text1``
    as a query and ``text2`` as a passage (``query-passage``).

    The prefix comes from the embedder's prefix plan (:meth:`Embedder.encode_queries` / ``encode_passages``);
    each distinct text is embedded once per side."""
    if side not in SIDES:
        raise ConfigurationError(f"side must be one of {', '.join(SIDES)}, not {side!r}.")
    firsts, seconds = [p.text1 for p in pairs], [p.text2 for p in pairs]
    if side == "query-passage":
        a, b = _embed_unique(embedder, firsts, "query"), _embed_unique(embedder, seconds, "passage")
    else:  # symmetric: each distinct text of either column embedded once, all on the same side
        both = _embed_unique(embedder, firsts + seconds, side)
        a, b = both[: len(pairs)], both[len(pairs) :]
    return np.sum(a * b, axis=1)


def _embed_unique(embedder: Embedder, texts: list[str], side: str) -> np.ndarray:
    """Unit vectors for ``texts`` (each distinct text embedded once), as queries or passages."""
    unique = list(dict.fromkeys(texts))
    encode = embedder.encode_queries if side == "query" else embedder.encode_passages
    vectors = np.asarray(encode(unique), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    position = {t: i for i, t in enumerate(unique)}
    return vectors[[position[t] for t in texts]]


# ---- calibration record -----------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A chosen threshold and how it was chosen: what is stored in ``_meta.e5plugin.calibration``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    objective: str  # "max_f1" or "precision>=P"
    pairs: int
    positives: int
    side: str
    model: str
    weights_sha256: str | None = None
    source: str | None = None  # the pairs file's name
    label_rule: str = ""
    target_reached: bool = True
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def calibrate(
    embedder: Embedder,
    pairs: Sequence[LabelledPair],
    *,
    target_precision: float | None = None,
    side: str = "query",
    source: str | None = None,
    positive_min: float = DEFAULT_POSITIVE_MIN,
) -> Calibration:
    """Embed the pairs with ``embedder``'s model and choose the threshold (max F1, or the target precision)."""
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ConfigurationError(f"--target-precision must be in (0, 1], not {target_precision}.")
    similarities = pair_similarities(embedder, pairs, side=side)
    labels = [p.label for p in pairs]
    metrics, reached = choose_threshold(similarities, labels, target_precision=target_precision)
    graded = any(p.score is not None for p in pairs)
    spec = embedder.spec
    return Calibration(
        threshold=round(metrics.threshold, 6),
        precision=round(metrics.precision, 4),
        recall=round(metrics.recall, 4),
        f1=round(metrics.f1, 4),
        objective="max_f1" if target_precision is None else f"precision>={target_precision:g}",
        pairs=metrics.pairs,
        positives=metrics.positives,
        side=side,
        model=spec.model_id,
        weights_sha256=spec.weights_sha256,
        source=source,
        label_rule=f"score >= {positive_min:g}" if graded else "label",
        target_reached=reached,
    )


def check_same_model(index_meta: dict, spec: ModelSpec, index: str) -> None:
    """Refuse to store a threshold measured with another model than the index's."""
    model = index_meta.get("model", {})
    recorded_sha, recorded_id = model.get("weights_sha256"), model.get("model_id")
    both_hashed = bool(recorded_sha and spec.weights_sha256)
    same = recorded_sha == spec.weights_sha256 if both_hashed else recorded_id == spec.model_id
    if not same:
        raise ConflictError(
            f"Index {index!r} was built with {recorded_id} (sha256 {str(recorded_sha)[:12]}), not with "
            f"{spec.model_id} (sha256 {str(spec.weights_sha256)[:12]}): a threshold is only valid for its own "
            "model. Calibrate with the index's model (omit --model to use it)."
        )


def store_calibration(backend: Backend, index: str, calibration: Calibration, task: str | None = None) -> dict:
    """Write the calibration into the shared slot ``_meta.e5plugin.calibration`` of an index e5plugin set up, or,
    with ``task``, into that task's own slot (refused when its side is not the comparison the task makes)."""
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    if task is None:
        return backend.update_index_meta(index, {META_KEY: calibration.to_dict()})
    if task not in TASK_SIDES:
        raise ConfigurationError(f"task must be one of {', '.join(TASK_SIDES)}, not {task!r}.")
    if not side_fits(meta, calibration.side, task):
        raise ConfigurationError(
            f"{task} compares {' or '.join(TASK_SIDES[task])} embeddings, but these pairs were embedded as "
            f"{calibration.side}: calibrate with --side {TASK_SIDES[task][-1]}."
        )
    slots = dict(meta.get(SLOTS_KEY) or {})
    slots[task] = calibration.to_dict()
    return backend.update_index_meta(index, {SLOTS_KEY: slots})


def stored_calibration(index_meta: dict, task: str | None = None) -> Calibration | None:
    """The shared calibration, or with ``task`` that task's own (None when there is none)."""
    data = (index_meta.get(SLOTS_KEY) or {}).get(task) if task else index_meta.get(META_KEY)
    return Calibration.from_dict(data) if isinstance(data, dict) and "threshold" in data else None


def side_fits(index_meta: dict, side: str, task: str) -> bool:
    """Whether pairs embedded as ``side`` measure what ``task`` compares; any side does for a model that embeds
    queries and passages alike (no prefixes, or the same one)."""
    prefixes = index_meta.get("prefixes") or index_meta.get("model") or {}
    alike = (prefixes.get("query_prefix") or "") == (prefixes.get("passage_prefix") or "")
    return alike or side in TASK_SIDES.get(task, ())


def threshold_family(index_meta: dict) -> str:
    """``"e5"`` or ``"other"``: which row of DEFAULT_THRESHOLDS the index's model takes, from the family its
    spec recorded (decided from the checkpoint's content, see :mod:`e5plugin.models`). Indices set up before the
    family was recorded fall back to the prefixes they recorded (never to the model's name)."""
    model = index_meta.get("model", {})
    family = model.get("family") or family_from_prefixes(
        model.get("query_prefix") or "", model.get("passage_prefix") or ""
    )
    return "e5" if family in E5_FAMILIES else "other"


def default_threshold(index_meta: dict, task: str, explicit: float | None = None) -> tuple[float, str]:
    """``(threshold, where it came from)``: the explicit value, the index's calibration, or the documented default
    for the task (``faq`` or ``dedup``) and model family."""
    if explicit is not None:
        return float(explicit), "explicit"
    own = stored_calibration(index_meta, task)
    if own is not None:
        return float(own.threshold), f"calibration ({task})"
    stored = stored_calibration(index_meta)
    unfit = ""
    if stored is not None:
        if side_fits(index_meta, stored.side, task):
            return float(stored.threshold), "calibration"
        unfit = f"; the stored calibration was measured on {stored.side} pairs, {task} compares {TASK_SIDES[task][-1]}"
    family = threshold_family(index_meta)
    return DEFAULT_THRESHOLDS[task][family], f"default ({family}{unfit})"
