"""Fine-tuning on in-domain (query, relevant passage) pairs, evaluated before and after on a held-out split.

    from e5plugin.tasks.finetune import FinetuneConfig, finetune, load_pairs
    report = finetune(resolve_model("intfloat/e5-small-v2"), load_pairs("pairs.jsonl"), "models/e5-ft")
    print(report.ndcg_before, report.ndcg_after)          # nDCG@10 on the held-out queries

Training: sentence-transformers' MultipleNegativesRankingLoss (each query against its passage and every other
passage in the batch as negatives), batches without repeated queries or passages (a repeat would be a false
negative), AdamW with linear warm-up and decay. The texts are prefixed exactly as the model will see them at
search time: through the client-side :class:`~e5plugin.prefixes.PrefixPlan` (``query: `` + query,
``passage: `` + passage for E5; nothing for models without prefixes). The output is a sentence-transformers
directory with the same prompts (so :func:`~e5plugin.models.resolve_model` gives it the same prefixes) and an
``e5plugin-finetune.json`` record of the base model, settings and scores.

The held-out split is by query: no held-out query is trained on. Its corpus is every passage of the pairs (the
held-out queries must find theirs among all of them). Deploying the result as a new model version behind an alias
is :func:`e5plugin.tasks.rollout.rollout`.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..models import ModelSpec, resolve_model
from ..prefixes import Actor, Mode, PrefixPlan, plan_prefixes
from ..quality import ndcg_at_k

REPORT_FILE = "e5plugin-finetune.json"


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 256  # training only: the saved model keeps the base model's max length
    seed: int = 0
    max_steps: int | None = None  # stop early (tests, quick runs)
    device: str = "cpu"
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: far less memory, ~30% slower


@dataclass
class TrainingRun:
    steps: int
    examples: int
    seconds: float
    first_loss: float
    last_loss: float


@dataclass
class FinetuneReport:
    base_model: str
    out_dir: str
    train_pairs: int
    heldout_queries: int
    eval_corpus: int
    ndcg_before: float
    ndcg_after: float
    training: TrainingRun
    config: FinetuneConfig
    spec: ModelSpec | None = field(default=None, repr=False)  # the fine-tuned model, ready for deploy

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "spec"}
        data["ndcg@10_before"] = round(data.pop("ndcg_before"), 4)
        data["ndcg@10_after"] = round(data.pop("ndcg_after"), 4)
        return data


# ---- pairs ----------------------------------------------------------------------------------------------------------
def load_pairs(path: str | Path) -> list[Pair]:
    """JSON Lines (``{"query": ..., "passage": ...}``; ``positive`` or ``text`` are read as the passage) or a
    CSV/TSV file with ``query`` and ``passage`` columns."""
    path = Path(path)
    pairs: list[Pair] = []
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix in (".csv", ".tsv"):
            rows: Any = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        else:
            rows = (json.loads(line) for line in fh if line.strip())
        for number, row in enumerate(rows, start=1):
            query = row.get("query")
            passage = next((row[k] for k in ("passage", "positive", "text") if row.get(k)), None)
            if not isinstance(query, str) or not isinstance(passage, str) or not query.strip() or not passage.strip():
                raise ConfigurationError(f"{path}: record {number} needs non-empty 'query' and 'passage' strings.")
            pairs.append(Pair(query, passage))
    if not pairs:
        raise ConfigurationError(f"{path} has no (query, passage) pairs.")
    return pairs


def split_pairs(pairs: Sequence[Pair], holdout: float = 0.1, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, held out), split by distinct query: every pair of a held-out query is held out."""
    queries = sorted({p.query for p in pairs})
    random.Random(seed).shuffle(queries)
    n_held = max(1, round(holdout * len(queries))) if holdout > 0 and len(queries) > 1 else 0
    held = set(queries[:n_held])
    return [p for p in pairs if p.query not in held], [p for p in pairs if p.query in held]


def eval_set(pairs: Sequence[Pair], heldout: Sequence[Pair]) -> tuple[dict, dict, dict]:
    """(queries, corpus, qrels) for the held-out queries against every passage of ``pairs``."""
    passage_ids: dict[str, str] = {}
    for pair in pairs:
        passage_ids.setdefault(pair.passage, f"p{len(passage_ids)}")
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for pair in heldout:
        qid = query_ids.setdefault(pair.query, f"q{len(query_ids)}")
        qrels.setdefault(qid, {})[passage_ids[pair.passage]] = 1
    return {q: t for t, q in query_ids.items()}, {d: t for t, d in passage_ids.items()}, qrels


