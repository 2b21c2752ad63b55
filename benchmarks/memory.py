"""Memory: the client's peak RSS while ingesting 10k and 100k synthetic documents (it must not grow with the input),
and the OpenSearch node's heap / native memory with a model deployed in ml-commons.

    PYTHONPATH=. .venv/bin/python benchmarks/memory.py                          # fresh local ES + OS nodes
    PYTHONPATH=. .venv/bin/python benchmarks/memory.py --es-url http://127.0.0.1:9201 --os-url http://127.0.0.1:9200
    PYTHONPATH=. .venv/bin/python benchmarks/memory.py --sizes 2000,20000 --no-node    # a quick run

Client: each size runs in a fresh Python process (``--child``) that streams generated documents (never a list)
through ``e5plugin.ingest.ingest`` in client mode into Elasticsearch; RSS is sampled every 0.2 s and the peak
(``ru_maxrss``) recorded. Model: a tiny random BERT (default, so 100k documents take a minute) or ``--model
minilm``. Flat = the peak RSS for 100k is within a few MB of 10k.

Node: the OpenSearch node's JVM heap, its process RSS (/proc, when the node is local) and ml-commons' own
figures (``_plugins/_ml/profile/models``, ``_plugins/_ml/stats``) before and after deploying all-MiniLM-L6-v2,
and after 200 predictions.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, cluster, write_result
from perf import load1, model_path, print_table

WORDS = str.split(
    "the of and to in is was for on with as by at from that this it be are were has have had query passage search "
    "engine vector model text document answer question index cluster node password reset account login error help "
    "data embedding semantic similar duplicate language protein cell gene patient study result effect risk"
)


def documents(count: int, seed: int = 7):
    rng = random.Random(seed)
    for i in range(count):
        yield {"id": f"doc-{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80)))}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(args) -> None:
    """One ingest of ``args.child`` generated documents; prints a JSON line with the RSS figures."""
    from e5plugin.config import ConnectionConfig
    from e5plugin.deploy import DeployRequest, deploy
    from e5plugin.embed import Embedder
    from e5plugin.engines import connect
    from e5plugin.ingest import ingest
    from e5plugin.models import resolve_model
    from e5plugin.prefixes import Mode

    spec = resolve_model(args.model_dir)
    backend = connect(ConnectionConfig(urls=[args.es_url], request_timeout=300))
    index = f"bench-memory-{args.child}"
    backend.delete_index(index)
    setup = deploy(backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0)).setup
    embedder = Embedder(spec, plan=setup.plan)
    embedder.encode_passages(["warm up the model"] * 64)
    samples: list[tuple[int, float]] = []
    done = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((done[0], rss_mb()))
            time.sleep(0.2)

    before = rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()

    def progress(n: int) -> None:
        done[0] += n

    report = ingest(backend, index, documents(args.child), embedder=embedder, batch_size=256, progress=progress)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    assert report.ok and report.indexed == args.child, report.to_dict()
    backend.delete_index(index)

    def rss_at(fraction: float) -> float:
        target = fraction * args.child
        return round(max((mb for n, mb in samples if n <= target), default=before), 1)

    print(
        json.dumps(
            {
                "docs": args.child,
                "seconds": round(seconds, 1),
                "docs_per_s": round(args.child / seconds),
                "rss_before_ingest_mb": round(before, 1),
                "rss_at_25%_mb": rss_at(0.25),
                "rss_at_50%_mb": rss_at(0.5),
                "rss_at_100%_mb": rss_at(1.0),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "growth_mb": round(max(mb for _, mb in samples) - before, 1),
            }
        )
    )


def node_memory(url: str, quick: bool) -> list[dict]:
    """Heap / RSS / ml-commons memory of an OpenSearch node before and after a model deployment."""
    from e5plugin.config import ConnectionConfig
    from e5plugin.deploy import DeployRequest, deploy
    from e5plugin.engines import connect
    from e5plugin.models import resolve_model
    from e5plugin.prefixes import Mode

    backend = connect(ConnectionConfig(urls=[url], request_timeout=600))
    backend.apply_one_node_ml_settings()
    info = next(iter(backend.client.nodes.info(node_id="_local", metric="process")["nodes"].values()))
    pid = info.get("process", {}).get("id")

    def snapshot(label: str) -> dict:
        stats = next(iter(backend.client.nodes.stats(node_id="_local", metric="jvm,process")["nodes"].values()))
        row = {
            "state": label,
            "heap_used_mb": round(stats["jvm"]["mem"]["heap_used_in_bytes"] / 2**20),
            "heap_max_mb": round(stats["jvm"]["mem"]["heap_max_in_bytes"] / 2**20),
            "non_heap_mb": round(stats["jvm"]["mem"]["non_heap_used_in_bytes"] / 2**20),
            "direct_buffers_mb": round(
                sum(p.get("used_in_bytes", 0) for n, p in stats["jvm"].get("buffer_pools", {}).items()) / 2**20
            ),
            "process_rss_mb": None,
        }
        status = Path(f"/proc/{pid}/status")
        if pid and status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    row["process_rss_mb"] = round(int(line.split()[1]) / 1024)
        return row

    for found in backend.find_models():  # other benchmarks' models: the baseline is a node without models
        if str(found.get("name", "")).startswith("bench-"):
            backend.delete_model(found["model_id"])
    rows = [snapshot("no model")]
    spec = resolve_model(model_path("minilm"))
    index = "bench-memory-server"
    backend.delete_index(index)
    setup = deploy(backend, spec, DeployRequest(index=index, mode=Mode.SERVER, model_id="bench-memory-model")).setup
    rows.append(snapshot("model deployed"))
    for i in range(50 if quick else 200):
        backend.predict(setup.model_id, [f"a query about protein {i} and the effect of cells on the risk"])
    rows.append(snapshot("after 200 predictions" if not quick else "after 50 predictions"))
    profile = backend._ml("GET", "/profile/models")
    stats = backend._ml("GET", "/stats")
    backend.delete_index(index)
    backend.delete_model(setup.model_id)
    rows.append(snapshot("model deleted"))
    for row in rows:
        row["pid"] = pid
    rows[0]["ml_profile"] = profile
    rows[0]["ml_stats"] = stats
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--model", default="tiny", help="tiny (random 2-layer BERT), minilm or a model directory")
    parser.add_argument("--es-url")
    parser.add_argument("--os-url")
    parser.add_argument("--no-node", action="store_true", help="skip the OpenSearch node memory part")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="memory")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_models import build_tiny_bert

            model_dir = str(build_tiny_bert(Path(tmp) / "tiny-bert"))
        else:
            model_dir = model_path(args.model)
        client_rows = []
        with cluster("elasticsearch", args.es_url, "bench-memory-elasticsearch") as url:
            for size in [int(s) for s in args.sizes.split(",")]:
                command = [sys.executable, __file__, "--child", str(size), "--es-url", url, "--model-dir", model_dir]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                found = json.loads(out.strip().splitlines()[-1])
                found["load"] = load1()
                client_rows.append(found)
                print_table([found], list(found))
    node_rows = []
    if not args.no_node:
        with cluster("opensearch", args.os_url, "bench-memory-opensearch") as url:
            node_rows = node_memory(url, quick=False)
        columns = ["state", "heap_used_mb", "heap_max_mb", "non_heap_mb", "direct_buffers_mb", "process_rss_mb"]
        print_table(node_rows, columns)
    print()
    print_table(client_rows, list(client_rows[0]))
    result = {"model": args.model, "client": client_rows, "node": node_rows, "load_at_end": load1()}
    print(f"\nwritten {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
