"""Ingest speed on SciFact (5,183 documents), side by side in one run, as ratios to the model's compute floor.

    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py                       # MiniLM, fresh local ES + OS nodes
    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py --model e5            # the multilingual-e5-small stand-in
    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py --es-url http://127.0.0.1:9201 --os-url http://127.0.0.1:9200
    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py --limit-docs 500 --server-docs 100   # a quick run

What is measured (documents/s and tokens/s; tokens = what the model reads after truncation):

floor            ``SentenceTransformer.encode`` of all passage texts in one call (batch 32): the compute floor
naive            the hand-written baseline: encode 256 documents, ``helpers.bulk`` them, repeat
e5plugin         ``e5plugin.ingest.ingest`` with an ``Embedder`` (encodes the next batch while one is sent)
  no-prefetch    the same without the overlap (``prefetch_depth=1``)
  bulk-settings  the same with refresh_interval -1 / 0 replicas during the load (``bulk_settings=True``)
  onnx / int8    the same with ``Embedder(backend="onnx")`` / ``quantize="int8"`` (their floors are measured too)
server           OpenSearch ml-commons embeds in the ingest pipeline (``text_embedding`` processor), for several
                 processor ``batch_size`` values and bulk concurrency (a subset of the documents: it is slow)

Every client-side index gets every document (checked); the final refresh is inside the timing. The client's
CPU time, the node's CPU time (``_nodes/stats``) and the load average are recorded for each row: on a 2-core
machine the node indexing (HNSW) competes with the encoder for the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from common import cluster, load_scifact, write_result
from perf import load1, model_path, node_cpu_ms, print_table, wait_for_quiet

from e5plugin import onnx_backend
from e5plugin.config import ConnectionConfig
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.engines import connect
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Actor, Mode

COLUMNS = [
    "variant",
    "engine",
    "docs",
    "seconds",
    "docs_per_s",
    "tokens_per_s",
    "x_floor",
    "x_torch_floor",
    "x_naive",
    "encode_busy",
    "client_cpu_s",
    "node_cpu_s",
    "load",
]


class Timer:
    """Wall time, this process's CPU time and the node's CPU time around a block."""

    def __init__(self, backend=None) -> None:
        self.backend = backend

    def __enter__(self) -> Timer:
        self.load_before = load1()
        self.node0 = node_cpu_ms(self.backend) if self.backend else 0
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.cpu0
        self.node_cpu = (node_cpu_ms(self.backend) - self.node0) / 1000 if self.backend else None
        self.load = max(self.load_before, load1())


class EncodeMeter:
    """Counts the seconds an Embedder spends in ``encode_passages`` (how busy the encoder was during a load)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder, self.seconds = embedder, 0.0
        self._inner = embedder.encode_passages

        def timed(texts, batch_size=None):
            started = time.perf_counter()
            try:
                return self._inner(texts, batch_size)
            finally:
                self.seconds += time.perf_counter() - started

        embedder.encode_passages = timed  # type: ignore[method-assign]


def row(variant: str, engine: str, docs: int, tokens: int, timer: Timer, busy: float | None = None) -> dict:
    return {
        "variant": variant,
        "engine": engine,
        "docs": docs,
        "seconds": round(timer.seconds, 2),
        "docs_per_s": round(docs / timer.seconds, 1),
        "tokens_per_s": round(tokens / timer.seconds),
        "encode_busy": round(busy / timer.seconds, 3) if busy is not None else None,
        "client_cpu_s": round(timer.client_cpu, 1),
        "node_cpu_s": round(timer.node_cpu, 1) if timer.node_cpu is not None else None,
        "load": timer.load,
    }


def fresh_index(backend, spec, name: str, mode: Mode = Mode.CLIENT, **request) -> object:
    backend.delete_index(name)
    return deploy(backend, spec, DeployRequest(index=name, mode=mode, replicas=0, **request)).setup


def padding_efficiency(texts: list[str], token_counts: list[int], window: int, batch: int = 32) -> float:
    """Real tokens / padded tokens when ``window`` documents at a time are sorted by length (as
    ``SentenceTransformer.encode`` does inside one call, by characters) and cut into batches of ``batch``, each padded
    to its longest text. window=batch: no sorting (batches in input order)."""
    padded = 0
    for start in range(0, len(texts), window):
        part = list(range(start, min(start + window, len(texts))))
        if window > batch:
            part.sort(key=lambda i: -len(texts[i]))
        for b in range(0, len(part), batch):
            group = part[b : b + batch]
            padded += len(group) * max(token_counts[i] for i in group)
    return sum(token_counts) / padded


def naive_load(backend, index: str, model, texts: list[str], corpus: list[dict], normalize: bool, batch: int) -> None:
    """The hand-written baseline: encode a batch, bulk it, repeat (no overlap), then refresh."""
    helpers = backend._helpers()
    for start in range(0, len(corpus), batch):
        part = corpus[start : start + batch]
        vectors = model.encode(texts[start : start + batch], batch_size=32, normalize_embeddings=normalize)
        actions = [
            {"_index": index, "_id": d["id"], "_source": {**d, "embedding": v.tolist()}}
            for d, v in zip(part, vectors, strict=True)
        ]
        helpers.bulk(backend.client, actions, chunk_size=batch)
    backend.refresh(index)