def batches_without_duplicates(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches in which no query and no passage repeats (an in-batch repeat is a false negative)."""
    pending = list(pairs)
    rng.shuffle(pending)
    batches: list[list[Pair]] = []
    while pending:
        batch: list[Pair] = []
        seen: set[str] = set()
        rest: list[Pair] = []
        for pair in pending:
            if len(batch) < batch_size and pair.query not in seen and pair.passage not in seen:
                batch.append(pair)
                seen.update((pair.query, pair.passage))
            else:
                rest.append(pair)
        batches.append(batch)
        pending = rest
    return [b for b in batches if len(b) > 1]  # one pair alone has no negative


# ---- metrics --------------------------------------------------------------------------------------------------------
def evaluate_in_memory(
    spec: ModelSpec, queries: dict[str, str], corpus: dict[str, str], qrels: dict, k: int = 10
) -> float:
    """nDCG@k by exact cosine over ``corpus`` with the model's client-side prefixes (no cluster)."""
    from ..embed import Embedder

    embedder = Embedder(spec)
    ids = list(corpus)
    docs = embedder.encode_passages([corpus[i] for i in ids])
    qids = list(queries)
    vectors = embedder.encode_queries([queries[q] for q in qids])
    if not spec.normalize:
        docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ docs.T
    ranked = {qid: [ids[j] for j in np.argsort(-scores[i])[:k]] for i, qid in enumerate(qids)}
    return ndcg_at_k(ranked, qrels, k)


def evaluate_through_cluster(search: Any, queries: dict[str, str], qrels: dict, k: int = 10) -> float:
    """nDCG@k with every query sent through ``search`` (a :class:`~e5plugin.search.SemanticSearch`)."""
    qids = list(queries)
    results = search.search_batch([queries[q] for q in qids], k=k, source=False)
    return ndcg_at_k({qid: [h.id for h in hits] for qid, hits in zip(qids, results, strict=True)}, qrels, k)


# ---- training -------------------------------------------------------------------------------------------------------
def train(
    spec: ModelSpec,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainingRun:
    """Fine-tune ``spec`` on ``pairs`` with in-batch negatives and save a sentence-transformers model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 5.7
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"{out} exists and is not empty: choose a new --out for the new model version.")
    plan = plan_prefixes(spec, Mode.CLIENT, cluster_prefix_support=False)  # the embedder adds both prefixes
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model = SentenceTransformer(spec.local_path or spec.model_id, device=config.device)
    base_length = model.max_seq_length
    model.max_seq_length = min(config.max_seq_length, spec.max_length)
    if config.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_enable()
    loss = MultipleNegativesRankingLoss(model)
    epochs = [batches_without_duplicates(pairs, config.batch_size, rng) for _ in range(config.epochs)]
    total = sum(len(e) for e in epochs)
    if config.max_steps:
        total = min(total, config.max_steps)
    if total == 0:
        raise ConfigurationError("Not enough pairs to train: a batch needs at least two different pairs.")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    features = getattr(model, "preprocess", None) or model.tokenize  # preprocess: sentence-transformers >= 5.7
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    examples = 0
    for batch in (b for e in epochs for b in e):
        if len(losses) >= total:
            break
        queries = features([plan.query_text(p.query, Actor.EMBEDDER) for p in batch])
        passages = features([plan.passage(p.passage, Actor.EMBEDDER) for p in batch])
        value = loss([batch_to_device(queries, model.device), batch_to_device(passages, model.device)], None)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(value.detach()))
        examples += len(batch)
        if progress:
            progress(len(losses), total, losses[-1])
    model.eval()
    if config.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_disable()
    model.max_seq_length = base_length
    _keep_prefixes(model, plan)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return TrainingRun(len(losses), examples, time.perf_counter() - started, losses[0], losses[-1])


def _keep_prefixes(model: Any, plan: PrefixPlan) -> None:
    """Record the prefixes as the saved model's prompts, so its spec has the same ones (never used by encode:
    the plan adds them)."""
    prompts = {k: v for k, v in (getattr(model, "prompts", None) or {}).items() if k not in ("query", "document")}
    # both keys, also when empty: an explicit declaration (sentence-transformers' own default is not one)
    prompts["query"] = plan.query_prefix
    prompts["passage"] = plan.passage_prefix
    model.prompts = prompts
    model.default_prompt_name = None


def finetune(
    spec: ModelSpec,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    holdout: float = 0.1,
    progress: Callable[[int, int, float], None] | None = None,
) -> FinetuneReport:
    """Split, evaluate the base model, train, evaluate the result (nDCG@10 on the held-out queries), record."""
    training_pairs, heldout = split_pairs(pairs, holdout, config.seed)
    queries, corpus, qrels = eval_set(pairs, heldout)
    before = evaluate_in_memory(spec, queries, corpus, qrels) if qrels else float("nan")
    run = train(spec, training_pairs, out_dir, config, progress)
    tuned = resolve_model(str(out_dir))
    after = evaluate_in_memory(tuned, queries, corpus, qrels) if qrels else float("nan")
    report = FinetuneReport(
        base_model=spec.model_id,
        out_dir=str(Path(out_dir).resolve()),
        train_pairs=len(training_pairs),
        heldout_queries=len(qrels),
        eval_corpus=len(corpus),
        ndcg_before=before,
        ndcg_after=after,
        training=run,
        config=config,
        spec=tuned,
    )
    record = {**report.to_dict(), "base_weights_sha256": spec.weights_sha256, "loss": "MultipleNegativesRankingLoss"}
    (Path(out_dir) / REPORT_FILE).write_text(json.dumps(record, indent=2))
    return report
