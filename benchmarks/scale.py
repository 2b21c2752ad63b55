"""How cost grows with the corpus: 10k / 100k / 1M documents of 384-dim e5-small-v2 vectors, per index option.

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py embed    # the first 51,200 real vectors (~40 CPU-s per 2,048)
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py run --engine elasticsearch --url http://127.0.0.1:9260 \\
        --sizes 10000,100000 --options hnsw,int8_hnsw,bbq_hnsw,flat            # --shards 3 on a 3-node cluster
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py table          # every recorded cell

Corpus (REAL): real English texts embedded with the real intfloat/e5-small-v2 (ONNX fp32, the vectors of torch)
as ``passage: <text>``, from these sources in this order, exact duplicate texts dropped (first kept):

* BEIR SciFact corpus.jsonl: each title, then each abstract sentence (split after ``.``/``!``/``?`` followed by
  whitespace and an upper-case letter, digit, ``(`` or ``[``) of at least 4 words (5,181 + 44,706 texts);
* STS-B (sts-train/dev/test.csv): sentence 1 and sentence 2 of every pair (15,455);
* Tatoeba: the English side of every ``*-eng.eng`` file (7,055);

72,397 texts, of which the first :data:`REAL_PASSAGES` = 51,200 are used (all 49,887 SciFact titles and sentences,
then the first 1,313 STS-B sentences): what this loaded 2-core machine embedded in time. Queries: the 1,109 SciFact
queries (queries.jsonl) as ``query: <text>``. The first N documents of a corpus are the first N real ones (10k:
SciFact sentences only).

Corpus (DERIVED), for the documents past the real ones (see :func:`derived_block`): document ``R + j`` is
``normalize(t * real[a] + (1 - t) * real[b] + e)``, ``a = j mod R``, ``b`` one of the 10 nearest real passages of
``a`` within its block of 2,048 consecutive real passages, ``t ~ U(0.25, 0.75)``, ``e`` Gaussian noise of norm
~0.05; seeded. A derived vector lies between two real neighbours (cosine ~0.92-0.98 to ``real[a]``; real nearest
neighbours here: ~0.90-0.94; two random real passages: ~0.79): on the real manifold, denser than the real corpus
around each real passage (random vectors would be the pessimistic case for HNSW, exact copies the optimistic one).

Per cell (engine, nodes x shards, size, option), one index ``scale-*`` with only the vector field, 0 replicas:

* bulk: documents/s of the precomputed vectors through the client's ``streaming_bulk`` (``Backend.streaming_bulk``,
  500 documents a request, refresh off while loading), client JSON encoding included (same machine);
* merge: wall time of a force merge to one segment per shard;
* disk: the store size (primaries), and the bytes per Lucene file extension of the shard files on this machine's disk
  (inside compound ``.cfs`` files too, read from their ``.cfe`` tables);
* off-heap: "hot" = what every kNN search reads (HNSW graph ``.vex`` + the vectors the graph search scores: ``.veb``
  for bbq, ``.veq`` for int8/7-bit, else the float ``.vec``); the page cache must hold it for memory-speed search;
  also the bytes of the vector files resident in the page cache after the searches (``fincore``);
* heap: the node's (nodes') JVM heap used before creating and after searching the index (no GC forced: noisy);
* kNN: p50/p99/throughput of the product's kNN body (k=10; Elasticsearch num_candidates 100) at 1 and 16 client
  threads, and recall@10 of the 1,109 queries against exact top 10 (numpy brute force over the same vectors);
  OpenSearch also with k=100, size 10 (``recall@10_k100``).

Every speed figure carries the 1-minute load average beside it. Results: benchmarks/results/scale-<engine>-<N>n<S>s
.json, written after every cell (and every 100,000 bulk documents, ``partial``); a re-run skips the cells already
there (``--redo`` runs them again).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import json
import os
import re
import struct
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, SHARED, machine

MODEL_DIR = Path(
    os.environ.get(
        "E5PLUGIN_E5_SMALL_V2",
        Path.home() / ".cache" / "e5plugin" / "models" / "e5-small-v2-maven-1.11.0-beta19",
    )
)
CACHE = Path.home() / ".cache" / "e5plugin" / "bench-vectors"
DATA = SHARED / "data"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
CHUNK = 2048
#: real passages used (the first ones of :func:`real_passages`): 25 chunks, what this loaded machine embedded in time
REAL_PASSAGES = 51_200
DERIVED_SIGMA = 0.01
SEED = 14


# --------------------------------------------------------------------------------------------------- the corpus
def real_passages() -> tuple[list[str], dict[str, int]]:
    """The real passages (see the module doc) and how many came from each source."""
    seen: set[str] = set()
    texts: list[str] = []
    counts: dict[str, int] = {}

    def add(source: str, text: str) -> None:
        text = " ".join(text.split())
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            counts[source] = counts.get(source, 0) + 1

    with open(DATA / "beir" / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            add("scifact-title", doc.get("title", ""))
            for sentence in SENTENCE_END.split(doc.get("text", "")):
                if len(sentence.split()) >= 4:
                    add("scifact-sentence", sentence)
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        with open(DATA / "sts" / name, encoding="utf-8") as handle:
            for line in handle:
                cells = line.rstrip("\n").split("\t")
                for cell in cells[5:7]:
                    add("sts-b", cell)
    for path in sorted((DATA / "tatoeba").glob("*-eng.eng")):
        for line in path.read_text(encoding="utf-8").splitlines():
            add("tatoeba-eng", line)
    return texts, counts


def real_queries() -> list[str]:
    with open(DATA / "beir" / "scifact" / "queries.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def _embedder():
    from e5plugin.embed import Embedder
    from e5plugin.models import resolve_model

    return Embedder(resolve_model(str(MODEL_DIR)), backend="onnx", batch_size=64)


def _key(texts: list[str], kind: str) -> str:
    return hashlib.sha256("\0".join(["e5-small-v2", "onnx", kind, *texts]).encode()).hexdigest()[:16]


def embed_cached(
    texts: list[str], kind: str, embedder=None, progress: bool = True, limit: int | None = None
) -> np.ndarray:
    """``passage:``/``query:`` vectors of ``texts``, cached in chunks of :data:`CHUNK` under
    ~/.cache/e5plugin/bench-vectors so an interrupted run resumes; the whole array is cached once complete.
    ``limit``: embed only the chunks covering the first ``limit`` texts (returns those)."""
    key = _key(texts, kind)
    final = CACHE / f"scale-e5-small-v2-onnx-{kind}-{key}.npy"
    if final.is_file():
        return np.load(final)
    parts = CACHE / f"scale-e5-small-v2-onnx-{kind}-{key}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    embedder = embedder or _embedder()
    encode = embedder.encode_passages if kind == "passage" else embedder.encode_queries
    chunks = []
    started = time.perf_counter()
    done_now = 0
    for n, start in enumerate(range(0, len(texts) if limit is None else min(limit, len(texts)), CHUNK)):
        path = parts / f"{n:05d}.npy"
        if not path.is_file():
            vectors = encode(texts[start : start + CHUNK])
            np.save(path, vectors)
            done_now += len(vectors)
            if progress:
                rate = done_now / (time.perf_counter() - started)
                print(
                    f"  embedded {min(start + CHUNK, len(texts))}/{len(texts)} {kind}s "
                    f"({rate:.1f}/s, load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        chunks.append(np.load(path))
    vectors = np.concatenate(chunks).astype(np.float32)
    if len(vectors) < len(texts):
        return vectors[:limit]
    np.save(final, vectors)
    meta = {
        "texts": len(texts),
        "kind": kind,
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "embedded_this_run": done_now,
        "load": os.getloadavg()[0],
    }
    final.with_suffix(".json").write_text(json.dumps(meta))
    return vectors


def _available_real(kind: str = "passage") -> tuple[np.ndarray | None, int]:
    """The real passage vectors embedded so far (all of them once complete) and the total real count."""
    texts, _ = real_passages()
    key = _key(texts, kind)
    final = CACHE / f"scale-e5-small-v2-onnx-{kind}-{key}.npy"
    if final.is_file():
        return np.load(final)[:REAL_PASSAGES], min(REAL_PASSAGES, len(texts))
    parts = sorted((CACHE / f"scale-e5-small-v2-onnx-{kind}-{key}.parts").glob("*.npy"))
    done = []
    for n, path in enumerate(parts):  # only the unbroken run of chunks from the start
        if path.name != f"{n:05d}.npy":
            break
        done.append(np.load(path))
    real = np.concatenate(done)[:REAL_PASSAGES] if done else None
    return real, min(REAL_PASSAGES, len(texts))


def real_neighbours(real: np.ndarray, k: int = 10) -> np.ndarray:
    """For every real passage, its ``k`` nearest other real passages (exact cosine) within its own block of
    :data:`CHUNK` consecutive real passages (consecutive passages are mostly sentences of the same or neighbouring
    SciFact abstracts; all-pairs over 51,200 would take this loaded machine ~20 min), cached."""
    key = hashlib.sha256(real[:: max(1, len(real) // 1000)].tobytes()).hexdigest()[:16]
    path = CACHE / f"scale-neighbours-{len(real)}-{key}.npy"
    with open(path.with_suffix(".lock"), "w") as lock:  # several runs start at once: one computes, the rest wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return np.load(path)
        return _compute_neighbours(real, k, path)


def _compute_neighbours(real: np.ndarray, k: int, path: Path) -> np.ndarray:
    out = np.empty((len(real), k), dtype=np.int32)
    for start in range(0, len(real), CHUNK):
        block = real[start : start + CHUNK]
        scores = block @ block.T
        np.fill_diagonal(scores, -np.inf)  # not itself
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + CHUNK] = start + np.take_along_axis(top, order, axis=1)
    np.save(path, out)
    return out


DERIVED_BLOCK = 100_000


def derived_block(real: np.ndarray, neighbours: np.ndarray, block: int) -> np.ndarray:
    """Derived vectors ``R + block * DERIVED_BLOCK ...``: for document ``i`` (``j = i - R``), ``a = j mod R``,
    ``b`` one of ``a``'s 10 nearest real passages (:func:`real_neighbours`; seeded pick), ``t ~ U(0.25, 0.75)``:
    ``normalize(t * real[a] + (1 - t) * real[b] + e)``, ``e ~ N(0, (0.05 / sqrt(384))^2)`` per dimension (a noise of
    norm ~0.05). Seeded per block, so the first N documents are the same whatever the largest size asked."""
    rng = np.random.default_rng([SEED, block])
    count, dims = len(real), real.shape[1]
    j = np.arange(block * DERIVED_BLOCK, (block + 1) * DERIVED_BLOCK)
    a = j % count
    b = neighbours[a, rng.integers(0, neighbours.shape[1], size=len(j))]
    t = rng.uniform(0.25, 0.75, size=(len(j), 1)).astype(np.float32)
    mixed = t * real[a] + (1 - t) * real[b]
    mixed += rng.normal(0, 0.05 / np.sqrt(dims), size=mixed.shape).astype(np.float32)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return mixed.astype(np.float32)


def corpus_vectors(size: int) -> tuple[np.ndarray, int]:
    """The first ``size`` documents' vectors and how many of them are real (the rest derived)."""
    real, total_real = _available_real()
    if real is not None and size <= len(real):
        return real[:size], size
    if real is None or len(real) < total_real:
        raise SystemExit(f"{size} documents need the real vectors embedded first (benchmarks/scale.py embed)")
    neighbours = real_neighbours(real)
    out = np.empty((size, real.shape[1]), dtype=np.float32)  # filled in place: one copy in memory
    out[: len(real)] = real
    for block in range((size - len(real) + DERIVED_BLOCK - 1) // DERIVED_BLOCK):
        start = len(real) + block * DERIVED_BLOCK
        out[start : start + DERIVED_BLOCK] = derived_block(real, neighbours, block)[: size - start]
    return out, len(real)


def query_vectors() -> np.ndarray:
    queries = real_queries()
    path = CACHE / f"scale-e5-small-v2-onnx-query-{_key(queries, 'query')}.npy"
    if not path.is_file():
        raise SystemExit("the query vectors are not embedded yet (benchmarks/scale.py embed)")
    return np.load(path)


def exact_top10(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Brute-force top 10 (cosine = dot: all vectors are unit length) in numpy, cached by size and content."""
    key = hashlib.sha256(docs[:: max(1, len(docs) // 2000)].tobytes() + queries.tobytes()).hexdigest()[:16]
    path = CACHE / f"scale-exact-{len(docs)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    out = np.empty((len(queries), 10), dtype=np.int64)
    step = 16  # 16 x 1M float32 scores: 64 MB
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ docs.T
        np.negative(scores, out=scores)
        top = np.argpartition(scores, 10, axis=1)[:, :10]
        order = np.argsort(np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + step] = np.take_along_axis(top, order, axis=1)
    np.save(path, out)
    return out


# --------------------------------------------------------------------------------------------------- measuring
def load1() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


#: Lucene vector files: raw float vectors (.vec/.vemf), HNSW graph (.vex/.vem), int7/int4 scalar-quantized
#: (.veq/.vemq), Elasticsearch's BBQ 1-bit (.veb/.vemb) and their ES-specific variants (.cenivf etc. unused here).
VECTOR_EXTENSIONS = {"vec", "vemf", "vex", "vem", "veq", "vemq", "veb", "vemb"}


def shard_files(backend, index: str) -> tuple[dict[str, int], list[Path]]:
    """Bytes per file extension of every copy of the index's shards on this machine's disk, and the vector files."""
    uuid = backend.client.indices.get_settings(index=index)[index]["settings"]["index"]["uuid"]
    info = backend.client.nodes.info(metric="settings")
    roots = set()
    for node in info["nodes"].values():
        data = node["settings"].get("path", {}).get("data")
        for root in data if isinstance(data, list) else [data]:
            if root:
                roots.add(Path(root))
    sizes: dict[str, int] = {}
    vector_files: list[Path] = []

    def add(ext: str, size: int) -> None:
        if ext.startswith("segments") or ext in ("si", "lock", "cfe", "cfs"):
            ext = "other"
        sizes[ext] = sizes.get(ext, 0) + size

    for root in roots:
        for base in (root / "indices" / uuid, *root.glob(f"nodes/*/indices/{uuid}")):
            for path in base.glob("*/index/*"):
                if not path.is_file():
                    continue
                ext = path.suffix.lstrip(".") or path.name
                if ext == "cfe":  # a compound segment (small segments are packed into .cfs): count what is inside
                    for name, size in compound_entries(path).items():
                        add(name.rsplit(".", 1)[-1], size)
                    vector_files.append(path.with_suffix(".cfs"))
                elif ext != "cfs":
                    add(ext, path.stat().st_size)
                    if ext in VECTOR_EXTENSIONS:
                        vector_files.append(path)
    return sizes, vector_files


def compound_entries(cfe: Path) -> dict[str, int]:
    """The files inside a Lucene 9/10 compound segment: its ``.cfe`` table (index header, VInt count, then per entry
    a string name, a little-endian long offset and long length)."""
    data = cfe.read_bytes()
    pos = 0

    def vint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string() -> str:
        nonlocal pos
        length = vint()
        pos += length
        return data[pos - length : pos].decode()

    pos = 4  # magic
    string()  # codec name
    pos += 4 + 16  # version, segment id
    pos += 1 + data[pos]  # suffix
    entries = {}
    for _ in range(vint()):
        name = string()
        _offset, length = struct.unpack_from("<qq", data, pos)
        pos += 16
        entries[name] = length
    return entries


def page_cache_bytes(paths: list[Path]) -> int | None:
    """Bytes of ``paths`` resident in the page cache now (util-linux ``fincore``), None where it is missing."""
    import shutil
    import subprocess

    if not paths or not shutil.which("fincore"):
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sum(int(line.strip()) for line in out.splitlines() if line.strip().isdigit())


def heap_used(backend) -> int:
    stats = backend.client.nodes.stats(metric="jvm")
    return sum(int(n["jvm"]["mem"]["heap_used_in_bytes"]) for n in stats["nodes"].values())


def with_timeout(backend, seconds: int):
    """The client with a longer request timeout (elasticsearch-py: ``options``; opensearch-py: per call)."""
    client = backend.client
    if hasattr(client, "options"):
        return client.options(request_timeout=seconds), {}
    return client, {"request_timeout": seconds}


def measure_knn(backend, index: str, bodies: list[dict], clients: int, requests: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    for body in bodies[: max(8, clients)]:  # warm-up
        backend.search(index, body)
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        backend.search(index, bodies[i % len(bodies)])
        latencies.append(1000 * (time.perf_counter() - started))

    load = load1()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - started
    return {
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "qps": round(requests / seconds, 1),
        "requests": requests,
        "load": max(load, load1()),
    }


def recall_at_10(backend, index: str, requests: list[dict], exact: np.ndarray) -> float:
    """recall@10 of these kNN bodies (sent 50 to a multi-search) against the exact top 10 of each."""
    responses = []
    for start in range(0, len(requests), 50):
        responses += backend.msearch(index, requests[start : start + 50])
    found = [[int(h.id) for h in backend.hits(r)] for r in responses]
    hits = sum(len(set(f[:10]) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return round(hits / (10 * len(exact)), 4)


def run_cell(backend, spec, engine: str, shards: int, size: int, option: str, args, progress=None) -> dict:
    """One cell; ``progress(dict)`` is called every 100,000 documents of the bulk (a partial record of a large cell
    that may not finish in time)."""

    docs, real_count = corpus_vectors(size)
    queries = query_vectors()
    from concurrent.futures import ThreadPoolExecutor

    # exact top 10 in a background thread (numpy releases the GIL) while the engine loads and merges
    exact_pool = ThreadPoolExecutor(max_workers=1)
    exact_future = exact_pool.submit(exact_top10, queries, docs)
    index = f"scale-{engine[:2]}-{option.replace('_', '-')}-{size}-{shards}s"
    field = "embedding"
    backend.delete_index(index)
    heap_before = heap_used(backend)
    body = backend.index_body(spec, index_options=option, replicas=0)
    body["settings"]["index"]["number_of_shards"] = shards
    body["settings"]["index"]["refresh_interval"] = "-1"  # loading: refresh once at the end
    backend.ensure_index(index, body, vector_field=field, dims=spec.dims)
    row: dict = {
        "vector_mapping": body["mappings"]["properties"][field],
        "engine": engine,
        "version": backend.capabilities.version_text if hasattr(backend.capabilities, "version_text") else None,
        "shards": shards,
        "size": size,
        "real_docs": real_count,
        "derived_docs": size - real_count,
        "option": option,
    }

    def actions():
        for start in range(0, size, 1000):
            block = docs[start : start + 1000].tolist()
            for i, vector in enumerate(block, start):
                yield {"_index": index, "_id": str(i), field: vector}

    print(f"  [{engine} {shards}s {size} {option}] bulk ...", flush=True)
    row["bulk_load"] = load1()
    started = time.perf_counter()
    failed = 0
    client, extra = with_timeout(backend, 600)
    for sent, (ok, _item) in enumerate(
        backend.streaming_bulk(
            actions(),
            chunk_size=args.chunk,
            max_retries=3,
            raise_on_error=False,
            **({"request_timeout": 600} if extra else {}),
        ),
        1,
    ):
        failed += not ok
        if progress is not None and sent % 100_000 == 0:
            seconds = time.perf_counter() - started
            progress({"docs": sent, "seconds": round(seconds, 1), "docs_per_s": round(sent / seconds, 1)})
    bulk_seconds = time.perf_counter() - started
    row["bulk_s"] = round(bulk_seconds, 1)
    row["bulk_docs_per_s"] = round(size / bulk_seconds, 1)
    row["bulk_load_end"] = load1()
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": None}}, **extra)
    client.indices.refresh(index=index, **extra)
    count = int(client.count(index=index, **extra)["count"])
    assert failed == 0 and count == size, (failed, count, size)

    before = client.indices.segments(index=index, **extra)["indices"][index]["shards"].values()
    row["segments_before_merge"] = sum(len(copy["segments"]) for shard in before for copy in shard)
    print(f"  [{engine} {shards}s {size} {option}] force merge ...", flush=True)
    row["merge_load"] = load1()
    started = time.perf_counter()
    client, extra = with_timeout(backend, 7200)
    client.indices.forcemerge(index=index, max_num_segments=1, **extra)
    row["merge_s"] = round(time.perf_counter() - started, 1)
    client.indices.refresh(index=index, **extra)
    segments = client.indices.segments(index=index, **extra)
    row["segments_per_shard"] = max(
        len(copy["segments"]) for shard in segments["indices"][index]["shards"].values() for copy in shard
    )

    stats = client.indices.stats(index=index, metric="store", **extra)
    row["store_bytes"] = int(stats["indices"][index]["primaries"]["store"]["size_in_bytes"])
    files, vector_files = shard_files(backend, index)
    row["files_bytes"] = files
    row["vector_files_bytes"] = sum(v for k, v in files.items() if k in VECTOR_EXTENSIONS)
    quantized = files.get("veb", 0) or files.get("veq", 0)
    # what kNN search reads for every query: the graph plus the vectors it scores (quantized ones where quantized;
    # a quantized index rescores only a few candidates with the raw .vec, which may stay on disk)
    row["hot_vector_bytes"] = files.get("vex", 0) + (quantized or files.get("vec", 0))
    row["raw_float_bytes"] = size * spec.dims * 4

    print(f"  [{engine} {shards}s {size} {option}] kNN ...", flush=True)
    bodies = [
        backend.knn_body(vector_field=field, k=10, num_candidates=args.num_candidates, vector=v.tolist(), source=False)
        for v in queries
    ]
    exact = exact_future.result()
    exact_pool.shutdown()
    row["recall@10"] = recall_at_10(backend, index, bodies, exact)
    row["num_candidates"] = args.num_candidates if engine == "elasticsearch" else None
    if engine == "opensearch":  # the product's body asks k=10 (Lucene explores ~k); k=100, size 10, for comparison
        wide = [
            {
                **backend.knn_body(vector_field=field, k=100, num_candidates=100, vector=v.tolist(), source=False),
                "size": 10,
            }
            for v in queries
        ]
        row["recall@10_k100"] = recall_at_10(backend, index, wide, exact)
    row["knn_1"] = measure_knn(backend, index, bodies, 1, args.requests_1)
    row["knn_16"] = measure_knn(backend, index, bodies, 16, args.requests_16)
    row["page_cache_resident_bytes"] = page_cache_bytes(vector_files)
    time.sleep(2)
    row["heap_used_before_bytes"] = heap_before
    row["heap_used_after_bytes"] = heap_used(backend)
    if engine == "elasticsearch":
        try:
            dense = client.indices.stats(index=index, metric="dense_vector", **extra)
            row["dense_vector_stats"] = dense["indices"][index]["primaries"].get("dense_vector")
        except Exception as exc:  # an optional stat
            row["dense_vector_stats"] = f"unavailable: {exc}"
    if not args.keep:
        backend.delete_index(index)
    row["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return row


# --------------------------------------------------------------------------------------------------- results
def result_path(engine: str, topology: str) -> Path:
    return RESULTS / f"scale-{engine}-{topology}.json"


def load_result(engine: str, topology: str) -> dict:
    path = result_path(engine, topology)
    if path.is_file():
        return json.loads(path.read_text())
    return {"benchmark": path.stem, "cells": {}}


def save_result(engine: str, topology: str, data: dict, own: set[str]) -> None:
    """Write ``data``, merged (under a lock) with what other processes wrote to the same file meanwhile: of the cells
    and partial records, this process's (keys in ``own``) replace those in the file, the others are kept as read."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = result_path(engine, topology)
    with open(CACHE / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_text()) if path.is_file() else {}
        for part in ("cells", "partial"):
            mine = {key: value for key, value in data.get(part, {}).items() if key in own}
            data[part] = {**data.get(part, {}), **current.get(part, {}), **mine}
        data["machine"] = machine()
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)


def _mb(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


TABLE = [
    ("engine", lambda r: r["engine"][:2]),
    ("topo", lambda r: r["topology"]),
    ("size", lambda r: r["size"]),
    ("derived", lambda r: r["derived_docs"]),
    ("option", lambda r: r["option"]),
    ("bulk/s", lambda r: r["bulk_docs_per_s"]),
    ("load", lambda r: r["bulk_load"]),
    ("merge_s", lambda r: r["merge_s"]),
    ("mload", lambda r: r["merge_load"]),
    ("store_MB", lambda r: _mb(r["store_bytes"])),
    ("vecfiles_MB", lambda r: _mb(r["vector_files_bytes"])),
    ("hot_MB", lambda r: _mb(r["hot_vector_bytes"])),
    ("heapΔ_MB", lambda r: _mb(r["heap_used_after_bytes"] - r["heap_used_before_bytes"])),
    ("p50_1", lambda r: r["knn_1"]["p50_ms"]),
    ("p99_1", lambda r: r["knn_1"]["p99_ms"]),
    ("p50_16", lambda r: r["knn_16"]["p50_ms"]),
    ("p99_16", lambda r: r["knn_16"]["p99_ms"]),
    ("qps16", lambda r: r["knn_16"]["qps"]),
    ("qload", lambda r: r["knn_16"]["load"]),
    ("recall@10", lambda r: r["recall@10"]),
    ("os_k100", lambda r: r.get("recall@10_k100")),
]


def print_rows(rows: list[dict]) -> None:
    cells = [[str(get(r)) for _, get in TABLE] for r in rows]
    widths = [max(len(name), *(len(c[i]) for c in cells)) if cells else len(name) for i, (name, _) in enumerate(TABLE)]
    print("  ".join(name.ljust(w) for (name, _), w in zip(TABLE, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def all_rows() -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob("scale-*.json")):
        data = json.loads(path.read_text())
        rows += [{**row, "topology": data.get("topology", "?")} for row in data.get("cells", {}).values()]
    latest: dict[tuple, dict] = {}  # a cell measured again (a --suffix file): its latest measurement
    for row in rows:
        cell = (row["engine"], row["topology"], row["size"], _label(row))
        if cell not in latest or row["when"] > latest[cell]["when"]:
            latest[cell] = row
    rows = list(latest.values())
    order = {"elasticsearch": 0, "opensearch": 1}
    options = ["hnsw", "int8_hnsw", "bbq_hnsw", "flat", "hnsw_sq"]
    return sorted(
        rows,
        key=lambda r: (
            order.get(r["engine"], 2),
            r["topology"],
            options.index(r["option"]),
            _label(r),
            r["size"],
        ),
    )


# --------------------------------------------------------------------------------------------------- commands
def _embed(args) -> None:
    texts, counts = real_passages()
    queries = real_queries()
    print(f"real passages: {len(texts)} {counts}; queries: {len(queries)}", flush=True)
    embedder = _embedder()
    embed_cached(queries, "query", embedder)
    embed_cached(texts, "passage", embedder, limit=args.limit or None)


def _run(args) -> None:
    from e5plugin.config import ConnectionConfig
    from e5plugin.engines import connect
    from e5plugin.models import resolve_model

    spec = resolve_model(str(MODEL_DIR))
    backend = connect(ConnectionConfig(urls=[args.url], request_timeout=300))
    engine = args.engine
    if getattr(backend, "engine", engine) != engine:
        raise SystemExit(f"{args.url} is {backend.engine}, not {engine}")
    nodes = len(backend.client.nodes.info(metric="settings")["nodes"])
    topology = f"{nodes}n{args.shards}s"
    name = f"{topology}-{args.suffix}" if args.suffix else topology
    data = load_result(engine, name)
    data.update(
        {
            "topology": topology,
            "command": " ".join(["PYTHONPATH=. .venv/bin/python", "benchmarks/scale.py", *sys.argv[1:]]),
            "model": "intfloat/e5-small-v2 (ONNX fp32 via e5plugin.embed.Embedder)",
            "corpus": "real: SciFact titles + abstract sentences, STS-B, Tatoeba eng (see the docstring); rest derived",
        }
    )
    for size in [int(s) for s in args.sizes.split(",")]:
        for option in args.options.split(","):
            key = f"{size}/{option}"
            if key in data["cells"] and not args.redo:
                print(f"  [{engine} {topology} {size} {option}] done before: skipped", flush=True)
                continue
            if args.until and time.strftime("%H:%M", time.gmtime()) >= args.until:
                print(f"  past {args.until} UTC: stopping before {key}", flush=True)
                return

            def progress(state: dict, key: str = key) -> None:
                data.setdefault("partial", {}).setdefault(key, []).append(
                    {**state, "load": load1(), "when": time.strftime("%H:%M:%S")}
                )
                save_result(engine, name, data, {key})

            row = run_cell(backend, spec, engine, args.shards, size, option, args, progress)
            row["nodes"] = nodes
            row["command"] = data["command"]
            data["cells"][key] = row
            save_result(engine, name, data, {key})
            print_rows([{**row, "topology": topology}])


def _label(row: dict) -> str:
    """The option, Elasticsearch's num_candidates where it is not the default 100, and for OpenSearch hnsw_sq rows
    measured before the product set the quantizer's confidence interval (no ``vector_mapping`` recorded then)."""
    candidates = row.get("num_candidates")
    label = row["option"] + (f" (num_candidates {candidates})" if candidates not in (None, 100) else "")
    if row["option"] == "hnsw_sq" and "vector_mapping" not in row:
        label += " (Lucene's default interval, before the fix)"
    return label


def _table(args) -> None:
    rows = all_rows()
    if not args.markdown:
        print_rows(rows)
        return
    print(
        "| engine | nodes x shards | docs (real + derived) | option | bulk docs/s (load) | force merge s (load) | "
        "store MB | vector files MB | hot MB (graph + scored vectors) | kNN p50 / p99 ms, 1 client (load) | "
        "p50 / p99 ms, 16 clients | qps 16 clients (load) | recall@10 |"
    )
    print("|---" * 13 + "|")
    names = {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"}
    for r in rows:
        k1, k16 = r["knn_1"], r["knn_16"]
        recall = f"{r['recall@10']:.3f}"
        if r.get("recall@10_k100") is not None and r["recall@10_k100"] != r["recall@10"]:
            recall += f" (k=100: {r['recall@10_k100']:.3f})"
        print(
            f"| {names[r['engine']]} | {r['nodes']} x {r['shards']} | {r['size']:,} ({r['real_docs']:,} + "
            f"{r['derived_docs']:,}) | {_label(r)} | {r['bulk_docs_per_s']:,.0f} ({r['bulk_load']:.0f}) | "
            f"{r['merge_s']:,.1f} ({r['merge_load']:.0f}) | {_mb(r['store_bytes'])} | {_mb(r['vector_files_bytes'])} | "
            f"{_mb(r['hot_vector_bytes'])} | {k1['p50_ms']:.1f} / {k1['p99_ms']:.0f} ({k1['load']:.0f}) | "
            f"{k16['p50_ms']:.0f} / {k16['p99_ms']:.0f} | {k16['qps']:.0f} ({k16['load']:.0f}) | {recall} |"
        )
    print()
    print(
        "| engine | nodes x shards | option | docs | store | hot | merge s | bulk docs/s | p50 1 client | recall@10 |"
    )
    print("|---" * 10 + "|")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r["topology"], _label(r)), []).append(r)
    for (engine, _topology, option), group in groups.items():
        group.sort(key=lambda r: r["size"])
        for small, big in itertools.pairwise(group):

            def ratio(get, small=small, big=big) -> str:
                low, high = get(small), get(big)
                return f"x{high / low:.1f}" if low else "-"

            print(
                f"| {names[engine]} | {small['nodes']} x {small['shards']} | {option} | "
                f"{small['size']:,} -> {big['size']:,} | {ratio(lambda r: r['store_bytes'])} | "
                f"{ratio(lambda r: r['hot_vector_bytes'])} | {ratio(lambda r: r['merge_s'])} | "
                f"{ratio(lambda r: r['bulk_docs_per_s'])} | {ratio(lambda r: r['knn_1']['p50_ms'])} | "
                f"{small['recall@10']:.3f} -> {big['recall@10']:.3f} |"
            )
    print()
    print(
        "| engine | option | docs | store bytes/doc | vector files bytes/doc | hot bytes/doc | graph .vex bytes/doc |"
    )
    print("|---" * 7 + "|")
    for r in rows:
        if r["nodes"] != 1:
            continue
        per = {k: v / r["size"] for k, v in r["files_bytes"].items()}
        print(
            f"| {names[r['engine']]} | {_label(r)} | {r['size']:,} | {r['store_bytes'] / r['size']:.0f} | "
            f"{r['vector_files_bytes'] / r['size']:.0f} | {r['hot_vector_bytes'] / r['size']:.0f} | "
            f"{per.get('vex', 0):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    embed = sub.add_parser("embed", help="embed the real passages and queries (cached)")
    embed.add_argument(
        "--limit", type=int, default=REAL_PASSAGES, help="embed the first N passages (0: all 72,397 texts)"
    )
    run = sub.add_parser("run", help="measure cells (skips those already in the result file)")
    run.add_argument("--engine", required=True, choices=("elasticsearch", "opensearch"))
    run.add_argument("--url", required=True)
    run.add_argument("--sizes", default="10000,100000")
    run.add_argument("--options", default="hnsw")
    run.add_argument("--shards", type=int, default=1)
    run.add_argument("--chunk", type=int, default=500, help="documents per bulk request")
    run.add_argument("--num-candidates", type=int, default=100, help="Elasticsearch kNN num_candidates")
    run.add_argument("--requests-1", type=int, default=300)
    run.add_argument("--requests-16", type=int, default=800)
    run.add_argument("--until", default=None, help="HH:MM UTC: start no cell after this time")
    run.add_argument("--keep", action="store_true", help="keep the index after the cell")
    run.add_argument("--redo", action="store_true")
    run.add_argument("--suffix", default="", help="write scale-<engine>-<topology>-SUFFIX.json (a re-run kept apart)")
    table = sub.add_parser("table", help="print every recorded cell")
    table.add_argument("--markdown", action="store_true", help="Markdown tables: cells, growth, bytes per document")
    args = parser.parse_args()
    {"embed": _embed, "run": _run, "table": _table}[args.cmd](args)


if __name__ == "__main__":
    main()