def client_side(args, engine: str, url: str, spec, corpus, texts, tokens, embedders, floors) -> list[dict]:
    backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
    torch_embedder = embedders["torch"]
    rows = []
    index = f"bench-ingest-{engine[:2]}"
    setup = fresh_index(backend, spec, index)
    with Timer(backend) as t:
        naive_load(backend, index, torch_embedder.model, texts, corpus, spec.normalize, args.batch_size)
    assert backend.count(index) == len(corpus)
    naive = row("naive (torch)", engine, len(corpus), tokens, t)
    naive["x_floor"] = naive["x_torch_floor"] = round(naive["docs_per_s"] / floors["torch"], 3)
    rows.append(naive)
    print_table([naive], COLUMNS)
    variants = [("e5plugin (torch)", "torch", {})]
    if engine == "elasticsearch" or args.all_variants:
        variants += [
            ("e5plugin no-prefetch", "torch", {"prefetch_depth": 1}),
            ("e5plugin bulk-settings", "torch", {"bulk_settings": True}),
        ]
        variants += [(f"e5plugin ({name})", name, {}) for name in embedders if name != "torch"]
    for label, name, options in variants:
        embedder = embedders[name]
        setup = fresh_index(backend, spec, index)
        embedder.plan = setup.plan
        meter = EncodeMeter(embedder)
        with Timer(backend) as t:
            report = ingest(
                backend, index, corpus, embedder=embedder, batch_size=args.batch_size, refresh=True, **options
            )
        embedder.encode_passages = meter._inner  # type: ignore[method-assign]
        assert report.ok and report.indexed == len(corpus) and backend.count(index) == len(corpus), report.to_dict()
        result = row(label, engine, len(corpus), tokens, t, meter.seconds)
        result["x_floor"] = round(result["docs_per_s"] / floors[name], 3)
        result["x_torch_floor"] = round(result["docs_per_s"] / floors["torch"], 3)
        result["x_naive"] = round(result["docs_per_s"] / naive["docs_per_s"], 3)
        rows.append(result)
        print_table([result], COLUMNS)
    naive["x_naive"] = 1.0
    backend.delete_index(index)
    return rows


def server_side(args, url: str, spec, corpus, token_counts, floor: float) -> list[dict]:
    """OpenSearch ml-commons embeds in the pipeline: processor batch_size and bulk concurrency."""
    backend = connect(ConnectionConfig(urls=[url], request_timeout=900))
    backend.apply_one_node_ml_settings()
    docs = corpus[: args.server_docs]
    tokens = sum(token_counts[: len(docs)])
    index = "bench-ingest-server"
    setup = fresh_index(backend, spec, index, Mode.SERVER, model_id="bench-ingest-model")
    rows = []
    configurations = [(int(b), 1) for b in args.server_batch_sizes.split(",")]
    configurations += [(int(b), int(c)) for b, c in (x.split("x") for x in args.server_concurrency.split(",") if x)]
    for batch, threads in configurations:
        body = backend.bodies.pipeline_body(
            setup.model_id, setup.plan, text_field="text", vector_field="embedding", batch_size=batch
        )
        backend.put_pipeline(setup.pipeline, body)
        backend.delete_index(index)
        fresh_index(backend, spec, index, Mode.SERVER, model_id="bench-ingest-model")
        backend.put_pipeline(setup.pipeline, body)  # deploy put the default pipeline back
        with Timer(backend) as t:
            if threads == 1:
                report = ingest(backend, index, docs, batch_size=args.batch_size, refresh=True)
                assert report.ok and report.indexed == len(docs), report.to_dict()
            else:
                actions = ({"_index": index, "_id": d["id"], "_source": d} for d in docs)
                chunk = max(1, args.batch_size // threads)
                for ok, info in backend._helpers().parallel_bulk(
                    backend.client, actions, thread_count=threads, chunk_size=chunk
                ):
                    assert ok, info
                backend.refresh(index)
        missing = backend.count(index, {"bool": {"must_not": {"exists": {"field": "embedding"}}}})
        assert backend.count(index) == len(docs) and missing == 0, missing
        result = row(f"server batch_size={batch} bulk_threads={threads}", "opensearch", len(docs), tokens, t)
        result["x_floor"] = result["x_torch_floor"] = round(result["docs_per_s"] / floor, 3)
        rows.append(result)
        print_table([result], COLUMNS)
    backend.delete_index(index)
    backend.delete_model(setup.model_id)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm, e5 (stand-in) or a model directory")
    parser.add_argument("--engines", default="elasticsearch,opensearch")
    parser.add_argument("--es-url", help="existing Elasticsearch (else a fresh local node)")
    parser.add_argument("--os-url", help="existing OpenSearch (else a fresh local node)")
    parser.add_argument("--limit-docs", type=int, default=0, help="only the first N SciFact documents")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per ingest batch / bulk request")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="client-side embedders to compare")
    parser.add_argument("--all-variants", action="store_true", help="every variant on OpenSearch too")
    parser.add_argument("--server-docs", type=int, default=600, help="documents for the server-side rows (0: none)")
    parser.add_argument("--server-batch-sizes", default="1,16,64", help="text_embedding processor batch_size values")
    parser.add_argument("--server-concurrency", default="16x2", help="BATCHxTHREADS parallel bulk rows")
    parser.add_argument("--wait-load", type=float, default=1.5, help="start when the 1-min load is below this")
    parser.add_argument("--max-wait", type=float, default=900)
    parser.add_argument("--name", default=None, help="result file name (default ingest-<model>)")
    args = parser.parse_args()

    corpus, _, _ = load_scifact("test")
    if args.limit_docs:
        corpus = corpus[: args.limit_docs]
    spec = resolve_model(model_path(args.model))
    engines = [e for e in args.engines.split(",") if e]
    embedders: dict[str, Embedder] = {"torch": Embedder(spec, backend="torch")}
    for name in args.backends.split(","):
        if name.startswith("onnx") and onnx_backend.available():
            embedders[name] = Embedder(spec, backend="onnx", quantize="int8" if name == "onnx-int8" else None)
    plan = embedders["torch"].plan
    texts = [plan.passage(d["text"], Actor.EMBEDDER) for d in corpus]
    token_counts = [
        len(ids)
        for ids in embedders["torch"].model.tokenizer(texts, truncation=True, max_length=spec.max_length)["input_ids"]
    ]
    tokens = sum(token_counts)
    print(f"{len(corpus)} documents, {tokens} tokens (mean {tokens / len(corpus):.0f}, max_length {spec.max_length})")
    for embedder in embedders.values():  # warm-up
        embedder.encode_passages([d["text"] for d in corpus[:64]])
    windows = (32, args.batch_size, 1024, len(texts))
    padding = {f"window {w}": round(padding_efficiency(texts, token_counts, w), 4) for w in windows}
    print("padding efficiency (real / padded tokens) by sorting window:", padding)
    load_at_start = wait_for_quiet(args.wait_load, args.max_wait)
    rows: list[dict] = []
    floors: dict[str, float] = {}
    for name, embedder in embedders.items():
        with Timer() as t:
            vectors = embedder.model.encode(texts, batch_size=32, normalize_embeddings=spec.normalize)
        floors[name] = len(corpus) / t.seconds
        rows.append(row(f"floor ({name})", "-", len(corpus), tokens, t))
        if name == "torch":
            reference = np.asarray(vectors)
        else:
            rows[-1]["cosine_to_torch"] = round(float(np.mean(np.sum(reference * np.asarray(vectors), axis=1))), 5)
        rows[-1]["x_floor"] = 1.0
        rows[-1]["x_torch_floor"] = round(floors[name] / floors["torch"], 3)
        print_table(rows[-1:], COLUMNS)
    urls = {"elasticsearch": args.es_url, "opensearch": args.os_url}
    for engine in engines:
        with cluster(engine, urls[engine], f"bench-ingest-{engine}") as url:
            found = client_side(args, engine, url, spec, corpus, texts, tokens, embedders, floors)
            print_table(found, COLUMNS)
            rows += found
            if engine == "opensearch" and args.server_docs:
                rows += server_side(args, url, spec, corpus, token_counts, floors["torch"])
    # Load-robust view: with every process on the same cores, throughput follows the CPU seconds a document costs
    # in total (client + node); x_floor_cpu = the floor's CPU per document / this row's CPU per document.
    floor_cpu = {r["variant"][7:-1]: r["client_cpu_s"] / r["docs"] for r in rows if r["variant"].startswith("floor")}
    for r in rows:
        backend_name = r["variant"].split("(")[-1].rstrip(")") if "(" in r["variant"] else "torch"
        per_doc = (r["client_cpu_s"] + (r["node_cpu_s"] or 0)) / r["docs"]
        if r["engine"] != "-" and not r["variant"].startswith("server") and per_doc:
            r["x_floor_cpu"] = round(floor_cpu.get(backend_name, floor_cpu["torch"]) / per_doc, 3)
    print()
    print_table(rows, [*COLUMNS, "x_floor_cpu"])
    result = {
        "model": spec.model_id,
        "docs": len(corpus),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "load_at_start": load_at_start,
        "padding_efficiency": padding,
        "load_at_end": load1(),
        "rows": rows,
    }
    with contextlib.suppress(Exception):
        import torch

        result["torch_threads"] = torch.get_num_threads()
    name = args.name or f"ingest-{args.model if args.model in ('minilm', 'e5') else spec.short_name}"
    print(f"\nwritten {write_result(name, result)}")


if __name__ == "__main__":
    main()
